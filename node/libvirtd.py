"""libvirtd for QEMU nodes on a machine without systemd: start it (and virtlogd) if none answers.

On a host managed by systemd, libvirtd is socket-activated and this finds it answering. In a
container or CI machine nothing starts it, so `aiostack up --libvirt qemu:///system` and the
real-guest tests start the daemons themselves, as root, and wait until a connection answers
(the first one probes QEMU's capabilities: several seconds, cached afterwards).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import libvirt

log = logging.getLogger(__name__)

SYSTEM_URI = "qemu:///system"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
RUNTIME_DIRS = (Path("/var/log/libvirt"), Path("/var/lib/libvirt"), Path("/run/libvirt"))


class LibvirtdUnavailable(RuntimeError):
    """No libvirtd answers and none could be started here."""


def answers(uri: str = SYSTEM_URI) -> bool:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True


def _running(program: str) -> bool:
    return subprocess.run(["pgrep", "-x", program], capture_output=True, check=False).returncode == 0


def ensure_qemu_runs_as_root() -> None:
    """QEMU as root can open the node's root-owned images and logs (qemu.conf ``user``/``group``)."""
    text = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
    settings = {
        line.split("=")[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")
    }
    missing = [f'{key} = "root"' for key in ("user", "group") if key not in settings]
    if missing:
        QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
        QEMU_CONF.write_text(text + "".join(f"{line}\n" for line in missing))


def ensure_libvirtd(uri: str = SYSTEM_URI, timeout: float = 60.0) -> None:
    """Return once ``uri`` answers, starting virtlogd and libvirtd first when none runs."""
    if answers(uri):
        return
    if os.geteuid() != 0:
        raise LibvirtdUnavailable(f"{uri} does not answer, and only root can start libvirtd")
    for program in ("virtlogd", "libvirtd"):
        if shutil.which(program) is None:
            raise LibvirtdUnavailable(f"{program} is not installed (apt-get install libvirt-daemon)")
    for directory in RUNTIME_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
    ensure_qemu_runs_as_root()
    for program in ("virtlogd", "libvirtd"):
        if not _running(program):
            log.info("starting %s", program)
            subprocess.run([program, "--daemon"], check=True)
    deadline = time.monotonic() + timeout
    while not answers(uri):
        if time.monotonic() > deadline:
            raise LibvirtdUnavailable(f"libvirtd started but {uri} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def stop_libvirtd(sig: str = "KILL") -> None:
    """Kill libvirtd (the guests it started keep running)."""
    subprocess.run(["pkill", f"-{sig}", "-x", "libvirtd"], check=False)
    while _running("libvirtd"):
        time.sleep(0.05)


def prepare_embed_root(root: Path) -> str:
    """A root for ``qemu:///embed`` (QEMU driven by the node's own process, no libvirtd): QEMU
    runs as root (it opens the node's files) and writes the serial console's log itself (no
    virtlogd). Returns the URI. The root must be short: QEMU's monitor socket lives under it
    (108 characters at most)."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    return f"qemu:///embed?root={root}"


HOST_MOUNTS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/etc/libvirt")
"""What a host's own libvirtd sees of its own (``host_libvirtd``): bind mounts of its directory."""
HOST_DAEMON = "aiostack-virtd"
"""The name a host's libvirtd runs under (a link to libvirtd): ``stop_libvirtd`` and the checks for
the machine's own libvirtd (``pgrep -x libvirtd``) never take it for that one."""


def host_libvirtd(root: Path, hostname: str) -> tuple[list[str], str]:
    """A libvirtd of one harness host (a network namespace on a machine shared with other hosts):
    the command that runs it, to start inside the host's namespace (``nsenter --net``), and the
    URI of its socket, which every namespace of the machine reaches (one filesystem).

    It runs in a mount namespace of its own where ``HOST_MOUNTS`` are directories under ``root``
    (its own sockets, state, QEMU monitors and configuration), with a UTS namespace named
    ``hostname`` and its own ``host_uuid``: libvirt refuses to migrate a guest to a host with the
    source's UUID. QEMU runs as root and writes the serial console's log itself (no virtlogd), in
    no cgroup of libvirt's (several daemons on one machine would share their names). Migrating
    between two such hosts, the source's daemon opens the destination's URI itself (peer to
    peer) and QEMU's stream goes over the hosts' network."""
    mounts = {target: root / target.strip("/").replace("/", "-") for target in HOST_MOUNTS}
    for directory in mounts.values():
        directory.mkdir(parents=True, exist_ok=True)
    etc = mounts["/etc/libvirt"]
    uuid_file = root / "host_uuid"
    if not uuid_file.exists():
        uuid_file.write_text(str(uuidlib.uuid4()))
    (etc / "libvirtd.conf").write_text(
        f'host_uuid = "{uuid_file.read_text().strip()}"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\nunix_sock_rw_perms = "0700"\n'
    )
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\nstdio_handler = "file"\ncgroup_controllers = [ ]\n'
    )
    daemon = root / HOST_DAEMON
    if not daemon.exists():
        daemon.symlink_to(shutil.which("libvirtd") or "/usr/sbin/libvirtd")
    for target in HOST_MOUNTS:  # the mount points, on the machine (libvirt's packages make them too)
        Path(target).mkdir(parents=True, exist_ok=True)
    script = "".join(f"mount --bind {source} {target} && " for target, source in mounts.items())
    script = f"hostname {hostname} && {script}exec {daemon} --pid-file {root / 'libvirtd.pid'}"
    argv = ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script]
    return argv, f"qemu+unix:///system?socket={mounts['/run/libvirt'] / 'libvirt-sock'}"
