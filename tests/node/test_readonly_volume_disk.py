"""A volume attached read-only is a read-only disk: its connection's ``readonly`` reaches the
domain XML as ``<readonly/>``, for a file and for an NBD export alike."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from api.volume import Connection
from node.domain import disk_xml
from node.volumes import volume_disk

FILE: Connection = {
    "transport": "file",
    "path": "/volumes/v-1.raw",
    "format": "raw",
    "host": "",
    "port": 0,
    "export": "",
}
NBD: Connection = {
    **FILE,
    "transport": "nbd",
    "path": "",
    "host": "10.0.0.1",
    "port": 10809,
    "export": "e" + "0" * 24,
}


@pytest.mark.parametrize("connection", [FILE, NBD])
@pytest.mark.parametrize("readonly", [True, False])
def test_a_readonly_connection_makes_a_readonly_disk(connection: Connection, readonly: bool) -> None:
    disk = ET.fromstring(disk_xml(volume_disk({**connection, "readonly": readonly}, "vdb", "v-1")))
    assert (disk.find("readonly") is not None) is readonly


def test_a_connection_without_the_flag_is_read_write() -> None:
    """As a volume service before version 4 sends it."""
    assert ET.fromstring(disk_xml(volume_disk(FILE, "vdb", "v-1"))).find("readonly") is None
