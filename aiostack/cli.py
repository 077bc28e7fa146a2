"""The `aiostack` command: `up` runs a whole cloud, `run` one actor, `ping` asks an actor if it lives."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from aiostack.commands import add_client_commands, run_client_command
from aiostack.config import Config, default_data_dir
from aiostack.credentials import ADMIN, credentials_file
from aiostack.resource_commands import RESOURCES
from aiostack.run import ACTOR_NAMES
from bus import AiostackError, Bus
from bus.bus import DEFAULT_PREFIX


def _add_bus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where everything is kept")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="subject prefix (clouds sharing a NATS)")
    parser.add_argument("--log-level", default="INFO")


def _add_task_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-timeout",
        type=float,
        default=60.0,
        help="conductor: seconds a build or task may go without progress before it is resolved",
    )


def _add_guest_options(parser: argparse.ArgumentParser) -> None:
    """Options of nodes on a QEMU libvirt (real guests)."""
    parser.add_argument(
        "--virt-type",
        choices=("auto", "kvm", "qemu"),
        default="auto",
        help="QEMU accelerator: kvm, qemu (TCG), or auto: kvm only where KVM really runs a guest",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        help="seconds a guest gets to power off after ACPI shutdown before it is destroyed",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiostack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start nats-server and every actor; Ctrl-C stops them")
    _add_bus_options(up)
    up.add_argument("--nats", help="use this NATS instead of starting an embedded nats-server")
    up.add_argument("--nats-port", type=int, default=0, help="port of the embedded nats-server (0: free)")

    up.add_argument("--nodes", type=int, default=1, help="how many compute nodes to run")
    up.add_argument("--events-max-age", type=float, default=7 * 24 * 3600.0, help="seconds events are kept")
    up.add_argument("--events-max-bytes", type=int, default=1024**3, help="bytes of events kept")
    up.add_argument(
        "--libvirt",
        default="test",
        help="libvirt URI for the nodes; 'test' gives each node its own test-driver host",
    )
    up.add_argument(
        "--nodes-per-process",
        type=int,
        default=1,
        help="run this many test-driver nodes in each node process (default: one each)",
    )
    up.add_argument("--listen", default="127.0.0.1:8774", help="gateway address HOST:PORT (port 0: free)")
    _add_guest_options(up)
    _add_task_timeout(up)
    up.add_argument("--node-vcpus", type=int, default=128, help="vCPUs of each test-driver node")
    up.add_argument("--node-memory-mb", type=int, default=1024 * 1024, help="RAM of each test-driver node")

    run = commands.add_parser("run", help="run one actor, the gateway or a node as this process")
    _add_bus_options(run)
    run.add_argument("actor", choices=ACTOR_NAMES)
    run.add_argument("--nats", required=True, help="NATS URL")
    run.add_argument(
        "--credentials", type=Path, help="this process's NATS user file (<data>/credentials/<user>.json)"
    )
    run.add_argument("--host", action="append", help="node: the compute host's name (repeat for several)")
    run.add_argument("--libvirt", action="append", help="node: libvirt URI, one per --host")
    run.add_argument("--report-interval", type=float, default=10.0, help="node: seconds between heartbeats")
    _add_guest_options(run)
    _add_task_timeout(run)
    run.add_argument("--listen", default="127.0.0.1:8774", help="gateway: HOST:PORT to listen on")

    add_client_commands(commands, default_data_dir())

    audit = commands.add_parser("audit", help="check invariants across every actor; exit 1 if any is broken")
    _add_bus_options(audit)
    audit.add_argument("--nats", help="NATS URL (default: <data-dir>/nats.url, written by `aiostack up`)")
    audit.add_argument(
        "--credentials", type=Path, help="NATS user file (default: <data-dir>/credentials/admin.json)"
    )
    audit.add_argument("--json", action="store_true", help="one JSON line instead of text")

    ping = commands.add_parser("ping", help="ping an actor over the bus")
    _add_bus_options(ping)
    ping.add_argument("--nats", required=True)
    ping.add_argument(
        "--credentials", type=Path, help="NATS user file (default: <data-dir>/credentials/admin.json if any)"
    )
    ping.add_argument("actor", help="actor address, e.g. scheduler or node.host1")
    return parser


async def _ping(config: Config, address: str, credentials: Path | None) -> int:
    if credentials is None and credentials_file(config.data_dir, ADMIN).exists():
        credentials = credentials_file(config.data_dir, ADMIN)
    async with await Bus.connect(
        config.nats_url, prefix=config.prefix, name="aiostack-cli", credentials=credentials
    ) as bus:
        try:
            print(json.dumps(await bus.call(f"{address}.ping", timeout=5), indent=2))
        except AiostackError as exc:
            print(f"aiostack: {address}: {exc.code}: {exc}", file=sys.stderr)
            return 1
    return 0


def _read_nats_url(data_dir: Path) -> str:
    url_file = data_dir / "nats.url"
    if not url_file.exists():
        raise SystemExit(f"aiostack: no {url_file}: pass --nats, or run `aiostack up` with this data dir")
    return url_file.read_text().strip()


def _admin_credentials(data_dir: Path) -> Path | None:
    path = credentials_file(data_dir, ADMIN)
    return path if path.exists() else None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "WARNING")).upper(), logging.INFO),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    if args.command == "up":
        from aiostack.up import up

        raise SystemExit(asyncio.run(up(args)))
    if args.command in ("server", "events", *RESOURCES):
        try:
            raise SystemExit(asyncio.run(run_client_command(args)))
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    if args.command == "run":
        from aiostack.run import run_actor

        raise SystemExit(asyncio.run(run_actor(args)))
    if args.command == "audit":
        from aiostack.audit import run_audit

        nats_url = args.nats or _read_nats_url(args.data_dir)
        credentials = args.credentials or _admin_credentials(args.data_dir)
        raise SystemExit(asyncio.run(run_audit(args, nats_url, credentials)))
    config = Config(data_dir=args.data_dir, nats_url=args.nats, prefix=args.prefix)
    raise SystemExit(asyncio.run(_ping(config, args.actor, args.credentials)))


if __name__ == "__main__":
    main()
