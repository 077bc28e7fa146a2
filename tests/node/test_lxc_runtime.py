"""liblxc containers as the LXC node drives them (``node.lxc.runtime``): real containers on a
busybox root filesystem, their state changes read from liblxc's monitor FIFO."""

from __future__ import annotations

import asyncio
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.lxc.rootfs import ImageFormatError, busybox_rootfs, unpack
from node.lxc.runtime import CGROUP_V1_MEMORY, Containers, ContainerSpec, StateChange, lock_dir, monitor_fifo

MEMORY_LIMIT = "memory.limit_in_bytes" if CGROUP_V1_MEMORY.is_dir() else "memory.max"


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lxc-image")
    target = directory / "rootfs"
    unpack(busybox_rootfs(directory / "busybox.tar.gz"), target)
    return target


class Watched:
    """Containers whose state changes land in a queue."""

    def __init__(self, lxcpath: Path) -> None:
        self.changes: asyncio.Queue[StateChange] = asyncio.Queue()
        self.containers = Containers(lxcpath, self.changes.put_nowait)

    async def until(self, name: str, state: str) -> list[str]:
        """The states ``name`` went through until ``state`` (waiting for each from the monitor)."""
        seen: list[str] = []
        async with asyncio.timeout(20):
            while not seen or seen[-1] != state:
                change = await self.changes.get()
                if change.name == name and change.state is not None:
                    seen.append(change.state)
        return seen


def lxc_ls(lxcpath: Path) -> str:
    """What ``lxc-ls`` lists in ``lxcpath``."""
    listed = subprocess.run(["lxc-ls", "-P", str(lxcpath)], capture_output=True, text=True, check=True)
    return listed.stdout.strip()


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    lxcpath = tmp_path / "lxc"
    watched = Watched(lxcpath)
    await watched.containers.open()
    try:
        yield watched
    finally:
        for name in watched.containers.names():
            await watched.containers.destroy(name)
        watched.containers.close()
    assert lxc_ls(lxcpath) == ""
    assert not monitor_fifo(lxcpath).exists() and not monitor_fifo(lxcpath).parent.exists()
    assert not lock_dir(lxcpath).exists() and not lock_dir(lxcpath).parent.exists()


async def console_line(path: Path, marker: str, count: int = 1) -> str:
    """The log once it holds ``count`` lines starting with ``marker`` (read as it grows)."""
    async with asyncio.timeout(20):
        while True:
            text = path.read_text() if path.exists() else ""
            if sum(line.startswith(marker) for line in text.splitlines()) >= count:
                return text
            await asyncio.sleep(0.05)


def spec(rootfs: Path, tmp_path: Path, name: str = "c1") -> ContainerSpec:
    console_log = tmp_path / name / "console.log"
    return ContainerSpec(name=name, hostname=name, rootfs=rootfs, console_log=console_log, memory_mb=96)


async def test_a_container_boots_stops_starts_reboots_and_is_destroyed(
    watched: Watched, rootfs: Path, tmp_path: Path
) -> None:
    containers, c1 = watched.containers, spec(rootfs, tmp_path)
    config = await containers.define(c1)
    assert f"lxc.rootfs.path = overlay:{rootfs}:" in config
    assert containers.names() == ["c1"] and await containers.state("c1") == "STOPPED"
    assert oct(containers.lxcpath.stat().st_mode & 0o777) == "0o700"

    await containers.start("c1")
    assert await watched.until("c1", "RUNNING") == ["STARTING", "RUNNING"]
    assert "AIOSTACK-READY ip=none" in await console_line(c1.console_log, "AIOSTACK-READY")
    assert await containers.running("c1")
    assert await containers.cgroup_value("c1", MEMORY_LIMIT) == str(96 * 1024**2)

    await containers.stop("c1", timeout=10)
    assert await watched.until("c1", "STOPPED") == ["STOPPING", "STOPPED"]
    assert "AIOSTACK-SHUTDOWN" in c1.console_log.read_text()

    await containers.start("c1")
    await watched.until("c1", "RUNNING")
    await containers.reboot("c1")
    assert await watched.until("c1", "RUNNING") == ["STOPPING", "STOPPED", "STARTING", "RUNNING"]
    await console_line(c1.console_log, "AIOSTACK-READY", count=3)

    await containers.destroy("c1")
    assert await watched.until("c1", "STOPPED") == ["STOPPING", "STOPPED"]
    assert containers.names() == [] and not containers.directory("c1").exists()
    await containers.destroy("c1")  # nothing left to destroy: nothing happens


async def test_what_a_container_writes_stays_out_of_its_image(
    watched: Watched, rootfs: Path, tmp_path: Path
) -> None:
    containers = watched.containers
    await containers.define(spec(rootfs, tmp_path))
    log = tmp_path / "c1" / "console.log"
    for boot in (1, 2):
        await containers.start("c1")
        await watched.until("c1", "RUNNING")
        assert f"AIOSTACK-BOOT count={boot}" in await console_line(log, "AIOSTACK-READY", count=boot)
        await containers.kill("c1")
        await watched.until("c1", "STOPPED")
    assert (containers.directory("c1") / "upper" / "var" / "boots").read_text() == "xx\n"
    assert not (rootfs / "var" / "boots").exists()


def test_an_archive_that_is_no_root_filesystem_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(ImageFormatError, match="not a root filesystem tar"):
        unpack(junk, tmp_path / "junk-root")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ImageFormatError, match="no /sbin/init"):
        unpack(empty, tmp_path / "empty-root")
    escaping = tmp_path / "escaping.tar"
    with tarfile.open(escaping, "w") as tar:
        info = tarfile.TarInfo("../outside")
        tar.addfile(info)
    with pytest.raises(ImageFormatError):
        unpack(escaping, tmp_path / "escaping-root")
    assert not (tmp_path / "outside").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.tar", "escaping.tar", "junk"]
