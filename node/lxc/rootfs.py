"""Container images: a root filesystem as a tar archive, and the busybox one the tests boot.

An image a container boots from has ``container_format`` ``docker`` (Glance's "a Docker tar
archive of the container filesystem") and ``disk_format`` ``raw``: its bytes are a tar archive
(plain, gzip, xz or bzip2) of the root filesystem. Nova's lxc driver boots filesystem images
instead (raw or qcow2, mounted through a loop or NBD device); a tar needs no device to mount
and none to give back. Each image is unpacked once per node (``unpack``) and containers run on
an overlay of it.

``busybox_rootfs`` builds a tiny one from Debian's busybox-static, as ``deploy.testguest``
builds the test guest: busybox's ``init`` runs ``/etc/rc.boot``, which asks DHCP for each NIC's
address and says on the console ``AIOSTACK-BOOT count=N`` (its boots, counted in
``/var/boots``), ``AIOSTACK-DISK /dev/vdX bytes=SIZE`` for each disk it has (its volumes), then
``AIOSTACK-READY ip=ADDRESS|none``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from api.image import ROOTFS_FORMATS

BUSYBOX = Path("/bin/busybox")
CONTAINER_FORMAT, DISK_FORMAT = ROOTFS_FORMATS
READY_MARKER = "AIOSTACK-READY"

INITTAB = """\
::sysinit:/etc/rc.boot
::shutdown:/bin/echo AIOSTACK-SHUTDOWN
"""
RC_BOOT = """\
#!/bin/sh
mkdir -p /run /tmp
boots=$(cat /var/boots 2>/dev/null)x
echo "$boots" > /var/boots
echo "AIOSTACK-BOOT count=${#boots}"
for disk in /dev/vd? /dev/sd?; do
    [ -b "$disk" ] && echo "AIOSTACK-DISK $disk bytes=$(blockdev --getsize64 "$disk" 2>&1)"
done
address=none
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -i eth0 -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1
    address=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \\([0-9.]*\\)\\/.*/\\1/p')
    [ -n "$address" ] || address=none
fi
echo "AIOSTACK-READY ip=$address"
"""
UDHCPC_SCRIPT = """\
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        ;;
esac
exit 0
"""


class ImageFormatError(Exception):
    """The image is no container image (its formats, or its bytes, are not a root filesystem tar)."""


def check_formats(container_format: str | None, disk_format: str | None, image_id: str) -> None:
    """:raises ImageFormatError: the image is not a root filesystem tar (``docker`` / ``raw``)."""
    if (container_format, disk_format) != (CONTAINER_FORMAT, DISK_FORMAT):
        raise ImageFormatError(
            f"image {image_id} is {container_format}/{disk_format}: a container boots from a root"
            f" filesystem tar (container_format {CONTAINER_FORMAT}, disk_format {DISK_FORMAT})"
        )


def _entry(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, target
    return info


def busybox_rootfs(target: Path) -> Path:
    """Write the busybox root filesystem as a gzip tar at ``target``; ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    busybox = BUSYBOX.read_bytes()
    listed = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True).stdout.decode()
    applets = sorted(applet for applet in listed.split() if applet != "busybox")
    with tarfile.open(target, "w:gz") as tar:
        for directory in ("bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "var"):
            tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o755))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)), io.BytesIO(busybox))
        for applet in applets:
            tar.addfile(_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox"))
        tar.addfile(_entry("sbin/init", tarfile.SYMTYPE, 0o777, target="../bin/busybox"))
        for name, text, mode in (
            ("etc/inittab", INITTAB, 0o644),
            ("etc/rc.boot", RC_BOOT, 0o755),
            ("etc/udhcpc.script", UDHCPC_SCRIPT, 0o755),
        ):
            data = text.encode()
            tar.addfile(_entry(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return target


def _member_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's ``tar`` filter (no absolute paths, nothing outside the root), and only files,
    directories and links: no device nodes (liblxc makes ``/dev``) nor FIFOs."""
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return None
    return tarfile.tar_filter(member, path)


def unpack(archive: Path, target: Path) -> None:
    """Unpack a root filesystem tar into ``target`` (made whole, or not at all).

    :raises ImageFormatError: the bytes are no tar archive, or hold no ``/sbin/init``.
    """
    partial = target.with_name(target.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(partial, filter=_member_filter)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageFormatError(f"not a root filesystem tar: {exc}") from None
    if not (partial / "sbin" / "init").is_symlink() and not (partial / "sbin" / "init").exists():
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageFormatError("the root filesystem has no /sbin/init")
    partial.rename(target)
