"""OpenStack's own clients, unmodified, against a real `aiostack up`: openstacksdk and the `openstack` CLI.

Both read the ``clouds.yaml`` that `aiostack up` writes into its data directory, as they
would DevStack's; the CLI runs as a subprocess, and each command's exit status and output
are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openstack
import pytest
import pytest_asyncio

from deploy.launch import RunningCloud, aiostack_up

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-pw-clients", "AIOSTACK_DEMO_PASSWORD": "demo-pw-clients"}
OPENSTACK = str(Path(sys.executable).with_name("openstack"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cloud(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningCloud]:
    async with aiostack_up(tmp_path_factory.mktemp("clients"), env=PASSWORDS) as running:
        yield running


def openstack_cli(cloud: RunningCloud, *args: str, user: str = "demo") -> str:
    """``openstack ARGS`` with OS_CLOUD=aiostack-USER from the data directory's clouds.yaml."""
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(cloud.data_dir / "clouds.yaml"),
        "OS_CLOUD": f"aiostack-{user}",
    }
    done = subprocess.run([OPENSTACK, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"openstack {' '.join(args)} -> {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def cli_json(cloud: RunningCloud, *args: str, user: str = "demo") -> Any:
    return json.loads(openstack_cli(cloud, *args, "-f", "json", user=user))


def test_up_writes_clouds_yaml_and_openrc_that_work_at_once(cloud: RunningCloud) -> None:
    clouds = json.loads((cloud.data_dir / "clouds.yaml").read_text())["clouds"]
    assert clouds["aiostack-admin"]["auth"]["auth_url"] == f"{cloud.gateway_url}/identity/v3"
    assert clouds["aiostack-demo"]["auth"]["password"] == PASSWORDS["AIOSTACK_DEMO_PASSWORD"]
    assert (cloud.data_dir / "clouds.yaml").stat().st_mode & 0o077 == 0
    script = f"source {cloud.data_dir / 'openrc'} demo && {OPENSTACK} token issue -f value -c project_id"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and len(done.stdout.strip()) == 32, done.stderr


def test_openstacksdk_drives_images_networks_servers_and_volumes(
    cloud: RunningCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.data_dir / "clouds.yaml"))
    conn = openstack.connect(cloud="aiostack-demo")
    image_file = tmp_path / "disk.raw"
    image_file.write_bytes(os.urandom(1 << 20))
    image = conn.create_image(
        "sdk-image", filename=str(image_file), disk_format="raw", container_format="bare", wait=True
    )
    assert image.status == "active" and image.size == 1 << 20
    network = conn.network.create_network(name="sdk-net")
    subnet = conn.network.create_subnet(
        network_id=network.id, ip_version=4, cidr="10.60.0.0/24", name="sdk-sub"
    )
    assert subnet.gateway_ip == "10.60.0.1"
    server = conn.create_server(
        "sdk-vm", image=image.id, flavor="m1.tiny", network=network.id, wait=True, auto_ip=False, timeout=60
    )
    assert server.status == "ACTIVE"
    assert server.addresses["sdk-net"][0]["addr"].startswith("10.60.0.")
    assert "sdk-vm" in [s.name for s in conn.compute.servers()]
    server = conn.compute.get_server(server.id)
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", wait=30)
    conn.compute.start_server(server)
    conn.compute.wait_for_server(server, status="ACTIVE", wait=30)
    conn.compute.reboot_server(server, "SOFT")
    conn.compute.wait_for_server(server, status="ACTIVE", wait=30)
    volume = conn.block_storage.create_volume(size=1, name="sdk-vol")
    conn.block_storage.wait_for_status(volume, "available", wait=30)
    attachment = conn.compute.create_volume_attachment(server, volume=volume)
    assert attachment.device == "/dev/vdb"
    volume = conn.block_storage.wait_for_status(volume, "in-use", wait=30)
    assert [a["server_id"] for a in volume.attachments] == [server.id]
    assert [v["id"] for v in conn.compute.get_server(server.id).attached_volumes] == [volume.id]
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=30)
    conn.block_storage.wait_for_status(volume, "available", wait=30)


@pytest.mark.full_size
def test_the_openstack_cli_runs_a_whole_day(cloud: RunningCloud, tmp_path: Path) -> None:
    token = cli_json(cloud, "token", "issue")
    assert token["id"] and token["project_id"] and token["expires"]
    services = {entry["Type"] for entry in cli_json(cloud, "catalog", "list")}
    assert {"identity", "compute", "image", "network", "block-storage", "volumev3"} <= services
    image_file = tmp_path / "cli.raw"
    image_file.write_bytes(os.urandom(512 * 1024))
    image = cli_json(
        cloud, "image", "create", "--file", str(image_file), "--disk-format", "raw",
        "--container-format", "bare", "cli-image",
    )  # fmt: skip
    assert image["status"] == "active" and image["size"] == 512 * 1024
    assert "cli-image" in {i["Name"] for i in cli_json(cloud, "image", "list")}
    assert {"m1.tiny", "m1.small"} <= {f["Name"] for f in cli_json(cloud, "flavor", "list")}
    network = cli_json(cloud, "network", "create", "cli-net")
    subnet = cli_json(
        cloud, "subnet", "create", "--network", "cli-net", "--subnet-range", "10.70.0.0/24", "cli-sub"
    )
    assert subnet["network_id"] == network["id"] and subnet["cidr"] == "10.70.0.0/24"
    server = cli_json(
        cloud, "server", "create", "--image", "cli-image", "--flavor", "m1.tiny", "--network", "cli-net",
        "--wait", "cli-vm",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    listed = {s["Name"]: s for s in cli_json(cloud, "server", "list")}
    assert listed["cli-vm"]["Status"] == "ACTIVE"
    assert listed["cli-vm"]["Networks"]["cli-net"][0].startswith("10.70.0.")
    shown = cli_json(cloud, "server", "show", "cli-vm")
    assert shown["id"] == server["id"] and shown["flavor"].startswith("m1.tiny")
    volume = cli_json(cloud, "volume", "create", "--size", "1", "cli-vol")
    assert volume["status"] in ("creating", "available") and volume["size"] == 1
    openstack_cli(cloud, "server", "add", "volume", "cli-vm", "cli-vol")
    volumes = {v["Name"]: v for v in cli_json(cloud, "volume", "list")}
    assert volumes["cli-vol"]["Status"] == "in-use"
    assert [a["server_id"] for a in volumes["cli-vol"]["Attached to"]] == [server["id"]]
    openstack_cli(cloud, "server", "stop", "cli-vm")
    openstack_cli(cloud, "server", "delete", "--wait", "cli-vm")
    assert "cli-vm" not in {s["Name"] for s in cli_json(cloud, "server", "list")}
    assert {v["Name"]: v for v in cli_json(cloud, "volume", "list")}["cli-vol"]["Status"] == "available"


@pytest.mark.full_size
def test_the_openstack_cli_boots_a_server_from_a_volume_made_from_an_image(cloud: RunningCloud) -> None:
    volume = cli_json(cloud, "volume", "create", "--image", "aiostack-tiny", "--size", "1", "cli-root")
    assert volume["size"] == 1
    for _ in range(100):
        shown = cli_json(cloud, "volume", "show", "cli-root")
        if shown["status"] == "available":
            break
        time.sleep(0.1)
    assert shown["bootable"] in (True, "true")  # as the CLI's version prints it
    assert shown["volume_image_metadata"]["image_name"] == "aiostack-tiny"
    server = cli_json(
        cloud, "server", "create", "--volume", "cli-root", "--flavor", "m1.tiny", "--network", "default",
        "--wait", "cli-bfv",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    shown = cli_json(cloud, "server", "show", "cli-bfv")
    assert shown["volumes_attached"][0]["id"] == volume["id"]
    assert shown["image"] == "N/A (booted from volume)", shown["image"]
    attached = cli_json(cloud, "volume", "show", "cli-root")
    assert attached["status"] == "in-use" and attached["attachments"][0]["device"] == "/dev/vda"
    openstack_cli(cloud, "server", "delete", "--wait", "cli-bfv")
    assert cli_json(cloud, "volume", "show", "cli-root")["status"] == "available"
    openstack_cli(cloud, "volume", "delete", "cli-root")


@pytest.mark.full_size
def test_the_openstack_cli_boots_a_server_in_a_security_group_and_adds_and_removes_groups(
    cloud: RunningCloud,
) -> None:
    web = cli_json(cloud, "security", "group", "create", "cli-web")
    server = cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--network", "default",
        "--security-group", "cli-web", "--wait", "cli-sg-vm",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"

    def groups() -> tuple[list[str], list[str]]:
        """The groups ``server show`` lists, and the names of those of the server's port."""
        shown = cli_json(cloud, "server", "show", "cli-sg-vm")
        [port] = cli_json(cloud, "port", "list", "--server", "cli-sg-vm", "--long")
        names = {group["ID"]: group["Name"] for group in cli_json(cloud, "security", "group", "list")}
        listed = sorted(group["name"] for group in shown["security_groups"])
        return listed, sorted(names[group_id] for group_id in port["Security Groups"])

    assert groups() == (["cli-web"], ["cli-web"])
    openstack_cli(cloud, "server", "add", "security", "group", "cli-sg-vm", "default")
    assert groups() == (["cli-web", "default"], ["cli-web", "default"])
    openstack_cli(cloud, "server", "remove", "security", "group", "cli-sg-vm", web["id"])
    assert groups() == (["default"], ["default"])
    openstack_cli(cloud, "server", "delete", "--wait", "cli-sg-vm")
    openstack_cli(cloud, "security", "group", "delete", "cli-web")


def test_the_openstack_cli_prints_the_services_own_error_messages(cloud: RunningCloud) -> None:
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(cloud.data_dir / "clouds.yaml"),
        "OS_CLOUD": "aiostack-demo",
    }
    done = subprocess.run(
        [OPENSTACK, "server", "show", "no-such-server"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "No Server found for no-such-server" in done.stderr
    openstack_cli(cloud, "network", "create", "err-net")
    done = subprocess.run(
        [OPENSTACK, "subnet", "create", "--network", "err-net", "--subnet-range", "not-a-cidr", "bad"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "not-a-cidr" in done.stderr


def test_the_openstack_cli_describes_a_server_dumps_it_and_lists_its_events_once_deleted(
    cloud: RunningCloud,
) -> None:
    """Compute 2.17 (``server dump create``), 2.19 (``--description``), 2.21 (a deleted server's events)."""
    at_219 = ("--os-compute-api-version", "2.19")
    server = cli_json(
        cloud, *at_219, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny",
        "--network", "default", "--description", "web", "--wait", "described",
    )  # fmt: skip
    assert server["description"] == "web"
    openstack_cli(cloud, *at_219, "server", "set", "--description", "db", "described")
    assert cli_json(cloud, *at_219, "server", "show", "described")["description"] == "db"
    openstack_cli(cloud, "--os-compute-api-version", "2.17", "server", "dump", "create", "described")
    openstack_cli(cloud, "server", "delete", "--wait", "described")
    events = cli_json(cloud, "--os-compute-api-version", "2.21", "server", "event", "list", server["id"])
    assert [e["Action"] for e in events] == ["delete", "trigger_crash_dump", "create"]


def test_openstack_port_create_works_and_extensions_are_listed(cloud: RunningCloud) -> None:
    """`openstack port create` asks Neutron's /extensions first (it answered 404: issue 13)."""
    network = cli_json(cloud, "network", "create", "port-net")
    cli_json(cloud, "subnet", "create", "--network", "port-net", "--subnet-range", "10.80.0.0/24", "port-sub")
    port = cli_json(cloud, "port", "create", "--network", "port-net", "--description", "by the CLI", "p1")
    assert port["network_id"] == network["id"] and port["description"] == "by the CLI"
    assert port["fixed_ips"][0]["ip_address"].startswith("10.80.0.")
    aliases = {extension["Alias"] for extension in cli_json(cloud, "extension", "list", "--network")}
    assert {"standard-attr-description", "standard-attr-revisions", "net-mtu", "project-id"} <= aliases
    assert "p1" in {p["Name"] for p in cli_json(cloud, "port", "list", "--network", "port-net")}
    openstack_cli(cloud, "port", "delete", "p1")


@pytest.mark.full_size
def test_the_openstack_cli_routes_a_subnet_to_an_external_network_and_floats_an_ip(
    cloud: RunningCloud,
) -> None:
    external = cli_json(cloud, "network", "create", "--external", "cli-public", user="admin")
    assert external["router:external"] is True
    cli_json(
        cloud, "subnet", "create", "--network", "cli-public", "--subnet-range", "203.0.113.0/24", "--no-dhcp",
        "cli-public-sub", user="admin",
    )  # fmt: skip
    cli_json(cloud, "network", "create", "cli-inside")
    subnet = cli_json(
        cloud, "subnet", "create", "--network", "cli-inside", "--subnet-range", "10.81.0.0/24", "in"
    )
    router = cli_json(cloud, "router", "create", "cli-router")
    openstack_cli(cloud, "router", "set", "--external-gateway", "cli-public", "cli-router")
    openstack_cli(cloud, "router", "add", "subnet", "cli-router", "in")
    shown = cli_json(cloud, "router", "show", "cli-router")
    assert shown["external_gateway_info"]["network_id"] == external["id"]
    interfaces = cli_json(cloud, "port", "list", "--router", "cli-router")
    assert [port["Fixed IP Addresses"][0]["ip_address"] for port in interfaces] == ["10.81.0.1"]
    port = cli_json(cloud, "port", "create", "--network", "cli-inside", "cli-port")
    floating = cli_json(cloud, "floating", "ip", "create", "cli-public")
    assert floating["floating_ip_address"].startswith("203.0.113.") and floating["status"] == "DOWN"
    openstack_cli(cloud, "floating", "ip", "set", "--port", "cli-port", floating["id"])
    associated = cli_json(cloud, "floating", "ip", "show", floating["id"])
    assert (associated["port_id"], associated["router_id"]) == (port["id"], router["id"])
    assert associated["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    openstack_cli(cloud, "floating", "ip", "unset", "--port", floating["id"])
    server = cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny",
        "--network", "cli-inside", "--wait", "cli-floated",
    )  # fmt: skip
    address = floating["floating_ip_address"]
    openstack_cli(cloud, "server", "add", "floating", "ip", "cli-floated", address)
    [server_port] = cli_json(cloud, "port", "list", "--server", server["id"])
    assert cli_json(cloud, "floating", "ip", "show", floating["id"])["port_id"] == server_port["ID"]
    openstack_cli(cloud, "server", "remove", "floating", "ip", "cli-floated", address)
    assert cli_json(cloud, "floating", "ip", "show", floating["id"])["port_id"] is None
    openstack_cli(cloud, "server", "delete", "--wait", "cli-floated")
    openstack_cli(cloud, "floating", "ip", "delete", floating["id"])
    openstack_cli(cloud, "router", "remove", "subnet", "cli-router", "in")
    openstack_cli(cloud, "router", "delete", "cli-router")
    openstack_cli(cloud, "port", "delete", "cli-port")
    openstack_cli(cloud, "subnet", "delete", subnet["id"])
    assert "cli-router" not in {r["Name"] for r in cli_json(cloud, "router", "list")}


@pytest.mark.full_size
def test_another_projects_community_image_does_not_shadow_the_default_image(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    """A member of another project publishes a community image named ``aiostack-tiny``: demo
    still finds the default image by name and boots from it (issue 13: "More than one Image
    exists" everywhere); the community image is listed only when asked for."""
    openstack_cli(cloud, "project", "create", "mallory", user="admin")
    openstack_cli(
        cloud, "user", "create", "--project", "mallory", "--password", "mallory-pw", "mallory", user="admin"
    )
    openstack_cli(cloud, "role", "add", "--project", "mallory", "--user", "mallory", "member", user="admin")
    env = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    env |= {
        "OS_AUTH_URL": f"{cloud.gateway_url}/identity/v3",
        "OS_USERNAME": "mallory",
        "OS_PASSWORD": "mallory-pw",
        "OS_PROJECT_NAME": "mallory",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_IDENTITY_API_VERSION": "3",
    }
    disk = tmp_path / "shadow.raw"
    disk.write_bytes(os.urandom(64 * 1024))
    done = subprocess.run(
        [
            OPENSTACK, "image", "create", "--community", "--file", str(disk), "--disk-format", "raw",
            "--container-format", "bare", "-f", "json", "aiostack-tiny",
        ],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shadow = json.loads(done.stdout)
    assert shadow["visibility"] == "community"
    tiny = cli_json(cloud, "image", "show", "aiostack-tiny")
    assert tiny["id"] != shadow["id"] and tiny["visibility"] == "public"
    assert shadow["id"] not in {i["ID"] for i in cli_json(cloud, "image", "list")}
    assert shadow["id"] in {i["ID"] for i in cli_json(cloud, "image", "list", "--community")}
    server = cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--network", "default",
        "--wait", "not-shadowed",
    )  # fmt: skip
    assert server["status"] == "ACTIVE" and tiny["id"] in server["image"]
    openstack_cli(cloud, "server", "delete", "--wait", "not-shadowed")


def test_the_openstack_cli_lists_and_disables_compute_services_and_shows_hypervisors(
    cloud: RunningCloud,
) -> None:
    services = cli_json(cloud, "compute", "service", "list", user="admin")
    assert [(s["Binary"], s["Host"], s["Status"], s["State"]) for s in services] == [
        ("nova-compute", "node-1", "enabled", "up")
    ]
    openstack_cli(
        cloud, "compute", "service", "set", "--disable", "--disable-reason", "maintenance",
        "node-1", "nova-compute", user="admin",
    )  # fmt: skip
    [service] = cli_json(cloud, "compute", "service", "list", "--long", user="admin")
    assert (service["Status"], service["Disabled Reason"]) == ("disabled", "maintenance")
    openstack_cli(cloud, "compute", "service", "set", "--enable", "node-1", "nova-compute", user="admin")
    [hypervisor] = cli_json(cloud, "hypervisor", "list", user="admin")
    assert (hypervisor["Hypervisor Hostname"], hypervisor["State"]) == ("node-1", "up")
    shown = cli_json(cloud, "hypervisor", "show", "node-1", user="admin")
    assert shown["vcpus"] > 0 and shown["status"] == "enabled"


def aiostack_cli(cloud: RunningCloud, *args: str) -> str:
    """``aiostack ARGS`` as the demo user of the cloud's data directory."""
    login = ("--data-dir", str(cloud.data_dir), "--username", "demo", "--project", "demo")
    command = [
        sys.executable,
        "-m",
        "aiostack.cli",
        args[0],
        *login,
        "--password",
        PASSWORDS["AIOSTACK_DEMO_PASSWORD"],
    ]
    done = subprocess.run([*command, *args[1:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"aiostack {' '.join(args)} -> {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def until_status(cloud: RunningCloud, server: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (shown := cli_json(cloud, "server", "show", server))["status"] != status:
        assert time.monotonic() < deadline, f"{server} is {shown['status']}, not {status}"
        time.sleep(0.2)
    return dict(shown)


@pytest.mark.full_size
def test_the_openstack_cli_resizes_a_server_and_confirms_and_reverts(cloud: RunningCloud) -> None:
    cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--wait", "resize-vm"
    )
    openstack_cli(cloud, "server", "resize", "--flavor", "m1.small", "--wait", "resize-vm")
    shown = cli_json(cloud, "server", "show", "resize-vm")
    assert shown["status"] == "VERIFY_RESIZE" and shown["flavor"].startswith("m1.small"), shown
    openstack_cli(cloud, "server", "resize", "confirm", "resize-vm")
    assert until_status(cloud, "resize-vm", "ACTIVE")["flavor"].startswith("m1.small")

    openstack_cli(cloud, "server", "resize", "--flavor", "m1.medium", "--wait", "resize-vm")
    assert cli_json(cloud, "server", "show", "resize-vm")["flavor"].startswith("m1.medium")
    openstack_cli(cloud, "server", "resize", "revert", "resize-vm")
    assert until_status(cloud, "resize-vm", "ACTIVE")["flavor"].startswith("m1.small")

    said = aiostack_cli(cloud, "server", "resize", "resize-vm", "--flavor", "m1.medium", "--wait")
    assert said.strip() == "resize-vm: VERIFY_RESIZE (flavor 3)"
    said = aiostack_cli(cloud, "server", "resize", "revert", "resize-vm", "--wait")
    assert said.strip() == "resize-vm: ACTIVE (flavor 2)"
    aiostack_cli(cloud, "server", "resize", "resize-vm", "--flavor", "m1.medium", "--wait")
    said = aiostack_cli(cloud, "server", "resize", "confirm", "resize-vm")
    assert said.strip() == "resize-vm: ACTIVE (flavor 3)"
    openstack_cli(cloud, "server", "delete", "--wait", "resize-vm")


def test_the_openstack_cli_adds_and_removes_a_servers_port_and_network(cloud: RunningCloud) -> None:
    network = cli_json(cloud, "network", "create", "cli-second")
    openstack_cli(
        cloud, "subnet", "create", "--network", "cli-second", "--subnet-range", "10.66.0.0/24", "cli-sub"
    )
    port = cli_json(cloud, "port", "create", "--network", "cli-second", "cli-nic")
    cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--network", "default",
        "--wait", "nic-vm",
    )  # fmt: skip

    def ports() -> list[str]:
        return sorted(row["Name"] for row in cli_json(cloud, "port", "list", "--server", "nic-vm"))

    openstack_cli(cloud, "server", "add", "port", "nic-vm", "cli-nic")
    openstack_cli(cloud, "server", "add", "network", "nic-vm", "cli-second")
    assert ports() == ["", "", "cli-nic"]
    openstack_cli(cloud, "server", "remove", "port", "nic-vm", "cli-nic")
    openstack_cli(cloud, "server", "remove", "network", "nic-vm", network["id"])
    assert ports() == [""]  # the port Nova made on the network is gone with it; the user's is kept:
    [kept] = cli_json(cloud, "port", "list", "--network", "cli-second", "--long")
    assert kept["ID"] == port["id"] and kept["Status"] == "DOWN"
    openstack_cli(cloud, "server", "delete", "--wait", "nic-vm")


@pytest.mark.full_size
def test_the_openstack_cli_lists_a_servers_events_and_shows_one(cloud: RunningCloud) -> None:
    server = cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--network", "default",
        "--wait", "evented",
    )  # fmt: skip
    openstack_cli(cloud, "server", "stop", "evented")
    events = cli_json(cloud, "server", "event", "list", "evented")
    assert [(e["Action"], e["Server ID"]) for e in events] == [
        ("stop", server["id"]),
        ("create", server["id"]),
    ]
    created = events[1]
    assert created["Request ID"].startswith("req-")
    shown = cli_json(cloud, "server", "event", "show", "evented", created["Request ID"])
    assert (shown["action"], shown["request_id"]) == ("create", created["Request ID"])
    assert "schedule" in {step["event"] for step in shown["events"]}
    as_admin = cli_json(cloud, "server", "event", "show", server["id"], created["Request ID"], user="admin")
    assert all("traceback" in step for step in as_admin["events"])
    openstack_cli(cloud, "server", "delete", "--wait", "evented")


@pytest.mark.full_size
def test_the_openstack_cli_shows_usage_of_live_and_deleted_servers(cloud: RunningCloud) -> None:
    for name in ("used-kept", "used-gone"):
        openstack_cli(
            cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--network",
            "default", "--wait", name,
        )  # fmt: skip
    openstack_cli(cloud, "server", "delete", "--wait", "used-gone")
    demo = cli_json(cloud, "token", "issue")["project_id"]
    mine = cli_json(cloud, "usage", "show")
    assert mine["Project"] == demo
    states = {server["name"]: server["state"] for server in mine["Servers"]}
    assert (states["used-kept"], states["used-gone"]) == ("active", "terminated")
    assert float(mine["CPU Hours"]) > 0 and float(mine["RAM MB-Hours"]) > 0
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(cloud.data_dir / "clouds.yaml")}
    done = subprocess.run(
        [OPENSTACK, "--os-cloud", "aiostack-demo", "usage", "list"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "os-simple-tenant-usage:list" in done.stderr
    listed = {row["Project"]: row for row in cli_json(cloud, "usage", "list", user="admin")}
    assert len(listed[demo]["Servers"]) == len(mine["Servers"])
    assert float(listed[demo]["CPU Hours"]) > 0
    openstack_cli(cloud, "server", "delete", "--wait", "used-kept")


@pytest.mark.full_size
def test_the_openstack_cli_evacuate_reaches_nova_s_checks(cloud: RunningCloud) -> None:
    """`openstack server evacuate` as the admin: this cloud's one host is up, which Nova refuses
    with 400 and says so; a member is not allowed to (403), with the openstack CLI or `aiostack
    server evacuate`. (The evacuate itself, a host down, is tests/test_evacuate.py's.)"""
    cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--wait", "evac-vm"
    )
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(cloud.data_dir / "clouds.yaml"),
        "OS_CLOUD": "aiostack-admin",
    }
    server_id = cli_json(cloud, "server", "show", "evac-vm")["id"]
    host = cli_json(cloud, "server", "show", server_id, user="admin")["OS-EXT-SRV-ATTR:host"]
    done = subprocess.run(
        [OPENSTACK, "server", "evacuate", server_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and f"Compute service of {host} is still in use." in done.stderr, done.stderr
    done = subprocess.run(
        [OPENSTACK, "server", "evacuate", "evac-vm"],
        env={**env, "OS_CLOUD": "aiostack-demo"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Policy doesn't allow" in done.stderr, done.stderr
    login = ("--data-dir", str(cloud.data_dir), "--username", "demo", "--project", "demo")
    password = ("--password", PASSWORDS["AIOSTACK_DEMO_PASSWORD"])
    done = subprocess.run(
        [sys.executable, "-m", "aiostack.cli", "server", *login, *password, "evacuate", "evac-vm", "--wait"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Policy doesn't allow" in done.stderr, done.stderr
    assert cli_json(cloud, "server", "show", "evac-vm")["status"] == "ACTIVE"
    openstack_cli(cloud, "server", "delete", "--wait", "evac-vm")


@pytest.mark.full_size
def test_the_openstack_cli_shelves_and_unshelves_a_server_keeping_its_address(cloud: RunningCloud) -> None:
    server = cli_json(
        cloud, "server", "create", "--image", "aiostack-tiny", "--flavor", "m1.tiny", "--wait", "shelf-vm"
    )
    address = cli_json(cloud, "server", "show", "shelf-vm")["addresses"]
    openstack_cli(cloud, "server", "shelve", "--wait", "shelf-vm")
    shown = cli_json(cloud, "server", "show", "shelf-vm")
    assert shown["status"] == "SHELVED_OFFLOADED", shown  # `aiostack up` offloads at once, as Nova
    images = cli_json(cloud, "image", "list", "--name", "shelf-vm-shelved")
    assert [image["Status"] for image in images] == ["active"]
    openstack_cli(cloud, "server", "unshelve", "--wait", "shelf-vm")
    shown = cli_json(cloud, "server", "show", "shelf-vm")
    assert (shown["status"], shown["id"], shown["addresses"]) == ("ACTIVE", server["id"], address)
    assert cli_json(cloud, "image", "list", "--name", "shelf-vm-shelved") == []
    said = aiostack_cli(cloud, "server", "shelve", "shelf-vm", "--wait")
    assert said.strip() == "shelf-vm: SHELVED_OFFLOADED (host -)"
    openstack_cli(cloud, "server", "delete", "--wait", "shelf-vm")
    assert cli_json(cloud, "image", "list", "--name", "shelf-vm-shelved") == []
