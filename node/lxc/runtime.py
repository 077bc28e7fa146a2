"""System containers driven by liblxc's command-line tools, and liblxc's monitor read directly.

Each node keeps its containers under its own lxcpath (``<node dir>/lxc``, mode 0700), so
nothing collides with the system's containers or another node's. A container is named by its
instance's uuid; its directory holds liblxc's ``config`` and ``upper`` (what the container
writes: its root is an overlay, liblxc's ``overlay:LOWER:UPPER``, on the image's unpacked root
filesystem, which no container writes to). Its console (``/dev/console``, init's output) is
logged to a file the node names. Its devices cgroup allows the standard character devices
(``STANDARD_DEVICES``) and the block devices of its volumes alone: those are in ``devices.conf``
(included by ``config``), made in its ``/dev`` by liblxc's autodev hook before its init runs, or
given to it running (``add_device``: the node made through ``/proc/<init>/root/dev``, the
cgroup told through ``lxc-cgroup``; not ``lxc-device``, which first enters the host's network
namespace through ``/proc/1``, and fails where that is not allowed).

State changes come from liblxc's monitor, never from polling: every container's monitor
process (the ``lxc-start`` that stays behind it) writes each change of state, and the exit
status of its init, to the FIFO ``<rundir>/lxc/<lxcpath>/monitor-fifo`` when a reader holds it
open. ``lxc-monitord`` is that reader for ``lxc-monitor``; here the node is (``Monitor``), so no
daemon outlives it. A message is liblxc's ``struct lxc_msg``: ``int type; char
name[NAME_MAX + 1]; int value``, written whole (it is smaller than ``PIPE_BUF``).

The tools are run as asyncio subprocesses rather than through python3-lxc: python3-lxc is
built for Debian's own Python (not the project's venv), its calls block (each would need a
thread), and it offers no monitor either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MESSAGE = struct.Struct("i256si")
"""liblxc's ``struct lxc_msg`` (``type``, ``name``, ``value``)."""
MSG_STATE = 0
MSG_EXIT_CODE = 2
STATES = ("STOPPED", "STARTING", "RUNNING", "STOPPING", "ABORTING", "FREEZING", "FROZEN", "THAWED")
"""liblxc's ``lxc_state_t``, by value."""
RUN_DIR = Path("/run")
"""liblxc's rundir for root (``RUNTIME_PATH``)."""
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
DEVICES_CONFIG, DEVICES_HOOK = "devices.conf", "devices.hook"
"""In a container's directory: liblxc's lines for its volumes' devices, and the hook making their nodes."""
CGROUP_V1_DEVICES = Path("/sys/fs/cgroup/devices")
STANDARD_DEVICES = (
    "c *:* m",  # device nodes may be made, not used
    "b *:* m",
    "c 1:3 rwm",  # null
    "c 1:5 rwm",  # zero
    "c 1:7 rwm",  # full
    "c 1:8 rwm",  # random
    "c 1:9 rwm",  # urandom
    "c 5:0 rwm",  # tty
    "c 5:1 rwm",  # console
    "c 5:2 rwm",  # ptmx
    "c 136:* rwm",  # pts
)
"""The devices every container may use (liblxc's ``common.conf`` without rtc, fuse, tun, kvm
and hpet); its volumes' block devices are added to them."""


def memory_limit(memory_mb: int) -> str:
    """liblxc's line limiting a container's memory: the cgroup v1 controller where the host has it
    (a hybrid layout), else cgroup v2's."""
    if CGROUP_V1_MEMORY.is_dir():
        return f"lxc.cgroup.memory.limit_in_bytes = {memory_mb}M"
    return f"lxc.cgroup2.memory.max = {memory_mb}M"


def devices_key(rule: str) -> str:
    """liblxc's key for a devices cgroup rule (``allow`` or ``deny``): cgroup v1's controller
    where the host has it, else cgroup v2's (a BPF program liblxc makes)."""
    return f"lxc.cgroup.devices.{rule}" if CGROUP_V1_DEVICES.is_dir() else f"lxc.cgroup2.devices.{rule}"


class ContainerError(Exception):
    """An ``lxc-*`` tool failed; the message is what it said."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A container's new state (``STATES``), or the exit status of its init (``exit_status``)."""

    name: str
    state: str | None
    exit_status: int | None = None


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What a container is made of."""

    name: str
    hostname: str
    rootfs: Path
    """The unpacked root filesystem it is an overlay on (read only to it)."""
    console_log: Path
    memory_mb: int | None = None
    """Its memory limit (the flavor's RAM); none: unlimited."""
    nics: tuple[Veth, ...] = ()
    """Its NICs, ``eth0`` first; none: no network."""


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """A block device of the host the container sees as ``/dev/<name>`` (a volume's)."""

    name: str
    major: int
    minor: int
    readonly: bool = False

    @property
    def rule(self) -> str:
        """Its devices cgroup rule: read-write, or read-only."""
        return f"b {self.major}:{self.minor} {'rm' if self.readonly else 'rwm'}"

    @property
    def mode(self) -> int:
        return 0o440 if self.readonly else 0o660


@dataclass(frozen=True, slots=True)
class Veth:
    """A container NIC: a veth pair, its host end (``host_end``) on a bridge of this host."""

    bridge: str
    mac: str
    host_end: str
    """The name of its end on the host (the name the node's firewall filters)."""
    mtu: int | None = None

    def config(self, index: int) -> list[str]:
        """liblxc's ``lxc.net.<index>.*`` lines."""
        key = f"lxc.net.{index}"
        lines = [
            f"{key}.type = veth",
            f"{key}.link = {self.bridge}",
            f"{key}.hwaddr = {self.mac}",
            f"{key}.veth.pair = {self.host_end}",
            f"{key}.name = eth{index}",
            f"{key}.flags = up",
        ]
        return lines + ([f"{key}.mtu = {self.mtu}"] if self.mtu else [])


def monitor_fifo(lxcpath: Path) -> Path:
    """Where liblxc's monitor processes of ``lxcpath`` write their state changes."""
    return RUN_DIR / "lxc" / str(lxcpath).lstrip("/") / "monitor-fifo"


def decode(data: bytes) -> list[StateChange]:
    """liblxc's monitor messages (whole ones) as state changes; other kinds are left out."""
    changes = []
    for offset in range(0, len(data) - len(data) % MESSAGE.size, MESSAGE.size):
        kind, raw_name, value = MESSAGE.unpack_from(data, offset)
        name = raw_name.split(b"\0", 1)[0].decode(errors="replace")
        if kind == MSG_STATE and 0 <= value < len(STATES):
            changes.append(StateChange(name, STATES[value]))
        elif kind == MSG_EXIT_CODE:
            changes.append(StateChange(name, None, exit_status=value))
    return changes


class Monitor:
    """The reader of liblxc's monitor FIFO for one lxcpath, on the event loop (``add_reader``)."""

    def __init__(self, lxcpath: Path, on_change: Callable[[StateChange], None]) -> None:
        self.fifo = monitor_fifo(lxcpath)
        self.on_change = on_change
        self._fd: int | None = None
        self._pending = b""

    def open(self) -> None:
        self.fifo.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkfifo(self.fifo, 0o600)
        if not stat.S_ISFIFO(self.fifo.stat().st_mode):
            raise ContainerError(f"{self.fifo} is not a FIFO")
        # read-write: the FIFO always has a writer, so no end-of-file between containers' messages
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def close(self) -> None:
        if self._fd is None:
            return
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        self.fifo.unlink(missing_ok=True)
        remove_empty(self.fifo.parent, RUN_DIR / "lxc")

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, MESSAGE.size * 64)
        except BlockingIOError:
            return
        data = self._pending + data
        whole = len(data) - len(data) % MESSAGE.size
        self._pending = data[whole:]
        for change in decode(data[:whole]):
            self.on_change(change)


def remove_empty(directory: Path, top: Path) -> None:
    """``directory`` and its parents below ``top``, as long as each is empty."""
    while directory != top and top in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def make_device_node(node: Path, device: BlockDevice) -> None:
    """The block device's node at ``node`` (another one there is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        there = node.lstat()
        if stat.S_ISBLK(there.st_mode) and there.st_rdev == os.makedev(device.major, device.minor):
            os.chmod(node, device.mode)
            return
        node.unlink()
    os.mknod(node, stat.S_IFBLK | device.mode, os.makedev(device.major, device.minor))
    os.chmod(node, device.mode)  # not the umask's


def lock_dir(lxcpath: Path) -> Path:
    """Where liblxc keeps the lock files of ``lxcpath``'s containers."""
    return RUN_DIR / "lxc" / "lock" / str(lxcpath).lstrip("/")


async def _lxc(*argv: str, check: bool = True) -> str:
    """Run an ``lxc-*`` tool; its output. :raises ContainerError: it failed (``check``)."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise ContainerError(f"{argv[0]}: {err.decode(errors='replace').strip() or process.returncode}")
    return out.decode()


class Containers:
    """The containers of one lxcpath: defined, started, stopped, rebooted, destroyed."""

    def __init__(self, lxcpath: Path, on_change: Callable[[StateChange], None]) -> None:
        self.lxcpath = lxcpath
        self.monitor = Monitor(lxcpath, on_change)

    async def open(self) -> None:
        self.lxcpath.mkdir(parents=True, exist_ok=True)
        self.lxcpath.chmod(0o700)
        self.monitor.open()

    def close(self) -> None:
        """Stop reading the monitor; remove what liblxc made for this lxcpath under ``/run/lxc``
        (its lock files stay while a container of it is defined)."""
        self.monitor.close()
        locks = lock_dir(self.lxcpath)
        for name in os.listdir(locks) if locks.exists() else []:
            if not self.defined(name.removeprefix(".")):
                path = locks / name
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        remove_empty(locks, RUN_DIR / "lxc" / "lock")

    def directory(self, name: str) -> Path:
        return self.lxcpath / name

    def config(self, spec: ContainerSpec) -> str:
        """liblxc's configuration of the container."""
        upper = self.directory(spec.name) / "upper"
        lines = [
            f"lxc.uts.name = {spec.hostname}",
            f"lxc.rootfs.path = overlay:{spec.rootfs}:{upper}",
            "lxc.autodev = 1",
            "lxc.mount.auto = proc:mixed sys:ro",
            "lxc.apparmor.profile = unconfined",
            "lxc.pty.max = 4",
            "lxc.tty.max = 1",
            f"lxc.console.logfile = {spec.console_log}",
            "lxc.init.cmd = /sbin/init",
            "lxc.signal.halt = SIGUSR2",  # busybox init: power off
            "lxc.signal.reboot = SIGTERM",  # busybox init: reboot
            *([memory_limit(spec.memory_mb)] if spec.memory_mb else []),
            f"{devices_key('deny')} = a",
            *(f"{devices_key('allow')} = {rule}" for rule in STANDARD_DEVICES),
            f"lxc.include = {self.directory(spec.name) / DEVICES_CONFIG}",
            *(
                [line for index, nic in enumerate(spec.nics) for line in nic.config(index)]
                or ["lxc.net.0.type = empty"]
            ),
        ]
        return "\n".join(lines) + "\n"

    async def define(self, spec: ContainerSpec) -> str:
        """Write the container's directory and configuration; the configuration."""
        text = self.config(spec)
        directory = self.directory(spec.name)
        (directory / "upper").mkdir(parents=True, exist_ok=True)
        spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        (directory / DEVICES_CONFIG).write_text("")
        (directory / "config").write_text(text)
        return text

    def set_devices(self, name: str, devices: list[BlockDevice]) -> None:
        """The block devices the container has from its next start: allowed by its devices
        cgroup, and made in its ``/dev`` by liblxc's autodev hook (before its init runs)."""
        directory = self.directory(name)
        hook = directory / DEVICES_HOOK
        lines = [f"{devices_key('allow')} = {device.rule}" for device in devices]
        if devices:
            made = (
                f'mknod -m {device.mode:o} "$LXC_ROOTFS_MOUNT/dev/{device.name}"'
                f" b {device.major} {device.minor}"
                for device in devices
            )
            hook.write_text("\n".join(["#!/bin/sh", "set -e", *made]) + "\n")
            hook.chmod(0o700)
            lines.append(f"lxc.hook.autodev = {hook}")
        else:
            hook.unlink(missing_ok=True)
        (directory / DEVICES_CONFIG).write_text("".join(f"{line}\n" for line in lines))
        config = directory / "config"
        include = f"lxc.include = {directory / DEVICES_CONFIG}\n"
        if include not in config.read_text():  # defined before containers had volumes
            with config.open("a") as file:
                file.write(include)

    async def pid(self, name: str) -> int:
        """The pid of the running container's init."""
        return int(await _lxc("lxc-info", "-P", str(self.lxcpath), "-n", name, "-p", "-H"))

    async def add_device(self, name: str, device: BlockDevice) -> None:
        """Give the running container the block device now: allowed by its devices cgroup, its
        node made in its ``/dev`` (through its init's root, ``/proc/<pid>/root``)."""
        await _lxc("lxc-cgroup", "-P", str(self.lxcpath), "-n", name, "devices.allow", device.rule)
        node = Path(f"/proc/{await self.pid(name)}/root/dev/{device.name}")
        await asyncio.to_thread(make_device_node, node, device)

    async def remove_device(self, name: str, device: BlockDevice) -> None:
        """Take the block device from the running container: its node gone from its ``/dev``, its
        devices cgroup denying it (what has it open keeps it until it closes it)."""
        node = Path(f"/proc/{await self.pid(name)}/root/dev/{device.name}")
        await asyncio.to_thread(node.unlink, True)
        await _lxc("lxc-cgroup", "-P", str(self.lxcpath), "-n", name, "devices.deny", device.rule)

    def defined(self, name: str) -> bool:
        return (self.directory(name) / "config").exists()

    def names(self) -> list[str]:
        """The containers defined here."""
        if not self.lxcpath.exists():
            return []
        return sorted(path.parent.name for path in self.lxcpath.glob("*/config"))

    async def state(self, name: str) -> str:
        """liblxc's state of the container (``STATES``); ``STOPPED`` for one not defined."""
        if not self.defined(name):
            return "STOPPED"
        return (await _lxc("lxc-info", "-P", str(self.lxcpath), "-n", name, "-s", "-H")).strip()

    async def cgroup_value(self, name: str, key: str) -> str:
        """A running container's cgroup setting (``memory.limit_in_bytes``...)."""
        return (await _lxc("lxc-cgroup", "-P", str(self.lxcpath), "-n", name, key)).strip()

    async def running(self, name: str) -> bool:
        return await self.state(name) == "RUNNING"

    async def start(self, name: str) -> None:
        """Start the container (daemonized: its monitor process keeps it)."""
        await _lxc("lxc-start", "-P", str(self.lxcpath), "-n", name)

    async def stop(self, name: str, timeout: float) -> None:
        """Ask init to power off; killed if it has not within ``timeout`` seconds."""
        await _lxc("lxc-stop", "-P", str(self.lxcpath), "-n", name, "-t", str(max(1, round(timeout))))

    async def kill(self, name: str) -> None:
        """Stop at once (SIGKILL to init); nothing if it is not running."""
        if await self.running(name):
            await _lxc("lxc-stop", "-P", str(self.lxcpath), "-n", name, "-k")

    async def reboot(self, name: str) -> None:
        """Ask init to reboot (liblxc starts the container again once init is gone)."""
        await _lxc("lxc-stop", "-P", str(self.lxcpath), "-n", name, "-r", "-W")

    async def destroy(self, name: str) -> None:
        """Kill the container if it runs, and remove its directory (nothing if it is gone)."""
        if self.defined(name):
            await self.kill(name)
        await asyncio.to_thread(shutil.rmtree, self.directory(name), True)
