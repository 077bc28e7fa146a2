"""A cloud on the multi-host harness (``deploy.hosts``), built the way an operator builds one:
`aiostack up --cluster` on controller-1 (its own nats-server, the database host's PostgreSQL),
then for each other host `aiostack cluster add NAME --role ...` there and `aiostack join TOKEN`
on the host: controllers 2 and 3 (their nats-servers routed to controller-1's, replicas of
``CONTROLLER_PROCESSES``), and a node on each compute host; hosts left for clients. What
`tests/test_cloud_across_hosts.py`, `tests/test_cluster_failures.py` and `bench/cluster.py`
run. Each controller is a storage host: a volume lives on the one whose volume actor made it,
and the nodes reach it over NBD.

    python -m deploy.cluster up [--computes 2] [--clients 1] [--guests 2]  # root; Ctrl-C tears down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.cluster import nats_url
from deploy.hosts import HarnessError, Host, Hosts, build
from deploy.members import JOIN_TOKEN_VARIABLE
from deploy.run import stop_on_signals
from runtime.config import DATABASE_VARIABLE

PREFIX = "aiostack"
GATEWAY_PORT = 8774
TASK_TIMEOUT = 20.0
"""The conductors' --task-timeout: a build whose conductor died is taken up again this soon."""
PYTHON = [sys.executable, "-m", "aiostack.cli"]


@dataclass(frozen=True)
class HarnessCloud:
    """The cloud on a harness: where its gateways are, controller-1's data directory."""

    hosts: Hosts
    url: str
    """The gateway, on controller-1's address (reachable from the harness's hosts only)."""
    data_dir: Path
    gateways: tuple[str, ...]
    """Every controller's gateway (controller-1's is ``url``)."""
    computes: tuple[str, ...]
    clients: tuple[str, ...]
    admin_password: str
    libvirt_uris: dict[str, str] = field(default_factory=dict)
    """The libvirtd of each compute host of real guests (``node.libvirtd.host_libvirtd``)."""

    @property
    def controller(self) -> Host:
        return self.hosts.hosts["controller-1"]

    @property
    def admin(self) -> Path:
        """The operator's bus credentials (on controller-1)."""
        return self.data_dir / "credentials" / "admin.json"

    @property
    def nats(self) -> str:
        """Every controller's nats-server."""
        return ",".join(self.hosts.nats_urls)

    async def cli(self, *args: str, timeout: float = 120.0) -> str:
        """`aiostack ARGS` run on controller-1 as its operator: its output."""
        return await self.controller.run(
            *PYTHON, *args, "--data-dir", str(self.data_dir), "--log-level", "WARNING", timeout=timeout
        )

    async def audit(self) -> str:
        """`aiostack audit` run on controller-1: its output (:raises HarnessError: not clean)."""
        return await self.cli("audit")

    async def join(self, name: str, role: str, *options: str) -> None:
        """`aiostack cluster add` on controller-1, `aiostack join` (running on) host ``name``, its token
        in the environment."""
        added = json.loads(
            (await self.cli("cluster", "add", name, "--role", role, "--json")).splitlines()[-1]
        )
        host = self.hosts.hosts[name]
        await host.start(
            "aiostack-join",
            [*PYTHON, "join", "--data-dir", str(data_dir_of(host)), "--log-level", "WARNING", *options],
            env={**os.environ, JOIN_TOKEN_VARIABLE: added["token"]},
        )

    def kill_nats_server(self, name: str) -> None:
        """SIGKILL host ``name``'s nats-server (its supervisor starts it again two seconds later)."""
        directory = (
            self.data_dir if name == "controller-1" else data_dir_of(self.hosts.hosts[name])
        ) / "nats"
        for ports in directory.glob("nats-server_*.ports"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(ports.stem.rsplit("_", 1)[1]), signal.SIGKILL)


async def start_host_libvirtd(host: Host, timeout: float = 60.0) -> str:
    """Start the host's own libvirtd (``node.libvirtd.host_libvirtd``) in its namespace; its URI
    once it answers."""
    from node.libvirtd import answers, host_libvirtd  # libvirt-python: hosts of real guests only

    argv, uri = host_libvirtd(host.dir / "libvirt", host.name)
    await host.start("libvirtd", argv)
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(answers, uri):
            await asyncio.sleep(0.2)
    return uri


def data_dir_of(host: Host) -> Path:
    """Where `aiostack join` keeps a host's data."""
    return host.dir / "aiostack"


@contextlib.asynccontextmanager
async def cloud_on_hosts(
    *, computes: int = 2, clients: int = 1, node_vcpus: int = 64, guests: int = 0
) -> AsyncIterator[HarnessCloud]:
    """Build the harness (3 controllers, ``computes`` + ``clients`` other hosts), start the cloud
    and let every host join it; return once every host is alive in the cluster and every node
    in the scheduler; tear everything down on exit. The first ``guests`` compute hosts run real
    QEMU guests, each host with a libvirtd of its own (``start_host_libvirtd``: QEMU in the host's
    namespace, guests live-migrating between the hosts; tenant networks as VXLAN segments between
    them); the others test-driver nodes."""
    async with build(controllers=3, databases=1, computes=computes + clients, nats=False) as hosts:
        controller = hosts.hosts["controller-1"]
        data_dir = data_dir_of(controller)
        compute_names = tuple(f"compute-{n}" for n in range(1, computes + 1))
        client_names = tuple(f"compute-{n}" for n in range(computes + 1, computes + clients + 1))
        listen = f"{controller.address}:{GATEWAY_PORT}"
        passwords = {f"AIOSTACK_{user}_PASSWORD": secrets.token_urlsafe(16) for user in ("ADMIN", "DEMO")}
        (database,) = hosts.databases.values()
        await controller.start(
            "aiostack-up",
            [
                *PYTHON, "up", "--data-dir", str(data_dir), "--cluster", controller.address,
                "--host-name", controller.name, "--nodes", "0", "--listen", listen,
                "--log-level", "WARNING", "--task-timeout", str(TASK_TIMEOUT),
            ],
            env={**os.environ, DATABASE_VARIABLE: database.dsn, **passwords},
        )  # fmt: skip
        replicas = [host for host in hosts.role("controller") if host is not controller]
        hosts.nats_urls = [nats_url(host.address) for host in hosts.role("controller")]
        cloud = HarnessCloud(
            hosts,
            f"http://{listen}",
            data_dir,
            (f"http://{listen}", *(f"http://{host.address}:{GATEWAY_PORT}" for host in replicas)),
            compute_names,
            client_names,
            passwords["AIOSTACK_ADMIN_PASSWORD"],
        )
        async with asyncio.timeout(60):
            while not (data_dir / "nats.url").exists():
                await asyncio.sleep(0.1)
        for host in replicas:
            await cloud.join(host.name, "controller", "--task-timeout", str(TASK_TIMEOUT))
        memory = str(1024 * node_vcpus)
        for number, name in enumerate(compute_names):
            if number < guests:
                uri = cloud.libvirt_uris[name] = await start_host_libvirtd(hosts.hosts[name])
                await cloud.join(name, "compute", "--libvirt", uri, "--virt-type", "qemu")
            else:
                await cloud.join(name, "compute", "--node-vcpus", str(node_vcpus), "--node-memory-mb", memory)
        try:
            await controller.run(
                sys.executable, "-m", "deploy.cluster", "wait-for-members", "--data-dir", str(data_dir),
                *(host.name for host in hosts.role("controller")), *compute_names, timeout=180,
            )  # fmt: skip
        except HarnessError as exc:
            logs = [host.dir / "logs" / "aiostack-join.log" for host in hosts.hosts.values()]
            tails = [f"{log}:\n{log.read_text(errors='replace')[-1500:]}" for log in logs if log.exists()]
            raise HarnessError("\n".join([str(exc), *tails])) from None
        await controller.run(
            sys.executable, "-m", "deploy.cluster", "wait-for-hosts", "--nats", cloud.nats,
            "--credentials", str(cloud.admin), *compute_names, timeout=150,
        )  # fmt: skip
        await controller.run(
            sys.executable, "-m", "deploy.cluster", "wait-for-gateways", *cloud.gateways, timeout=90
        )
        yield cloud


async def wait_for_gateways(urls: Sequence[str], timeout: float = 60.0) -> None:
    """Return once every gateway of ``urls`` answers its version document."""
    import aiohttp

    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        for url in urls:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status < 500:
                            break
                await asyncio.sleep(0.1)


async def wait_for_stream(
    nats: str, credentials: Path, *, current: bool, timeout: float = 60.0
) -> dict[str, Any]:
    """Once the event stream has a leader (a new one takes seconds after a loss) and, with
    ``current``, two replicas caught up with it: its leader's and replicas' servers."""
    from bus import Bus

    async with await Bus.connect(nats, credentials=credentials, name="wait-for-stream") as bus:
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(Exception):
                    cluster = (await bus.nc.jetstream().stream_info(bus.event_stream)).cluster
                    replicas = (cluster.replicas or []) if cluster else []
                    caught_up = len(replicas) == 2 and all(peer.current for peer in replicas)
                    if cluster and cluster.leader and (caught_up or not current):
                        return {"leader": cluster.leader, "replicas": sorted(peer.name for peer in replicas)}
                await asyncio.sleep(0.2)


async def wait_for_members(data_dir: Path, names: Sequence[str], timeout: float = 120.0) -> None:
    """Return once the cluster counts every host of ``names`` joined, alive, every process running."""
    from api.cluster import Cluster
    from bus import Bus

    nats = (data_dir / "nats.url").read_text().strip()
    async with await Bus.connect(nats, credentials=data_dir / "credentials" / "admin.json") as bus:
        cluster = Cluster.client(bus, timeout=5)
        listed: list[Any] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(Exception):
                        listed = await cluster.list_hosts()
                        ready = {
                            host["name"]
                            for host in listed
                            if host["alive"] and set(host["processes"].values()) == {"running"}
                        }
                        if ready >= set(names):
                            return
                    await asyncio.sleep(0.5)
        except TimeoutError:
            raise SystemExit(f"not every host is ready after {timeout:.0f} s: {json.dumps(listed)}") from None


async def wait_for_hosts(nats: str, credentials: Path, names: Sequence[str], timeout: float = 120.0) -> None:
    """Return once the scheduler counts every host of ``names`` alive."""
    from api.scheduler import SchedulerReader
    from bus import Bus

    async with await Bus.connect(nats, credentials=credentials, name="wait-for-hosts") as bus:
        scheduler = SchedulerReader.client(bus, timeout=2)
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(Exception):
                    alive = {host["host"] for host in await scheduler.list_hosts() if host["alive"]}
                    if alive >= set(names):
                        return
                await asyncio.sleep(0.2)


async def _up(args: argparse.Namespace) -> None:
    async with cloud_on_hosts(computes=args.computes, clients=args.clients, guests=args.guests) as cloud:
        client = cloud.hosts.hosts[cloud.clients[0]] if cloud.clients else cloud.controller
        print(f"gateway {cloud.url} (from inside the harness), data in {cloud.data_dir}")
        print(
            f"nodes on {', '.join(cloud.computes)}; the admin password (shown once): {cloud.admin_password}"
        )
        print(
            f"  AIOSTACK_URL={cloud.url} OS_USERNAME=admin OS_PROJECT_NAME=admin OS_PASSWORD=..."
            f" ip netns exec {client.namespace} {PYTHON[0]} -m aiostack.cli server list"
        )
        print("Ctrl-C tears everything down")
        await stop_on_signals().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="a cloud on a new harness, until Ctrl-C")
    up.add_argument("--computes", type=int, default=2)
    up.add_argument("--clients", type=int, default=1)
    up.add_argument(
        "--guests",
        type=int,
        default=0,
        help="how many of the compute hosts run real QEMU guests (VXLAN between them)",
    )
    members = commands.add_parser(
        "wait-for-members", help="wait until these hosts are joined and alive, every process running"
    )
    members.add_argument("--data-dir", type=Path, required=True)
    members.add_argument("hosts", nargs="+")
    wait = commands.add_parser("wait-for-hosts", help="wait until the scheduler counts these hosts alive")
    wait.add_argument("--nats", required=True)
    wait.add_argument("--credentials", type=Path, required=True)
    wait.add_argument("hosts", nargs="+")
    gateways = commands.add_parser("wait-for-gateways", help="wait until these gateways answer")
    gateways.add_argument("urls", nargs="+")
    stream = commands.add_parser(
        "wait-for-stream", help="wait until the event stream has a leader; print it and its replicas (JSON)"
    )
    stream.add_argument("--nats", required=True)
    stream.add_argument("--credentials", type=Path, required=True)
    stream.add_argument("--current", action="store_true", help="and two replicas caught up with it")
    args = parser.parse_args(argv)
    if args.command == "wait-for-stream":
        print(json.dumps(asyncio.run(wait_for_stream(args.nats, args.credentials, current=args.current))))
        return 0
    if args.command == "wait-for-members":
        asyncio.run(wait_for_members(args.data_dir, args.hosts))
        return 0
    if args.command == "wait-for-gateways":
        asyncio.run(wait_for_gateways(args.urls))
        return 0
    if args.command == "wait-for-hosts":
        asyncio.run(wait_for_hosts(args.nats, args.credentials, args.hosts))
        return 0
    asyncio.run(_up(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
