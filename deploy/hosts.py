"""Many hosts on one machine: each host a network namespace with its own address, data
directory and processes, all joined by one bridge (the harness of issue 14's cluster).

Nothing is added to the machine's own network: the bridge lives in a namespace of its own
(the *fabric*), and each host's ``eth0`` is a veth whose peer is a port of that bridge.
Addresses are ``10.240.0.0/24`` (``.1`` the first host, in the order added), reachable only from
inside the harness's namespaces; each fabric is separate, so harnesses may run side by side.
Namespaces are named ``aiostack-<tag>-<host>`` (the fabric ``aiostack-<tag>-fabric``), so a
harness left behind by a crash is found by its tag (its directory holds it in ``tag``):
``python -m deploy.hosts clean [--tag TAG]`` removes its namespaces, processes and directory.

Roles (``build``): **controllers** run one nats-server each, the three clustered by routes
(``nats_cluster``), the JetStream store in the host's directory; the **database** host runs
PostgreSQL from Debian's package (``initdb`` in its directory, owned by the ``postgres`` user as
Debian's ``/var/lib/postgresql`` is, listening on its address only, SCRAM passwords;
``start_postgres``); **compute** hosts get an address and a directory, for nodes to run in
(a node's DHCP namespaces are named after its host's, ``aiostack-<tag>-<host>-dhcp-<network>``,
so they go with the harness).

A host's processes are started with ``nsenter --net`` (the host's network, the machine's mounts:
namespaces a node makes, ``ip netns add``, are seen and removed by the harness; ``ip netns exec``
would give each process mounts of its own) in a session of their own, logging to
``<host dir>/logs/<name>.log``; ``close`` stops them (SIGTERM, then SIGKILL), kills whatever
else still runs in the namespaces, deletes the namespaces and the harness's directory.

Developer command (as root)::

    python -m deploy.hosts up [--controllers 3] [--computes 2] [--dir DIR]   # Ctrl-C tears down
    python -m deploy.hosts clean [--tag TAG]                                 # what a crash left
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.cluster import NATS_PORT, ROUTE_PORT, nats_url, route_url
from bus.server import authorization_config, cluster_config, find_nats_server
from deploy import postgres
from deploy.privacy import write_private
from deploy.run import stop_on_signals
from deploy.tls import CertificateAuthority

log = logging.getLogger(__name__)

PREFIX = "aiostack-"
SUBNET = ipaddress.IPv4Network("10.240.0.0/24")
POSTGRES_PORT = 5432
SERVER_PING_INTERVAL = "1s"
"""How often a nats-server pings its clients and routes (2 unanswered: the peer is dead), so a
cut link is noticed in seconds (nats-server's default is 2 minutes)."""
STOP_GRACE = 5.0
"""Seconds a process gets between SIGTERM and SIGKILL."""


class HarnessError(Exception):
    """The harness could not build or run what was asked (the command's output says why)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def harness_namespaces(tag: str | None = None) -> list[str]:
    """The namespaces of the harness ``tag`` (every harness's when None)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    start = f"{PREFIX}{tag}-" if tag else PREFIX
    return [name for name in names if name.startswith(start)]


def _namespace_pids(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def kill_namespace(namespace: str, wait: float = 10.0) -> None:
    """SIGKILL every process in the namespace, again until none is left (at most ``wait`` s)."""
    deadline = time.monotonic() + wait
    while (pids := _namespace_pids(namespace)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_namespaces(namespaces: Iterable[str], wait: float = 10.0) -> None:
    """Kill every process in each namespace, wait (at most ``wait`` s) until none is left, delete it."""
    for namespace in namespaces:
        kill_namespace(namespace, wait)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def harness_dirs(tag: str | None = None) -> list[Path]:
    """The directories in the temporary folder of the harness ``tag`` (every harness's when None)."""
    found = []
    for candidate in Path(tempfile.gettempdir()).glob("aiostack-hosts-*"):
        with contextlib.suppress(OSError):
            if tag is None or (candidate / "tag").read_text().strip() == tag:
                found.append(candidate)
    return found


@dataclass
class Host:
    """One host: a namespace, an address on the fabric, a directory, the processes started there."""

    name: str
    role: str
    namespace: str
    address: str
    dir: Path
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    started: dict[str, tuple[list[str], dict[str, str] | None, str | None]] = field(default_factory=dict)
    """How each process was started (argv, environment, user): what ``revive`` starts again."""

    def command(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """``argv`` as run inside this host (as ``user`` when given)."""
        as_user = ["runuser", "-u", user, "--"] if user else []
        return ["nsenter", f"--net=/run/netns/{self.namespace}", "--", *as_user, *argv]

    async def start(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None
    ) -> asyncio.subprocess.Process:
        """Start a long-running process ``name`` on this host; its output goes to ``logs/<name>.log``."""
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        output = os.open(logs / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(argv, user),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(output)
        self.processes[name] = process
        self.started[name] = (list(argv), env, user)
        return process

    async def kill(self, name: str | None = None) -> None:
        """SIGKILL the process ``name`` (its session); without a name, every process of this host at
        once, as when it loses power."""
        if name is not None:
            process = self.processes[name]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return
        await asyncio.to_thread(kill_namespace, self.namespace)
        for process in self.processes.values():
            await process.wait()

    def cut(self) -> None:
        """Cut this host's link to the fabric (a partition): its processes run on, unreachable."""
        _ip("-n", self.namespace, "link", "set", "eth0", "down")

    def mend(self) -> None:
        """Restore this host's link to the fabric."""
        _ip("-n", self.namespace, "link", "set", "eth0", "up")

    async def revive(self) -> None:
        """Start again, in the order first started, every process of this host that is not running."""
        for name, (argv, env, user) in list(self.started.items()):
            process = self.processes.get(name)
            if process is None or process.returncode is not None:
                await self.start(name, argv, env=env, user=user)

    async def run(
        self, *argv: str, timeout: float = 60.0, user: str | None = None, env: dict[str, str] | None = None
    ) -> str:
        """Run ``argv`` on this host to its end; its output.

        :raises HarnessError: it failed or did not end within ``timeout`` seconds.
        """
        process = await asyncio.create_subprocess_exec(
            *self.command(argv, user),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise HarnessError(f"{self.name}: {' '.join(argv)} did not end within {timeout} s") from None
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise HarnessError(f"{self.name}: {' '.join(argv)} exited {process.returncode}:\n{text[-2000:]}")
        return text

    async def stop(self, name: str) -> None:
        """Stop one process (SIGTERM to its session, SIGKILL after ``STOP_GRACE`` seconds)."""
        process = self.processes.pop(name)
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


class Hosts:
    """A harness: the fabric and the hosts added to it. ``close()`` leaves nothing behind."""

    def __init__(self, root: Path, tag: str | None = None) -> None:
        self.root = root
        self.tag = tag or secrets.token_hex(3)
        self.fabric = f"{PREFIX}{self.tag}-fabric"
        self.hosts: dict[str, Host] = {}
        self.nats_urls: list[str] = []
        """The controllers' nats-servers, once ``nats_cluster`` started them."""
        self.databases: dict[str, Database] = {}
        """PostgreSQL servers by host, once ``start_postgres`` started them."""
        self._addresses = SUBNET.hosts()

    async def open(self) -> None:
        """Make the fabric: a namespace holding the bridge every host is plugged into."""
        self.root.mkdir(parents=True, exist_ok=True)
        # traversable, not listable: the database host's directory belongs to the postgres user
        self.root.chmod(0o711)
        (self.root / "tag").write_text(self.tag + "\n")
        _ip("netns", "add", self.fabric)
        # no multicast snooping: the hosts' VXLAN devices flood through their group (node.overlay)
        _ip("-n", self.fabric, "link", "add", "fabric", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.fabric, "link", "set", "fabric", "up")

    def add(self, name: str, role: str) -> Host:
        """Plug a new host into the fabric: its namespace, ``eth0`` with the next address, ``lo`` up."""
        if name in self.hosts:
            raise HarnessError(f"host {name} exists already")
        namespace = f"{PREFIX}{self.tag}-{name}"
        port = f"port{len(self.hosts)}"
        address = str(next(self._addresses))
        _ip("netns", "add", namespace)
        _ip(
            "link",
            "add",
            "eth0",
            "netns",
            namespace,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.fabric,
        )
        _ip("-n", self.fabric, "link", "set", port, "master", "fabric")
        _ip("-n", self.fabric, "link", "set", port, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        directory = self.root / name
        directory.mkdir(mode=0o700)
        host = self.hosts[name] = Host(name, role, namespace, address, directory)
        return host

    def role(self, role: str) -> list[Host]:
        return [host for host in self.hosts.values() if host.role == role]

    async def close(self, *, keep_dir: bool = False) -> None:
        """Stop every process, delete every namespace and (unless ``keep_dir``) the directory."""
        for host in reversed(list(self.hosts.values())):
            for name in reversed(list(host.processes)):
                await host.stop(name)
        namespaces = [*(host.namespace for host in self.hosts.values()), self.fabric]
        namespaces += [name for name in harness_namespaces(self.tag) if name not in namespaces]
        await asyncio.to_thread(remove_namespaces, namespaces)
        if not keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)


async def nats_cluster(
    controllers: Sequence[Host],
    *,
    authorization: Mapping[str, Any] | None = None,
    ca: CertificateAuthority | None = None,
    binary: str | None = None,
) -> list[str]:
    """One nats-server per controller, clustered by routes to each other (JetStream on); their URLs.

    ``authorization``: nats-server's users and permissions (``deploy.credentials``), on every
    server. ``ca``: clients and routes are TLS with certificates it signs for each controller
    (routes verify each other's), and clients must trust it (``deploy.credentials.trust``).
    """
    nats = binary or find_nats_server()
    routes = [route_url(host.address) for host in controllers]
    for host in controllers:
        store = host.dir / "nats"
        store.mkdir(mode=0o700, exist_ok=True)
        text = (
            f'listen: "{host.address}:{NATS_PORT}"\n'
            f"max_payload: {8 * 1024 * 1024}\n"
            f'jetstream {{ store_dir: "{store / "jetstream"}" }}\n'
        )
        if ca is not None:
            issued = ca.issue_server(host.name, [host.address], store / "tls")
            text += cluster_config(
                server_name=host.name,
                address=host.address,
                route_port=ROUTE_PORT,
                routes=routes,
                certificate=issued.certificate,
                key=issued.key,
                ca=ca.issued.certificate,
                ping_interval=SERVER_PING_INTERVAL,
            )
        else:
            text += (
                f'server_name: "{host.name}"\n'
                f'ping_interval: "{SERVER_PING_INTERVAL}"\nping_max: 2\n'
                f'cluster {{ name: "aiostack", listen: "{host.address}:{ROUTE_PORT}",'
                f" routes: {json.dumps(routes)} }}\n"
            )
        if authorization is not None:
            text += authorization_config(authorization)
        config = store / "nats-server.conf"
        write_private(config, text)
        await host.start("nats-server", [nats, "-c", str(config)])
    urls = [nats_url(host.address) for host in controllers]
    for host in controllers:
        await wait_listening(host, host.address, NATS_PORT)
    return urls


@dataclass(frozen=True)
class Database:
    """A PostgreSQL server the harness runs: its address and the ``aiostack`` role's password."""

    host: str
    port: int
    password: str

    @property
    def dsn(self) -> str:
        return f"postgresql://aiostack:{self.password}@{self.host}:{self.port}/aiostack"


async def start_postgres(host: Host) -> Database:
    """initdb in ``<host dir>/postgres`` and run PostgreSQL on the host's address; a database
    ``aiostack`` owned by a role ``aiostack`` with a new password (in ``password``, 0600)."""
    data = host.dir / "postgres"
    password_file, password = postgres.prepare(host.dir)
    await host.run(*postgres.initdb_argv(data, password_file), user=postgres.server_user())
    hba = data / "pg_hba.conf"
    hba.write_text(hba.read_text() + f"host all all {SUBNET} scram-sha-256\n")
    argv = postgres.server_argv(data, listen=host.address, port=POSTGRES_PORT, socket_dir=host.dir)
    await host.start("postgres", argv, user=postgres.server_user())
    await wait_postgres_ready(host)
    await host.run(
        str(postgres.POSTGRES_BIN / "psql"), "-h", host.address, "-p", str(POSTGRES_PORT),
        "-U", postgres.ROLE, "-d", "postgres", "-c", f"CREATE DATABASE {postgres.DATABASE}",
        env={**os.environ, "PGPASSWORD": password},
    )  # fmt: skip
    return Database(host.address, POSTGRES_PORT, password)


async def wait_postgres_ready(host: Host, timeout: float = 30.0) -> None:
    """Return once PostgreSQL on ``host`` takes connections: listening is not enough, it refuses
    them ("the database system is starting up") until its start-up is done."""
    ready = (str(postgres.POSTGRES_BIN / "pg_isready"), "-q", "-h", host.address, "-p", str(POSTGRES_PORT))
    end = time.monotonic() + timeout
    while True:
        try:
            await host.run(*ready)
            return
        except HarnessError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


async def wait_listening(host: Host, address: str, port: int, timeout: float = 30.0) -> None:
    """Return once ``address:port`` accepts a TCP connection from inside ``host``."""
    probe = (
        "import socket, sys, time\n"
        f"end = time.monotonic() + {timeout}\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(({address!r}, {port}), timeout=1).close(); break\n"
        "    except OSError:\n"
        f"        if time.monotonic() > end: sys.exit('nothing listens on {address}:{port}')\n"
        "        time.sleep(0.05)\n"
    )
    await host.run(sys.executable, "-c", probe, timeout=timeout + 5)


@contextlib.asynccontextmanager
async def build(
    root: Path | None = None,
    *,
    controllers: int = 3,
    databases: int = 1,
    computes: int = 2,
    authorization: Mapping[str, Any] | None = None,
    ca: Path | None = None,
    nats: bool = True,
) -> AsyncIterator[Hosts]:
    """A harness of ``controllers`` (a NATS cluster), ``databases`` (PostgreSQL) and ``computes``
    hosts, torn down on exit. ``root``: a new directory in the system's temporary folder.
    ``authorization`` and ``ca`` (the CA's directory, made there if new) as ``nats_cluster`` takes them;
    ``nats=False``: no nats-server (the controllers run their own: `aiostack up --cluster`, `join`)."""
    hosts = Hosts(root or Path(tempfile.mkdtemp(prefix="aiostack-hosts-")))
    try:
        await hosts.open()
        for number in range(1, controllers + 1):
            hosts.add(f"controller-{number}", "controller")
        for number in range(1, databases + 1):
            hosts.add(f"database-{number}" if databases > 1 else "database", "database")
        for number in range(1, computes + 1):
            hosts.add(f"compute-{number}", "compute")
        if controllers and nats:
            authority = CertificateAuthority(ca) if ca is not None else None
            hosts.nats_urls = await nats_cluster(
                hosts.role("controller"), authorization=authorization, ca=authority
            )
        for host in hosts.role("database"):
            hosts.databases[host.name] = await start_postgres(host)
        yield hosts
    finally:
        await hosts.close()


async def _up(args: argparse.Namespace) -> None:
    root = Path(args.dir) if args.dir else None
    async with build(root, controllers=args.controllers, computes=args.computes) as hosts:
        for host in hosts.hosts.values():
            print(f"{host.name:14} {host.role:10} {host.address:12} ip netns exec {host.namespace} ...")
        print("NATS:", ",".join(hosts.nats_urls))
        for name, database in hosts.databases.items():
            where = f"postgresql://aiostack@{database.host}:{database.port}/aiostack"
            print(f"PostgreSQL on {name}: {where} (password in {hosts.hosts[name].dir / 'password'})")
        print(f"directory {hosts.root}; Ctrl-C tears everything down")
        await stop_on_signals().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.hosts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a harness and keep it until Ctrl-C")
    up.add_argument("--controllers", type=int, default=3)
    up.add_argument("--computes", type=int, default=2)
    up.add_argument(
        "--dir",
        help="the harness's directory (default: a new one in the temporary folder); the postgres user"
        " must be able to pass through its parents",
    )
    clean = commands.add_parser("clean", help="delete harness namespaces (and kill what runs in them)")
    clean.add_argument("--tag", help="only this harness's (the part after aiostack- in its names)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("network namespaces need root")
    if args.command == "clean":
        left, dirs = harness_namespaces(args.tag), harness_dirs(args.tag)
        remove_namespaces(left)
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)
        print(f"removed {len(left)} namespaces and {len(dirs)} directories")
        return 0
    asyncio.run(_up(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
