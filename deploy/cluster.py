"""A cloud on the multi-host harness (``deploy.hosts``): `aiostack up` on controller-1 against
the controllers' TLS NATS cluster (the event stream kept on all three), a node on each compute
host (`aiostack run node` with the credentials `up --remote-node` made for it), and hosts left
for clients. What `tests/test_cloud_across_hosts.py` and `bench/cluster.py` run.

The control plane runs on one controller: replicas on every controller, PostgreSQL stores and
joining with a token are not built yet (issue 14).

    python -m deploy.cluster up [--computes 2] [--clients 1]   # as root; Ctrl-C tears it all down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.credentials import Credentials, Principal, prepare, trust
from deploy.hosts import Host, Hosts, build
from deploy.run import stop_on_signals
from deploy.tls import CertificateAuthority
from deploy.up import child_specs
from node.testnode import write_test_node_file

PREFIX = "aiostack"
GATEWAY_PORT = 8774
PYTHON = [sys.executable, "-m", "aiostack.cli"]


@dataclass(frozen=True)
class HarnessCloud:
    """The cloud on a harness: where its gateway is, its data directory and bus users."""

    hosts: Hosts
    url: str
    """The gateway, on controller-1's address (reachable from the harness's hosts only)."""
    data_dir: Path
    credentials: Credentials
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
        task_timeout=30.0, listen=listen, nodes=0, nodes_per_process=1, libvirt="test", data_dir=data_dir
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
            databases=0,
            computes=computes + clients,
            authorization=credentials.authorization,
            ca=workdir / "ca",
        ) as hosts:
            controller = hosts.hosts["controller-1"]
            assert controller.address == listen.split(":")[0]
            urls = ",".join(hosts.nats_urls)
            await controller.start(
                "aiostack-up",
                [
                    *PYTHON, "up", "--data-dir", str(data_dir), "--nats", urls,
                    "--nats-ca", str(ca.issued.certificate), "--event-replicas", "3", "--nodes", "0",
                    "--listen", listen, "--log-level", "WARNING",
                    *(arg for host in compute_names for arg in ("--remote-node", host)),
                ],
                env={**os.environ, **passwords},
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
            await controller.run(
                sys.executable, "-m", "deploy.cluster", "wait-for-hosts", "--nats", urls,
                "--credentials", str(credentials.file("admin")), *compute_names, timeout=150,
            )  # fmt: skip
            yield HarnessCloud(
                hosts,
                f"http://{listen}",
                data_dir,
                credentials,
                compute_names,
                client_names,
                passwords["AIOSTACK_ADMIN_PASSWORD"],
            )


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
    args = parser.parse_args(argv)
    if args.command == "wait-for-hosts":
        asyncio.run(wait_for_hosts(args.nats, args.credentials, args.hosts))
        return 0
    asyncio.run(_up(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
