"""A cloud on the multi-host harness (``deploy.hosts``): `aiostack up` on controller-1 against
the controllers' TLS NATS cluster (the event stream kept on all three) and the database host's
PostgreSQL; replicas of the actors whose state is all in the database, and a gateway, on the
other controllers (``REPLICATED``); a node on each compute host (`aiostack run node` with the
credentials `up --remote-node` made for it); hosts left for clients. What
`tests/test_cloud_across_hosts.py` and `bench/cluster.py` run.

A replica gets what joining will hand it (issue 14, not built yet: a join token), copied from
controller-1's data directory: its bus users' credentials and identity's token keys. image and
volume keep bytes in controller-1's data directory (shared image and volume storage are not
built), so they run there only.

    python -m deploy.cluster up [--computes 2] [--clients 1]   # as root; Ctrl-C tears it all down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.credentials import Credentials, Principal, prepare, trust
from deploy.hosts import Host, Hosts, build
from deploy.privacy import write_private
from deploy.run import stop_on_signals
from deploy.tls import CertificateAuthority
from deploy.up import child_specs
from node.testnode import write_test_node_file
from runtime.config import DATABASE_VARIABLE

PREFIX = "aiostack"
GATEWAY_PORT = 8774
REPLICATED = ("identity", "conductor", "scheduler", "net", "gateway")
"""The processes every controller runs."""
TASK_TIMEOUT = 20.0
"""The conductors' --task-timeout: a build whose conductor died is taken up again this soon."""
PYTHON = [sys.executable, "-m", "aiostack.cli"]


@dataclass(frozen=True)
class HarnessCloud:
    """The cloud on a harness: where its gateway is, its data directory and bus users."""

    hosts: Hosts
    url: str
    """The gateway, on controller-1's address (reachable from the harness's hosts only)."""
    data_dir: Path
    credentials: Credentials
    gateways: tuple[str, ...]
    """Every controller's gateway (controller-1's is ``url``)."""
    computes: tuple[str, ...]
    clients: tuple[str, ...]
    admin_password: str

    @property
    def controller(self) -> Host:
        return self.hosts.hosts["controller-1"]

    async def audit(self) -> str:
        """`aiostack audit` run on controller-1: its output (:raises HarnessError: not clean)."""
        return await self.controller.run(
            *PYTHON, "audit", "--data-dir", str(self.data_dir), "--log-level", "WARNING", timeout=120
        )


def principals(data_dir: Path, listen: str, computes: Sequence[str]) -> list[Principal]:
    """The bus users `aiostack up --nodes 0 --remote-node C...` makes for this cloud."""
    args = argparse.Namespace(
        task_timeout=TASK_TIMEOUT,
        listen=listen,
        nodes=0,
        nodes_per_process=1,
        libvirt="test",
        data_dir=data_dir,
    )
    remote = [Principal(host, "node", (host,)) for host in computes]
    return [spec.principal for spec in child_specs(args)] + remote


@contextlib.asynccontextmanager
async def cloud_on_hosts(
    workdir: Path | None = None, *, computes: int = 2, clients: int = 1, node_vcpus: int = 64
) -> AsyncIterator[HarnessCloud]:
    """Build the harness (3 controllers, ``computes`` + ``clients`` other hosts), start the cloud,
    return once every node is alive in the scheduler; tear everything down on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aiostack-cloud-")))
        data_dir = workdir / "control"
        compute_names = tuple(f"compute-{n}" for n in range(1, computes + 1))
        client_names = tuple(f"compute-{n}" for n in range(computes + 1, computes + clients + 1))
        listen = f"10.240.0.1:{GATEWAY_PORT}"
        credentials = prepare(data_dir, principals(data_dir, listen, compute_names), PREFIX)
        ca = CertificateAuthority(workdir / "ca")
        trust(data_dir, ca.pem)
        passwords = {f"AIOSTACK_{user}_PASSWORD": secrets.token_urlsafe(16) for user in ("ADMIN", "DEMO")}
        async with build(
            controllers=3,
            databases=1,
            computes=computes + clients,
            authorization=credentials.authorization,
            ca=workdir / "ca",
        ) as hosts:
            controller = hosts.hosts["controller-1"]
            assert controller.address == listen.split(":")[0]
            urls = ",".join(hosts.nats_urls)
            (database,) = hosts.databases.values()
            env = {**os.environ, DATABASE_VARIABLE: database.dsn}
            await controller.start(
                "aiostack-up",
                [
                    *PYTHON, "up", "--data-dir", str(data_dir), "--nats", urls,
                    "--nats-ca", str(ca.issued.certificate), "--event-replicas", "3", "--nodes", "0",
                    "--listen", listen, "--log-level", "WARNING", "--task-timeout", str(TASK_TIMEOUT),
                    *(arg for host in compute_names for arg in ("--remote-node", host)),
                ],
                env={**env, **passwords},
            )  # fmt: skip
            for name in compute_names:
                host = hosts.hosts[name]
                uri = write_test_node_file(
                    host.dir / "testnode.xml", vcpus=node_vcpus, memory_mb=1024 * node_vcpus
                )
                await host.start(
                    "node",
                    [
                        *PYTHON, "run", "node", "--host", name, "--libvirt", uri, "--nats", urls,
                        "--credentials", str(credentials.file(name)),
                        "--data-dir", str(host.dir / "aiostack"), "--log-level", "WARNING",
                    ],
                )  # fmt: skip
            async with asyncio.timeout(120):
                while not (data_dir / "gateway.url").exists():
                    await asyncio.sleep(0.1)
            replicas = [host for host in hosts.role("controller") if host is not controller]
            for host in replicas:
                await start_replicas(host, data_dir, credentials, urls, env)
            await controller.run(
                sys.executable, "-m", "deploy.cluster", "wait-for-hosts", "--nats", urls,
                "--credentials", str(credentials.file("admin")), *compute_names, timeout=150,
            )  # fmt: skip
            gateways = [f"http://{host.address}:{GATEWAY_PORT}" for host in replicas]
            await controller.run(
                sys.executable, "-m", "deploy.cluster", "wait-for-gateways", *gateways, timeout=90
            )  # fmt: skip
            yield HarnessCloud(
                hosts,
                f"http://{listen}",
                data_dir,
                credentials,
                (f"http://{listen}", *gateways),
                compute_names,
                client_names,
                passwords["AIOSTACK_ADMIN_PASSWORD"],
            )


async def start_replicas(
    host: Host, first: Path, credentials: Credentials, nats: str, env: dict[str, str]
) -> None:
    """Run ``REPLICATED`` on ``host``, its data directory given the credentials and token keys
    of controller-1's (``first``)."""
    data_dir = host.dir / "aiostack"
    (data_dir / "keys" / "token").mkdir(parents=True, mode=0o700)
    (data_dir / "credentials").mkdir(mode=0o700)
    for name in REPLICATED:
        write_private(data_dir / "credentials" / f"{name}.json", credentials.file(name).read_text())
    keys = first / "keys" / "token"
    for key in keys.iterdir():
        if key.is_file():
            write_private(data_dir / "keys" / "token" / key.name, key.read_bytes())
    for name in REPLICATED:
        options = {
            "gateway": ["--listen", f"{host.address}:{GATEWAY_PORT}"],
            "conductor": ["--task-timeout", str(TASK_TIMEOUT)],
        }.get(name, [])
        await host.start(
            name,
            [
                *PYTHON, "run", name, *options, "--nats", nats, "--data-dir", str(data_dir),
                "--credentials", str(data_dir / "credentials" / f"{name}.json"), "--log-level", "WARNING",
            ],
            env=env,
        )  # fmt: skip


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
    async with cloud_on_hosts(computes=args.computes, clients=args.clients) as cloud:
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
