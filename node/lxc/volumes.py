"""Containers' volumes on the host: each attachment a loop device on a FUSE export of the volume.

A container sees a volume as a block device, ``/dev/vdb`` as a QEMU guest would (and as Nova's
libvirt-lxc gives one: the volume connected on the host, its block device passed in). The host
needs a block device of the volume, and the kernel offers two ways: an NBD client (the ``nbd``
module, which ``qemu-nbd --connect`` uses too) or a loop device on a file. Where no ``nbd``
module is (this project's Debian hosts run kernels without it, and nothing can load one), the
loop device is what works, on a file that is the volume: a FUSE export of it by a
qemu-storage-daemon of the node's, one per attachment. That daemon is the volume's client as a
QEMU guest's is: of the attachment's NBD export on the volume host (``transport`` ``nbd``), or of
its file in its format (``file``: raw or qcow2 decoded alike). Writes reach the volume as they are
made (a loop device's cache is written out when it is last closed, a FUSE file's is written
through, and the daemon sends each write and flush on).

An attachment's files are in ``<directory>/<instance>.<device>/``: ``disk`` (the FUSE export's
mount point), ``qsd.pid``. The daemon outlives the node (daemonized, like the volume host's), so
containers keep their volumes across a node's restart; the loop device is found again by its
backing file (``/sys/block/loop*/loop/backing_file``). ``disconnect`` removes all three (the loop
device, the daemon, its mount), and is what the node's sweep does to an attachment no container
of its has any longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
from pathlib import Path

from api.volume import Connection
from node.lxc.runtime import BlockDevice
from runtime.processes import ToolFailed, run_tool, running_pid, stop_pid

QSD = "qemu-storage-daemon"
NODE = "volume"
SYS_BLOCK = Path("/sys/block")


class VolumeDeviceError(ToolFailed):
    """The volume could not be made a block device on this host (the tool's words say why)."""


_run = functools.partial(run_tool, error=VolumeDeviceError)
"""A tool run to its end: :raises VolumeDeviceError: it failed."""


class DeviceBusy(VolumeDeviceError):
    """The volume's block device is held (a filesystem on it is mounted in the container)."""


def blockdev(connection: Connection) -> dict[str, object]:
    """qemu-storage-daemon's block node of the volume: the NBD export, or the file in its format."""
    readonly = connection.get("readonly", False)
    if connection["transport"] == "nbd":
        server = {"type": "inet", "host": connection["host"], "port": str(connection["port"])}
        return {
            "driver": "nbd",
            "node-name": NODE,
            "server": server,
            "export": connection["export"],
            "read-only": readonly,
        }
    return {
        "driver": connection["format"],
        "node-name": NODE,
        "read-only": readonly,
        "file": {"driver": "file", "filename": connection["path"]},
    }


def loops_backed_by(path: Path) -> list[str]:
    """The loop devices (``/dev/loopN``) whose backing file is ``path``."""
    found = []
    for backing in SYS_BLOCK.glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip() == str(path):
                found.append(f"/dev/{backing.parent.parent.name}")
    return sorted(found)


def held(loop: str) -> bool:
    """Whether the block device is held exclusively (a filesystem on it is mounted)."""
    try:
        fd = os.open(loop, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    os.close(fd)
    return False


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point on this host (read from the mount table: a dead FUSE
    mount cannot be stat-ed)."""
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts if line.strip())


class HostVolumes:
    """The block devices of the volumes attached to this node's containers (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder(self, instance_uuid: str, name: str) -> Path:
        return self.directory / f"{instance_uuid}.{name}"

    def connected(self) -> list[tuple[str, str]]:
        """Every attachment with files on this host: ``(instance, device name)``."""
        if not self.directory.exists():
            return []
        return sorted(
            (uuid, name) for uuid, _, name in (path.name.rpartition(".") for path in self.directory.iterdir())
        )

    def device(self, instance_uuid: str, name: str, *, readonly: bool = False) -> BlockDevice | None:
        """The attachment's block device, if its loop device is there."""
        loops = loops_backed_by(self.folder(instance_uuid, name) / "disk")
        if not loops:
            return None
        rdev = os.stat(loops[0]).st_rdev
        return BlockDevice(name, os.major(rdev), os.minor(rdev), readonly)

    async def connect(self, instance_uuid: str, name: str, connection: Connection) -> BlockDevice:
        """The volume as a block device of this host (made, or the one there is).

        :raises VolumeDeviceError: the daemon or the loop device could not be made (what was
            made is removed).
        """
        readonly = connection.get("readonly", False)
        folder = self.folder(instance_uuid, name)
        disk, pidfile = folder / "disk", folder / "qsd.pid"
        try:
            if running_pid(pidfile, QSD.encode()) is None:  # none yet, or it died: all made anew
                await self.disconnect(instance_uuid, name)
                await self._serve(folder, connection)
            if not loops_backed_by(disk):
                await _run("losetup", "--find", *(["--read-only"] if readonly else []), str(disk))
            device = self.device(instance_uuid, name, readonly=readonly)
            if device is None:
                raise VolumeDeviceError(f"no loop device on {disk}")
        except (VolumeDeviceError, OSError) as exc:
            with contextlib.suppress(VolumeDeviceError, OSError):
                await self.disconnect(instance_uuid, name)
            raise VolumeDeviceError(f"volume not connected on this host: {exc}") from None
        return device

    async def _serve(self, folder: Path, connection: Connection) -> None:
        """Start the attachment's daemon: the volume as the FUSE file ``disk``."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / "disk").touch(mode=0o600)
        export = {
            "type": "fuse",
            "id": NODE,
            "node-name": NODE,
            "mountpoint": str(folder / "disk"),
            "writable": not connection.get("readonly", False),
        }
        await _run(
            QSD,
            "--blockdev", json.dumps(blockdev(connection)),
            "--export", json.dumps(export),
            "--daemonize", "--pidfile", str(folder / "qsd.pid"),
        )  # fmt: skip

    def busy(self, instance_uuid: str, name: str) -> bool:
        """Whether the attachment's block device is held (mounted in the container)."""
        return any(held(loop) for loop in loops_backed_by(self.folder(instance_uuid, name) / "disk"))

    async def disconnect(self, instance_uuid: str, name: str) -> None:
        """Remove what the attachment has on this host: its loop device, daemon, mount and files
        (nothing if there are none).

        :raises DeviceBusy: its block device is held (mounted in the container): nothing changed.
        """
        folder = self.folder(instance_uuid, name)
        disk = folder / "disk"
        if self.busy(instance_uuid, name):
            raise DeviceBusy(f"/dev/{name} of instance {instance_uuid} is in use (mounted)")
        for loop in loops_backed_by(disk):
            await _run("losetup", "--detach", loop)
        pid = running_pid(folder / "qsd.pid", QSD.encode())
        if pid is not None:
            await stop_pid(pid)
        await self._unmount(disk)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    @staticmethod
    async def _unmount(disk: Path) -> None:
        """The FUSE mount a daemon left (it died): gone, lazily if it is still in use."""
        if mounted(disk):
            await _run("umount", "--lazy", str(disk))
