"""The CLI's ``-f table|json|value|yaml`` and ``-c COLUMN``, and how it finds ``--os-cloud``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from aiostack.clouds import CloudNotFound, find_cloud
from aiostack.output import UnknownColumn, print_listing, print_resource

ROWS = [{"ID": "a1", "Name": "web", "Status": "ACTIVE"}, {"ID": "b2", "Name": "db", "Status": "SHUTOFF"}]
COLUMNS = ["ID", "Name", "Status"]


def listed(**options: object) -> str:
    out = io.StringIO()
    print_listing(ROWS, COLUMNS, out=out, **options)  # type: ignore[arg-type]
    return out.getvalue()


def test_a_listing_is_a_table_by_default_and_json_yaml_or_values_on_request() -> None:
    assert listed().splitlines() == [
        "+----+------+---------+",
        "| ID | Name | Status  |",
        "+----+------+---------+",
        "| a1 | web  | ACTIVE  |",
        "| b2 | db   | SHUTOFF |",
        "+----+------+---------+",
    ]
    assert json.loads(listed(format="json")) == ROWS
    assert yaml.safe_load(listed(format="yaml")) == ROWS
    assert listed(format="value") == "a1 web ACTIVE\nb2 db SHUTOFF\n"


def test_columns_chosen_with_c_come_in_the_order_asked() -> None:
    assert listed(format="value", only=["Status", "ID"]) == "ACTIVE a1\nSHUTOFF b2\n"
    assert json.loads(listed(format="json", only=["Name"])) == [{"Name": "web"}, {"Name": "db"}]


def test_an_unknown_column_is_an_error_naming_the_known_ones_and_prints_nothing() -> None:
    out = io.StringIO()
    with pytest.raises(UnknownColumn, match="no column 'Flavor'; the columns are: ID, Name, Status"):
        print_listing(ROWS, COLUMNS, only=["Name", "Flavor"], out=out)
    assert out.getvalue() == ""


def test_a_resource_is_field_value_lines_and_its_structures_stay_readable() -> None:
    addresses = {"default": [{"addr": "10.0.0.5"}]}
    server = {"name": "web", "status": "ACTIVE", "addresses": addresses, "fault": None}
    out = io.StringIO()
    print_resource(server, out=out)
    assert out.getvalue().splitlines() == [
        "+-----------+-------------------------------------+",
        "| Field     | Value                               |",
        "+-----------+-------------------------------------+",
        '| addresses | {"default": [{"addr": "10.0.0.5"}]} |',
        "| fault     |                                     |",
        "| name      | web                                 |",
        "| status    | ACTIVE                              |",
        "+-----------+-------------------------------------+",
    ]
    out = io.StringIO()
    print_resource(server, format="value", only=["status", "name"], out=out)
    assert out.getvalue() == "ACTIVE\nweb\n"
    out = io.StringIO()
    print_resource(server, format="json", out=out)
    assert json.loads(out.getvalue()) == server


def test_os_cloud_is_read_from_a_yaml_clouds_file_named_by_os_client_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  lab:\n"
        "    auth:\n"
        "      auth_url: http://127.0.0.1:5000/identity/v3\n"
        "      username: alice\n"
        "      password: s3cret\n"
        "      project_name: research\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    monkeypatch.chdir(tmp_path / "..")
    cloud = find_cloud("lab", tmp_path / "no-data-dir")
    assert (cloud.url, cloud.username, cloud.password, cloud.project) == (
        "http://127.0.0.1:5000",
        "alice",
        "s3cret",
        "research",
    )
    with pytest.raises(CloudNotFound, match=f"no cloud named 'elsewhere' in {clouds}, "):
        find_cloud("elsewhere", tmp_path / "no-data-dir")
