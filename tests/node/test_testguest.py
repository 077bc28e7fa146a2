"""The test guest boots under raw QEMU (TCG), reports its disk, lease and SSH server, sees hot-plugs
and powers off; its build resolves dropbear's libraries, reads public keys and is keyed by its inputs.

The guest is built once into the default cache dir; each test boots its own QEMU with a QMP
monitor on a unix socket and reads the serial console from a log file.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import testguest
from deploy.testguest import (
    BUSYBOX,
    DISK_MARKER,
    DROPBEAR,
    PUBLIC_KEYS_SCRIPT,
    TestGuest,
    build_test_guest,
    default_cache_dir,
    recipe_digest,
    shared_libraries,
)

MAC = "52:54:00:12:34:56"
BOOT_TIMEOUT = 60.0
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def guest() -> TestGuest:
    return build_test_guest(default_cache_dir())


class Qemu:
    """One guest under ``qemu-system-x86_64`` (TCG), its serial console logged to a file."""

    def __init__(self, guest: TestGuest, directory: Path, cmdline: str) -> None:
        directory.mkdir()
        self.log = directory / "serial.log"
        self.stderr = directory / "qemu.log"
        self.qmp_path = directory / "qmp.sock"
        self.qmp_file: Any = None
        argv = [
            "qemu-system-x86_64",
            "-machine", "pc,accel=tcg",
            "-m", "128",
            "-nographic",
            "-no-reboot",
            "-kernel", str(guest.kernel),
            "-initrd", str(guest.initrd),
            "-append", cmdline,
            "-drive", f"file={guest.disk},if=virtio,format=raw,readonly=on",
            "-netdev", "user,id=n0",
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
            "-serial", f"file:{self.log}",
            "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)

    def console(self) -> str:
        return self.log.read_text(errors="replace").replace("\r", "") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first console line matching ``pattern``, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None
            if match := re.search(pattern, self.console(), re.M):
                return match
            if exited or time.monotonic() > deadline:
                state = f"exited {self.process.returncode}" if exited else "timed out"
                pytest.fail(
                    f"{pattern!r} not on the console ({state}):\n{self.console()}\n{self.stderr.read_text()}"
                )
            time.sleep(0.05)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qemu still running after {timeout}s:\n{self.console()}")

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its result (the connection is opened on first use)."""
        if self.qmp_file is None:
            connection = socket.socket(socket.AF_UNIX)
            connection.connect(str(self.qmp_path))
            self.qmp_file = connection.makefile("rw")
            json.loads(self.qmp_file.readline())  # the greeting
            self.qmp("qmp_capabilities")
        self.qmp_file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.qmp_file.flush()
        while "event" in (reply := json.loads(self.qmp_file.readline())):
            pass
        assert "return" in reply, reply
        return reply["return"]

    def close(self) -> None:
        if self.qmp_file is not None:
            self.qmp_file.close()
        self.process.kill()
        self.process.wait()


@pytest.fixture
def boot(guest: TestGuest, tmp_path: Path) -> Iterator[Callable[..., Qemu]]:
    """Start guests (extra kernel command line words optional); kill them all afterwards."""
    started: list[Qemu] = []

    def start(extra: str = "") -> Qemu:
        started.append(Qemu(guest, tmp_path / f"vm{len(started)}", f"{guest.cmdline} {extra}".strip()))
        return started[-1]

    yield start
    for vm in started:
        vm.close()


def test_guest_reports_disk_lease_and_ready(guest: TestGuest, boot: Callable[..., Qemu]) -> None:
    assert guest.disk.read_bytes().startswith(DISK_MARKER)
    vm = boot()
    assert vm.wait_for(r"^AIOSTACK-READY .*$", BOOT_TIMEOUT)[0] == "AIOSTACK-READY ip=10.0.2.15 disks=vda"
    disk = vm.wait_for(r"^AIOSTACK-DISK name=vda bytes=(\d+)$")
    assert int(disk[1]) == guest.disk.stat().st_size
    lease = vm.wait_for(r"^AIOSTACK-IP dev=eth0 .*$")
    assert lease[0] == f"AIOSTACK-IP dev=eth0 addr=10.0.2.15/24 mac={MAC}"
    vm.wait_for(r"^AIOSTACK-SSH keys=0 host_key=AAAAC3NzaC1lZDI1NTE5\S+$")  # no config drive: no key
    vm.wait_for(r"^AIOSTACK-METADATA none$")  # user-mode networking routes no metadata service


@pytest.mark.full_size
def test_guest_sees_hotplugged_disk_and_nic_come_and_go(boot: Callable[..., Qemu], tmp_path: Path) -> None:
    extra = tmp_path / "extra.raw"
    extra.write_bytes(bytes(1024 * 1024))
    vm = boot()
    vm.wait_for(r"^AIOSTACK-READY ", BOOT_TIMEOUT)
    vm.qmp(
        "blockdev-add",
        driver="raw",
        **{"node-name": "extra"},
        file={"driver": "file", "filename": str(extra)},
    )
    vm.qmp("device_add", driver="virtio-blk-pci", drive="extra", id="extra-disk")
    vm.wait_for(r"^AIOSTACK-DISK-ADDED name=vdb bytes=1048576$")
    vm.qmp("netdev_add", type="user", id="n1")
    vm.qmp("device_add", driver="virtio-net-pci", netdev="n1", mac="52:54:00:12:34:57", id="extra-nic")
    vm.wait_for(r"^AIOSTACK-NIC-ADDED dev=eth1 mac=52:54:00:12:34:57$")
    vm.wait_for(r"^AIOSTACK-NIC-IP dev=eth1 addr=10\.0\.2\.15/24$")  # user-mode networking's DHCP
    vm.qmp("device_del", id="extra-disk")
    vm.wait_for(r"^AIOSTACK-DISK-REMOVED name=vdb$")
    vm.qmp("device_del", id="extra-nic")
    vm.wait_for(r"^AIOSTACK-NIC-REMOVED dev=eth1$")


@pytest.mark.full_size
def test_acpi_power_button_powers_guest_off(boot: Callable[..., Qemu]) -> None:
    vm = boot()
    vm.wait_for(r"^AIOSTACK-READY ", BOOT_TIMEOUT)
    vm.qmp("system_powerdown")
    vm.wait_for(r"^AIOSTACK-POWEROFF reason=acpi$")
    assert vm.wait_exit() == 0


@pytest.mark.full_size
def test_guest_powers_itself_off_when_asked_on_cmdline(boot: Callable[..., Qemu]) -> None:
    vm = boot("aiostack.poweroff_after=1")
    vm.wait_for(r"^AIOSTACK-READY ", BOOT_TIMEOUT)
    assert vm.wait_exit() == 0
    assert "AIOSTACK-POWEROFF reason=self" in vm.console().splitlines()


def test_dropbears_libraries_are_resolved_from_its_elf_headers() -> None:
    libraries, interpreters = shared_libraries(DROPBEAR)
    assert interpreters == ["/lib64/ld-linux-x86-64.so.2"]
    for name in ("libc.so.6", "libcrypt.so.1", "libz.so.1", "libtomcrypt.so.1", "libtommath.so.1"):
        assert libraries[name].is_file(), name
    assert "ld-linux-x86-64.so.2" in libraries  # the interpreter (libc names it too)
    assert shared_libraries([BUSYBOX]) == ({}, [])  # static


def test_public_keys_are_read_from_meta_data_with_json_escapes_decoded(tmp_path: Path) -> None:
    script = tmp_path / "public-keys"
    script.write_text(PUBLIC_KEYS_SCRIPT)
    keys = {
        "plain": "ssh-ed25519 AAAAC3Nza one@host\n",
        "odd": 'ssh-rsa AAAAB3Nza "quoted" back\\slash caf\u00e9 \u2603',
        "empty": "",
    }
    meta = {"uuid": "u", "meta": {"a": "}"}, "public_keys": keys, "keys": [{"data": "not-this"}]}

    def read(text: str) -> list[str]:
        done = subprocess.run([BUSYBOX, "awk", "-f", script], input=text.encode(), capture_output=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode().splitlines()

    expected = ["ssh-ed25519 AAAAC3Nza one@host", 'ssh-rsa AAAAB3Nza "quoted" back\\slash caf\u00e9 \u2603']
    assert read(json.dumps(meta)) == expected
    assert read(json.dumps(meta, indent=2)) == expected
    assert read(json.dumps({"uuid": "u", "public_keys": {}})) == []
    assert read(json.dumps({"uuid": "u"})) == []


def test_a_change_to_the_build_or_to_a_copied_program_makes_a_new_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = recipe_digest()
    source = tmp_path / "testguest.py"
    source.write_bytes(Path(testguest.__file__).read_bytes() + b"# another version\n")
    monkeypatch.setattr(testguest, "__file__", str(source))
    assert recipe_digest() != digest
    monkeypatch.undo()
    dropbear = tmp_path / "dropbear"
    shutil.copyfile(DROPBEAR[0], dropbear)
    with open(dropbear, "ab") as changed:
        changed.write(b"\0")
    monkeypatch.setattr(testguest, "DROPBEAR", (dropbear, *DROPBEAR[1:]))
    assert recipe_digest() != digest
