"""Containers' volumes on the host (``node.lxc.volumes``): a volume, reached as a file (raw or
qcow2) or as an NBD export of the volume host's qemu-storage-daemon, becomes a loop device on a
FUSE export of a qemu-storage-daemon of the node's; what is written to the device lands in the
volume; nothing stays once it is disconnected, even after its daemon was killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.nbd import NbdServer
from api.volume import Connection, VolumeFormat
from node.lxc.volumes import HostVolumes, loops_backed_by, mounted
from runtime.processes import exited, running_pid

MARK = 0x61
OFFSET = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def file_connection(path: Path, volume_format: VolumeFormat) -> Connection:
    return {
        "transport": "file",
        "path": str(path),
        "format": volume_format,
        "host": "",
        "port": 0,
        "export": "",
    }


def image(path: Path, volume_format: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", volume_format, str(path), "16M"], check=True)
    return path


def qemu_io(path: Path, volume_format: str, command: str) -> str:
    done = subprocess.run(
        ["qemu-io", "-r", "-f", volume_format, "-c", command, str(path)], capture_output=True, text=True
    )
    return done.stdout + done.stderr


async def kill(pid: int) -> None:
    """SIGKILL, as a crash would: once it has exited."""
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        while not exited(pid):
            await asyncio.sleep(0.01)


def write_mark(device: str) -> None:
    """512 bytes of ``MARK`` at ``OFFSET``, written as a container writes: the device closed after."""
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([MARK]) * 512, OFFSET)
    finally:
        os.close(fd)


def left_on_host(volumes: HostVolumes) -> list[Any]:
    """Loop devices, daemons and mounts of the attachments' folders, and the folders."""
    folder = volumes.folder("c1", "vdb")
    return [
        *loops_backed_by(folder / "disk"),
        *([pid] if (pid := running_pid(folder / "qsd.pid", b"qemu-storage-daemon")) else []),
        *(["mounted"] if mounted(folder / "disk") else []),
        *volumes.connected(),
    ]


@pytest.fixture
async def nbd(tmp_path: Path) -> AsyncIterator[NbdServer]:
    server = NbdServer(tmp_path / "nbd", "127.0.0.1", free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(daemon=True)


@pytest.mark.parametrize("volume_format", ["raw", "qcow2"])
async def test_a_volume_file_is_a_loop_device_whose_writes_land_in_the_file(
    tmp_path: Path, volume_format: VolumeFormat
) -> None:
    path = image(tmp_path / f"volume.{volume_format}", volume_format)
    volumes = HostVolumes(tmp_path / "lxc-volumes")
    device = await volumes.connect("c1", "vdb", file_connection(path, volume_format))
    [loop] = loops_backed_by(volumes.folder("c1", "vdb") / "disk")
    assert (device.name, device.major, f"/dev/loop{device.minor}") == ("vdb", 7, loop)
    assert await volumes.connect("c1", "vdb", file_connection(path, volume_format)) == device  # the same
    assert volumes.connected() == [("c1", "vdb")] and not volumes.busy("c1", "vdb")
    write_mark(loop)
    await volumes.disconnect("c1", "vdb")
    assert left_on_host(volumes) == [] and not volumes.directory.exists()
    assert "read 512/512" in qemu_io(path, volume_format, f"read -P {MARK} {OFFSET} 512")


async def test_an_nbd_export_is_a_loop_device_and_a_read_only_one_refuses_writes(
    tmp_path: Path, nbd: NbdServer
) -> None:
    path = image(tmp_path / "volume.qcow2", "qcow2")
    volumes = HostVolumes(tmp_path / "lxc-volumes")
    await nbd.export("attachment-1", str(path), "qcow2")
    connection: Connection = {
        "transport": "nbd", "path": "", "format": "raw", "host": nbd.address, "port": nbd.port,
        "export": "attachment-1",
    }  # fmt: skip
    device = await volumes.connect("c1", "vdb", connection)
    write_mark(f"/dev/loop{device.minor}")
    await volumes.disconnect("c1", "vdb")
    await nbd.unexport("attachment-1")
    assert left_on_host(volumes) == []
    assert "read 512/512" in qemu_io(path, "qcow2", f"read -P {MARK} {OFFSET} 512")

    await nbd.export("attachment-2", str(path), "qcow2", writable=False)
    readonly = await volumes.connect("c1", "vdb", {**connection, "export": "attachment-2", "readonly": True})
    assert readonly.readonly and readonly.rule.endswith(" rm")
    with pytest.raises(PermissionError):
        write_mark(f"/dev/loop{readonly.minor}")
    await volumes.disconnect("c1", "vdb")
    await nbd.unexport("attachment-2")
    assert left_on_host(volumes) == []


async def test_what_a_killed_daemon_left_is_removed_and_its_volume_connected_again(tmp_path: Path) -> None:
    """The node's sweep after a crash: a dead daemon's FUSE mount and loop device go; connecting
    again makes a new daemon."""
    path = image(tmp_path / "volume.raw", "raw")
    volumes = HostVolumes(tmp_path / "lxc-volumes")
    await volumes.connect("c1", "vdb", file_connection(path, "raw"))
    pid = running_pid(volumes.folder("c1", "vdb") / "qsd.pid", b"qemu-storage-daemon")
    assert pid is not None
    await kill(pid)
    device = await volumes.connect("c1", "vdb", file_connection(path, "raw"))  # made again
    assert running_pid(volumes.folder("c1", "vdb") / "qsd.pid", b"qemu-storage-daemon") not in (None, pid)
    write_mark(f"/dev/loop{device.minor}")
    assert "read 512/512" in qemu_io(path, "raw", f"read -P {MARK} {OFFSET} 512")
    pid = running_pid(volumes.folder("c1", "vdb") / "qsd.pid", b"qemu-storage-daemon")
    assert pid is not None
    await kill(pid)
    await volumes.disconnect("c1", "vdb")
    assert left_on_host(volumes) == []
