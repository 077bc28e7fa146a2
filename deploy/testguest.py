"""A tiny real Linux guest for QEMU tests, built from Debian packages only.

The kernel and its modules come from Debian 12's ``linux-image-6.1.0-*-cloud-amd64`` package
(fetched with ``apt-get download``), userspace is ``/bin/busybox`` from busybox-static. The
guest's ``/init`` reports on the serial console with ``AIOSTACK-`` lines: its disks, its DHCP
lease, a ready marker, hot-plugged disks and NICs (``AIOSTACK-NIC-ADDED``, then the DHCP address
it got, ``AIOSTACK-NIC-IP``; ``AIOSTACK-NIC-REMOVED``), whether the addresses of
``aiostack.ping=IP,IP...`` on the kernel command line answer a ping (``AIOSTACK-PING to=IP
result=ok|failed``, each tried for up to 30 s), the first bytes of each hot-plugged disk
(``AIOSTACK-DISK-HEAD``; with ``aiostack.stamp=TEXT`` it then writes TEXT there,
``AIOSTACK-DISK-STAMPED``), and power-off (ACPI power button, or
``aiostack.poweroff_after=N`` on the kernel command line), and its size whenever it changes
(``AIOSTACK-SIZE cpus=N mem_kb=KB``: the CPUs online, hot-plugged ones brought online as a udev
rule would, and ``MemTotal``, which its memory balloon moves). First it reads its config drive
(``node/configdrive.py``): ``AIOSTACK-CONFIG-DRIVE uuid=UUID admin_pass=set|none`` (root's
password set from ``admin_pass``, one without quotes or backslashes), then runs its user data as a
shell script (``AIOSTACK-USER-DATA exit=N output=...``). Root's authorized keys are the
config drive's ``public_keys``; once the guest has its address it runs dropbear (from
dropbear-bin, with the shared libraries it links) on port 22 with a host key made at boot:
``AIOSTACK-SSH keys=N host_key=BASE64`` (its ed25519 public key).
Then it asks the metadata service at 169.254.169.254 (``node/metadata.py``; DHCP's option 121
routes it) who it is: ``AIOSTACK-METADATA uuid=UUID instance_id=EC2_ID admin_pass=served|absent
user_data=MD5|none`` (``AIOSTACK-METADATA none`` when DHCP gave no route to it, or nothing answers).

Run ``python -m deploy.testguest [--cache DIR]`` to build (or reuse) a guest and print its
paths; add ``--url URL`` (and ``--password``, or ``$OS_PASSWORD``) to register it as kernel,
ramdisk and disk images with a running aiostack.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiostack.client import Client

KERNEL_PACKAGE = re.compile(r"^linux-image-6\.1\.0-(\d+)-cloud-amd64$")
# the modules the guest loads; their dependencies are resolved from each module's .modinfo
MODULE_ROOTS = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon", "evdev", "button", "ata_piix", "sr_mod",
    "isofs",
)  # fmt: skip
DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".ko": bytes,
    ".ko.xz": lzma.decompress,
    ".ko.gz": gzip.decompress,
}
BUSYBOX = Path("/bin/busybox")
# dropbear-bin's server and key generator, copied with the shared libraries they link
DROPBEAR = (Path("/usr/sbin/dropbear"), Path("/usr/bin/dropbearkey"))
LIBRARY_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"))
GUEST_LIBRARY_DIR = "lib/x86_64-linux-gnu"
SHT_DYNAMIC = 6
DT_NEEDED = 1
DISK_SIZE = 8 * 1024 * 1024
DISK_MARKER = b"AIOSTACK-TESTGUEST-DISK\n"
CMDLINE = "console=ttyS0 quiet panic=-1"

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
echo  # the firmware leaves the console mid-line
while read -r module; do insmod "/lib/modules/$module.ko"; done </etc/modules

names() { for p in "$@"; do [ -e "$p" ] && printf '%s ' "${p##*/}"; done; }
bytes() { echo $(( $(cat "/sys/block/$1/size") * 512 )); }
listed() { case " $2 " in *" $1 "*) return 0;; esac; return 1; }

disks=$(names /sys/block/vd*)
for d in $disks; do echo "AIOSTACK-DISK name=$d bytes=$(bytes "$d")"; done

config_drive() {
    # the config drive (an IDE CD-ROM labelled config-2): who it is, its root password, its user data
    for attempt in $(seq 30); do [ -e /dev/sr0 ] && break; sleep 0.1; done
    mkdir -p /config
    mount -t iso9660 -o ro /dev/sr0 /config 2>/dev/null || { echo "AIOSTACK-CONFIG-DRIVE none"; return; }
    latest=/config/openstack/latest
    uuid=$(sed -n 's/^{"uuid": "\([^"]*\)".*/\1/p' $latest/meta_data.json)
    password=$(sed -n 's/.*"admin_pass": "\([^"]*\)".*/\1/p' $latest/meta_data.json)
    said=none
    if [ -n "$password" ]; then
        hash=$(printf '%s' "$password" | mkpasswd -P 0 -m sha512)
        case "$hash" in '$6$'*) echo "root:$hash:19000:0:99999:7:::" >/etc/shadow && said=set;; esac
    fi
    echo "AIOSTACK-CONFIG-DRIVE uuid=$uuid admin_pass=$said"
    (umask 077 && aiostack-public-keys $latest/meta_data.json >/root/.ssh/authorized_keys)
    if [ -f $latest/user_data ]; then
        sh $latest/user_data >/tmp/user_data.out 2>&1
        status=$?
        output=$(head -c 200 /tmp/user_data.out | tr -c 'A-Za-z0-9=._-' _)
        echo "AIOSTACK-USER-DATA exit=$status output=$output"
    fi
}
config_drive

ip link set lo up
addr=
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -i eth0 -s /etc/udhcpc.script -f -q -n -t 5 -T 2 -O staticroutes
    addr=$(ip -o -4 addr show dev eth0 | awk '{print $4; exit}')
    [ -n "$addr" ] && echo "AIOSTACK-IP dev=eth0 addr=$addr mac=$(cat /sys/class/net/eth0/address)"
fi
nics=$(names /sys/class/net/eth*)

ssh_server() {
    # a new host key each boot (the root file system is this initramfs); root logs in with a key
    # of the config drive, or with its admin_pass; dropbear logs on the console
    key=/etc/dropbear/dropbear_ed25519_host_key
    dropbearkey -t ed25519 -f $key >/dev/null 2>&1
    dropbear -F -E -r $key -p 22 -P /tmp/dropbear.pid &
    for attempt in $(seq 100); do
        if netstat -ltn | grep -q ':22 '; then
            keys=0
            [ -f /root/.ssh/authorized_keys ] && keys=$(grep -c . /root/.ssh/authorized_keys)
            host_key=$(dropbearkey -y -f $key | sed -n 's/^ssh-ed25519 \([^ ]*\).*/\1/p')
            echo "AIOSTACK-SSH keys=$keys host_key=$host_key"
            return
        fi
        sleep 0.1
    done
    echo "AIOSTACK-SSH failed"
}
[ -n "$addr" ] && ssh_server

metadata() {
    # the metadata service (node/metadata.py) at 169.254.169.254, asked only where DHCP routes it
    # (option 121): who it says this guest is, its EC2 instance-id, whether it serves the password
    # (it must not), the user data's md5
    url=http://169.254.169.254
    [ -n "$(ip route show 169.254.169.254)" ] || { echo "AIOSTACK-METADATA none"; return; }
    for attempt in 1 2 3; do
        meta=$(timeout 10 wget -q -O - $url/openstack/latest/meta_data.json 2>/dev/null) && break
        sleep 1
    done
    uuid=$(echo "$meta" | sed -n 's/^{"uuid": "\([^"]*\)".*/\1/p')
    [ -n "$uuid" ] || { echo "AIOSTACK-METADATA none"; return; }
    instance_id=$(timeout 10 wget -q -O - $url/latest/meta-data/instance-id 2>/dev/null)
    case "$meta" in *'"admin_pass"'*) password=served;; *) password=absent;; esac
    user_data=none
    if timeout 10 wget -q -O /tmp/user_data $url/openstack/latest/user_data 2>/dev/null; then
        user_data=$(md5sum </tmp/user_data | cut -c1-32)
    fi
    said="uuid=$uuid instance_id=${instance_id:-none} admin_pass=$password user_data=$user_data"
    echo "AIOSTACK-METADATA $said"
}
[ -n "$addr" ] && metadata &

acpid -l /tmp/acpid.log

stamp=$(sed -n 's/.*aiostack\.stamp=\([A-Za-z0-9-]*\).*/\1/p' /proc/cmdline)
added() {
    echo "AIOSTACK-DISK-ADDED name=$1 bytes=$(bytes "$1")"
    echo "AIOSTACK-DISK-HEAD name=$1 head=$(dd if="/dev/$1" bs=64 count=1 2>/dev/null | tr -dc 'A-Za-z0-9-')"
    if [ -n "$stamp" ] && printf '%s' "$stamp" | dd of="/dev/$1" conv=notrunc,fsync 2>/dev/null; then
        echo "AIOSTACK-DISK-STAMPED name=$1 stamp=$stamp"
    fi
}

nic_added() {
    # a hot-plugged NIC: said at once, then its DHCP lease (its address only: eth0 keeps the routes)
    echo "AIOSTACK-NIC-ADDED dev=$1 mac=$(cat "/sys/class/net/$1/address")"
    (
        ip link set "$1" up
        AIOSTACK_ADDRESS_ONLY=1 udhcpc -i "$1" -s /etc/udhcpc.script -f -q -n -t 5 -T 2 >/dev/null 2>&1
        echo "AIOSTACK-NIC-IP dev=$1 addr=$(ip -o -4 addr show dev "$1" | awk '{print $4; exit}')"
    ) &
}

watch_devices() {
    while sleep 0.5; do
        now=$(names /sys/block/vd*)
        for d in $now; do listed "$d" "$disks" || added "$d"; done
        for d in $disks; do listed "$d" "$now" || echo "AIOSTACK-DISK-REMOVED name=$d"; done
        disks=$now
        now=$(names /sys/class/net/eth*)
        for n in $now; do listed "$n" "$nics" || nic_added "$n"; done
        for n in $nics; do listed "$n" "$now" || echo "AIOSTACK-NIC-REMOVED dev=$n"; done
        nics=$now
        now=$(names /sys/devices/system/cpu/cpu[0-9]*)
        for c in $now; do listed "$c" "$cpus" || echo 1 >"/sys/devices/system/cpu/$c/online"; done 2>/dev/null
        cpus=$now
        online=$(grep -c ^processor /proc/cpuinfo)
        now="cpus=$online mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
        [ "$now" = "$size" ] || echo "AIOSTACK-SIZE $now"
        size=$now
    done
}
cpus=$(names /sys/devices/system/cpu/cpu[0-9]*)
watch_devices &

ip=${addr%/*}
echo "AIOSTACK-READY ip=${ip:-none} disks=$(echo $disks | tr ' ' ,)"

for target in $(sed -n 's/.*aiostack\.ping=\([0-9.,]*\).*/\1/p' /proc/cmdline | tr , ' '); do
    result=failed
    for attempt in $(seq 30); do
        if ping -c 1 -W 1 "$target" >/dev/null 2>&1; then result=ok; break; fi
    done
    echo "AIOSTACK-PING to=$target result=$result"
done

after=$(sed -n 's/.*aiostack\.poweroff_after=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$after" ]; then
    sleep "$after"
    aiostack-poweroff self
fi
while :; do sleep 3600; done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface" ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$AIOSTACK_ADDRESS_ONLY" ] && exit 0
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        # classless static routes (option 121: the way to the metadata service), destination gateway pairs
        set -- $staticroutes
        while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
        ;;
esac
exit 0
"""

# the values of the "public_keys" object of an OpenStack meta_data.json, one a line (JSON's
# escapes decoded; a line break in a key ends nothing: it becomes a space)
PUBLIC_KEYS_SCRIPT = r"""#!/bin/awk -f
function hex(digits,    value, i) {
    value = 0
    for (i = 1; i <= length(digits); i++)
        value = value * 16 + index("0123456789abcdef", tolower(substr(digits, i, 1))) - 1
    return value
}
function utf8(code) {
    if (code < 128) return sprintf("%c", code)
    if (code < 2048) return sprintf("%c%c", 192 + int(code / 64), 128 + code % 64)
    return sprintf("%c%c%c", 224 + int(code / 4096), 128 + int(code / 64) % 64, 128 + code % 64)
}
{ text = text $0 "\n" }
END {
    if (!match(text, /"public_keys"[ \t\n]*:[ \t\n]*\{/)) exit
    strings = 0
    inside = 0
    for (i = RSTART + RLENGTH; i <= length(text); i++) {
        c = substr(text, i, 1)
        if (!inside) {
            if (c == "}") break
            if (c == "\"") { inside = 1; s = "" }
        } else if (c == "\\") {
            c = substr(text, ++i, 1)
            if (c == "u") { s = s utf8(hex(substr(text, i + 1, 4))); i += 4 }
            else if (index("bfnrt", c)) s = s " "
            else s = s c
        } else if (c == "\"") {
            inside = 0
            sub(/ +$/, "", s)
            if (++strings % 2 == 0 && s != "") print s
        } else s = s c
    }
}
"""

# acpid runs /etc/acpi/PWRF/00000080 (a symlink to this) on a KEY_POWER press, with no arguments
POWEROFF_SCRIPT = r"""#!/bin/sh
echo "AIOSTACK-POWEROFF reason=${1:-acpi}" >/dev/console
exec poweroff -f
"""


@dataclass(frozen=True)
class TestGuest:
    """A built guest: boot ``kernel`` with ``initrd`` and ``cmdline``; ``disk`` is a raw image."""

    __test__ = False  # not a pytest test class

    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str
    kernel_version: str

    def to_json(self) -> str:
        """The guest as JSON (handed to a script run on another host of the harness)."""
        return json.dumps({field.name: str(getattr(self, field.name)) for field in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> TestGuest:
        given = json.loads(text)
        return cls(
            Path(given["kernel"]),
            Path(given["initrd"]),
            Path(given["disk"]),
            given["cmdline"],
            given["kernel_version"],
        )


async def console_match(
    client: Client, server_id: str, pattern: str, timeout: float = 150.0
) -> re.Match[str]:
    """Read a server's console (``os-getConsoleOutput``) until ``pattern`` matches; the match."""
    output = ""
    async with asyncio.timeout(timeout):
        while not (found := re.search(pattern, output)):
            await asyncio.sleep(0.5)
            output = await client.console_output(server_id)
    return found


def default_cache_dir() -> Path:
    """``$AIOSTACK_GUEST_CACHE``, else ``~/.cache/aiostack/testguest``."""
    return Path(os.environ.get("AIOSTACK_GUEST_CACHE") or Path.home() / ".cache" / "aiostack" / "testguest")


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command, return its stdout; raise with its stderr if it fails."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def newest_kernel_package() -> tuple[str, str]:
    """The newest Debian 12 cloud kernel package apt knows of, and its candidate version."""
    abis = {
        int(match[1]): name
        for name in _run("apt-cache", "pkgnames", "linux-image-6.1.0-").split()
        if (match := KERNEL_PACKAGE.match(name))
    }
    if not abis:
        raise RuntimeError("apt knows no linux-image-6.1.0-*-cloud-amd64 package (run apt-get update)")
    package = abis[max(abis)]
    version = re.search(r"^Version: (\S+)$", _run("apt-cache", "show", "--no-all-versions", package), re.M)
    if version is None:
        raise RuntimeError(f"apt has no candidate version of {package}")
    return package, version[1]


@dataclass(frozen=True)
class Section:
    """One section header of an ELF file: its name, type (``sh_type``), place in the file and
    linked section (``sh_link``)."""

    name: str
    kind: int
    offset: int
    size: int
    link: int


def _cstring(data: bytes, offset: int) -> str:
    return data[offset : data.index(b"\0", offset)].decode()


def elf_sections(elf: bytes) -> list[Section]:
    """The section headers of an ELF64 little-endian file, in order."""
    if elf[:6] != b"\x7fELF\x02\x01":
        raise ValueError("not an ELF64 little-endian file")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<II16xQQI", elf, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][2]
    return [Section(_cstring(elf, names + name), *rest) for name, *rest in headers]


def modinfo(elf: bytes) -> dict[str, str]:
    """The ``.modinfo`` section of a kernel module (an ELF64 little-endian relocatable)."""
    for section in elf_sections(elf):
        if section.name == ".modinfo":
            data = elf[section.offset : section.offset + section.size]
            entries = (e.decode() for e in data.split(b"\0") if b"=" in e)
            return dict(e.split("=", 1) for e in entries)
    return {}


def elf_needs(elf: bytes) -> tuple[str | None, list[str]]:
    """A dynamically linked program's interpreter (``.interp``) and the libraries it names
    (``DT_NEEDED``); ``(None, [])`` for a static one."""
    sections = elf_sections(elf)
    interpreter, needed = None, []
    for section in sections:
        if section.name == ".interp":
            interpreter = _cstring(elf, section.offset)
        elif section.kind == SHT_DYNAMIC:
            strings = sections[section.link].offset
            for at in range(section.offset, section.offset + section.size, 16):
                tag, value = struct.unpack_from("<qQ", elf, at)
                if tag == DT_NEEDED:
                    needed.append(_cstring(elf, strings + value))
    return interpreter, needed


def shared_libraries(programs: Iterable[Path]) -> tuple[dict[str, Path], list[str]]:
    """The libraries ``programs`` need, and those need in turn, by file name (their host paths,
    found in ``LIBRARY_DIRS``), and the interpreters the programs name."""
    libraries: dict[str, Path] = {}
    interpreters: list[str] = []

    def visit(name: str) -> None:
        if name in libraries:
            return
        found = next((d / name for d in LIBRARY_DIRS if (d / name).exists()), None)
        if found is None:
            raise RuntimeError(f"shared library {name} not found in {', '.join(map(str, LIBRARY_DIRS))}")
        libraries[name] = found
        for dependency in elf_needs(found.read_bytes())[1]:
            visit(dependency)

    for program in programs:
        interpreter, needed = elf_needs(program.read_bytes())
        if interpreter is not None:
            interpreters.append(interpreter)
            visit(Path(interpreter).name)
        for name in needed:
            visit(name)
    return libraries, sorted(set(interpreters))


def load_order(tree: Path, roots: Iterable[str]) -> list[tuple[str, bytes]]:
    """The named modules under ``tree`` and their dependencies, decompressed, dependencies first."""
    paths: dict[str, tuple[Path, Callable[[bytes], bytes]]] = {}
    for path in tree.rglob("*.ko*"):
        for suffix in DECOMPRESSORS:
            if path.name.endswith(suffix):
                paths[path.name.removesuffix(suffix).replace("-", "_")] = (path, DECOMPRESSORS[suffix])
    order: dict[str, bytes] = {}

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in paths:
            raise RuntimeError(f"kernel module {name} not found under {tree}")
        path, decompress = paths[name]
        elf = decompress(path.read_bytes())
        for dependency in filter(None, modinfo(elf).get("depends", "").split(",")):
            visit(dependency)
        order[name] = elf

    for root in roots:
        visit(root)
    return list(order.items())


class Cpio:
    """A gzip'd newc cpio archive (an initramfs), written in memory."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.inode = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        """Add one entry; ``mode`` includes the file type bits."""
        self.inode += 1
        header = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        self.data += b"070701" + b"".join(b"%08X" % f for f in header) + name.encode() + b"\0"
        self.data += bytes(-len(self.data) % 4) + data
        self.data += bytes(-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self.add(name, 0o040755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.add(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        """The gzip'd archive, with its trailer."""
        self.add("TRAILER!!!", 0)
        return gzip.compress(bytes(self.data), mtime=0)


def build_initrd(modules: list[tuple[str, bytes]]) -> bytes:
    """The initramfs: busybox and its applets, dropbear and its libraries, /init, its scripts,
    and ``modules`` in load order."""
    cpio = Cpio()
    for name in (
        "bin",
        "dev",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "etc/dropbear",
        "lib",
        "lib/modules",
        GUEST_LIBRARY_DIR,
        "lib64",
        "proc",
        "sys",
        "tmp",
    ):
        cpio.directory(name)
    cpio.add("root", 0o040700)
    cpio.add("root/.ssh", 0o040700)
    cpio.add("dev/console", 0o020600, rdev=(5, 1))
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _run(BUSYBOX, "--list").split():
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    for program in DROPBEAR:
        cpio.file(f"bin/{program.name}", program.read_bytes(), 0o755)
    libraries, interpreters = shared_libraries(DROPBEAR)
    for name, path in libraries.items():
        cpio.file(f"{GUEST_LIBRARY_DIR}/{name}", path.read_bytes(), 0o755)
    for interpreter in interpreters:
        copy = f"{GUEST_LIBRARY_DIR}/{Path(interpreter).name}"
        if interpreter.lstrip("/") != copy:
            cpio.symlink(interpreter.lstrip("/"), f"/{copy}")
    cpio.file("bin/aiostack-public-keys", PUBLIC_KEYS_SCRIPT.encode(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    cpio.file("etc/shells", b"/bin/sh\n")
    cpio.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\n")
    cpio.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)
    cpio.file("bin/aiostack-poweroff", POWEROFF_SCRIPT.encode(), 0o755)
    cpio.symlink("etc/acpi/PWRF/00000080", "/bin/aiostack-poweroff")
    cpio.file("etc/modules", "".join(f"{name}\n" for name, _ in modules).encode())
    for name, elf in modules:
        cpio.file(f"lib/modules/{name}.ko", elf)
    return cpio.finish()


def recipe_digest() -> str:
    """A digest of everything besides the kernel that goes into a build: this module (its
    scripts and how it builds) and every file of the host it copies into the guest, so a
    guest built by another version, or from other packages, is never reused."""
    recipe = hashlib.sha256(Path(__file__).read_bytes())
    libraries, _ = shared_libraries(DROPBEAR)
    for path in (BUSYBOX, *DROPBEAR, *libraries.values()):
        recipe.update(str(path).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return recipe.hexdigest()[:12]


def _guest(directory: Path) -> TestGuest:
    manifest = json.loads((directory / "guest.json").read_text())
    return TestGuest(
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.gz",
        disk=directory / "disk.raw",
        cmdline=manifest["cmdline"],
        kernel_version=manifest["kernel_version"],
    )


def _build(directory: Path, package: str, version: str) -> None:
    """Download and unpack ``package``, write the guest's files into ``directory``."""
    download = directory / "download"
    download.mkdir()
    _run("apt-get", "download", f"{package}={version}", cwd=download)
    (deb,) = download.glob("*.deb")
    root = download / "root"
    _run("dpkg-deb", "-x", deb, root)
    (tree,) = (root / "lib" / "modules").iterdir()
    shutil.copyfile(root / "boot" / f"vmlinuz-{tree.name}", directory / "vmlinuz")
    (directory / "initrd.gz").write_bytes(build_initrd(load_order(tree, MODULE_ROOTS)))
    with open(directory / "disk.raw", "wb") as disk:
        disk.write(DISK_MARKER)
        disk.truncate(DISK_SIZE)
    shutil.rmtree(download)
    manifest = {"package": package, "kernel_version": tree.name, "cmdline": CMDLINE}
    (directory / "guest.json").write_text(json.dumps(manifest, indent=2) + "\n")


async def register_test_guest(
    client: Client, guest: TestGuest, *, name: str = "test-guest"
) -> dict[str, str]:
    """Upload the guest as Glance does AKI/ARI/AMI images: a kernel, a ramdisk, and a disk image
    whose ``kernel_id``, ``ramdisk_id`` and ``os_command_line`` properties boot it directly.

    Returns the ids: ``{"kernel": ..., "ramdisk": ..., "disk": ...}``.
    """
    kernel = await client.upload_image(
        f"{name}-kernel", guest.kernel, disk_format="aki", container_format="aki"
    )
    ramdisk = await client.upload_image(
        f"{name}-ramdisk", guest.initrd, disk_format="ari", container_format="ari"
    )
    properties = {"kernel_id": kernel["id"], "ramdisk_id": ramdisk["id"], "os_command_line": guest.cmdline}
    disk = await client.upload_image(
        name, guest.disk, disk_format="ami", container_format="ami", properties=properties
    )
    return {"kernel": kernel["id"], "ramdisk": ramdisk["id"], "disk": disk["id"]}


async def register_variant(
    client: Client, guest: TestGuest, guest_ids: dict[str, str], name: str, extra_cmdline: str
) -> str:
    """One more disk image of a guest ``register_test_guest`` registered (``guest_ids``), booting
    with ``extra_cmdline`` appended to its command line (``aiostack.ping=10.0.0.5``); its id."""
    properties = {
        "kernel_id": guest_ids["kernel"],
        "ramdisk_id": guest_ids["ramdisk"],
        "os_command_line": f"{guest.cmdline} {extra_cmdline}",
    }
    image = await client.upload_image(
        name, guest.disk, disk_format="ami", container_format="ami", properties=properties
    )
    return str(image["id"])


def build_test_guest(cache_dir: Path) -> TestGuest:
    """Build the guest into ``cache_dir``, or reuse a finished build of the same kernel and recipe.

    A build is made in a temporary directory and renamed into place once complete, so an
    interrupted build is never reused.
    """
    package, version = newest_kernel_package()
    final = cache_dir / f"{package}_{version}_{recipe_digest()}"
    if not final.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
        work.chmod(0o755)  # readable by a hypervisor running as another user
        try:
            _build(work, package, version)
            os.rename(work, final)
        except OSError:
            if not final.is_dir():  # not a concurrent build that finished first
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _guest(final)


async def _register(args: argparse.Namespace, guest: TestGuest) -> dict[str, str]:
    from aiostack.client import Client

    async with Client(args.url) as client:
        await client.login(args.username, args.password, args.project)
        return await register_test_guest(client, guest, name=args.name)


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) the test guest, print its paths; with ``--url``, register it as images."""
    parser = argparse.ArgumentParser(prog="python -m deploy.testguest", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="cache directory")
    parser.add_argument("--url", help="register the guest as images with this aiostack gateway")
    parser.add_argument(
        "--name", default="test-guest", help="name of the disk image (kernel: NAME-kernel...)"
    )
    parser.add_argument("--username", default=os.environ.get("OS_USERNAME", "admin"))
    parser.add_argument("--password", default=os.environ.get("OS_PASSWORD"))
    parser.add_argument("--project", default=os.environ.get("OS_PROJECT_NAME", "admin"))
    args = parser.parse_args(argv)
    guest = build_test_guest(args.cache)
    for field in fields(guest):
        print(f"{field.name}: {getattr(guest, field.name)}")
    if args.url:
        if not args.password:
            raise SystemExit("a password is needed to register: --password or $OS_PASSWORD")
        for kind, image_id in asyncio.run(_register(args, guest)).items():
            print(f"{kind} image: {image_id}")


if __name__ == "__main__":
    main()
