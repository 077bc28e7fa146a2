"""The server side of the `aiostack` command: `up`, `run`, `audit`, `ping`, `token`, `join`, `cluster`.

Each is an ``aiostack.commands`` entry point (pyproject.toml): a function that adds its
parser to the `aiostack` command's subcommands and returns what runs it, so the CLI itself
imports nothing of the server and works without it installed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus import AiostackError, Bus
from bus.api import liveness
from bus.bus import DEFAULT_PREFIX
from deploy.config_file import CONFIG_NAME, ConfigError, apply_config, save_first_config
from deploy.credentials import ADMIN, credentials_file
from deploy.gateway_tls import GENERATE
from deploy.run import ACTOR_NAMES, token_key_settings
from runtime.config import DATABASE_VARIABLE, Config, default_data_dir
from runtime.logs import LOG_FORMATS, configure_logging

Runner = Callable[[argparse.Namespace], int]


def _add_bus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where everything is kept")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="subject prefix (clouds sharing a NATS)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (every process)")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text, or json: one object per line"
    )


def process_label(args: argparse.Namespace) -> str:
    """What `aiostack run`'s process is called in its logs: the actor, and a node's hosts."""
    hosts: list[str] = args.host or []
    if not hosts:
        return str(args.actor)
    return f"{args.actor}:{hosts[0]}" + (f"+{len(hosts) - 1}" if len(hosts) > 1 else "")


def _add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="DSN",
        default=os.environ.get(DATABASE_VARIABLE) or None,
        help="PostgreSQL the stateful actors share: postgresql://USER@HOST:PORT/DB (a password in"
        f" ${DATABASE_VARIABLE}, PGPASSWORD or ~/.pgpass rather than on the command line); default"
        f" ${DATABASE_VARIABLE}, else a sqlite file each in the data directory",
    )


def _add_task_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-timeout",
        type=float,
        default=60.0,
        help="conductor: seconds a build or task may go without progress before it is resolved",
    )


def _add_token_key_options(parser: argparse.ArgumentParser) -> None:
    """The identity actor's token key rotation schedule."""
    parser.add_argument(
        "--token-key-rotation",
        type=float,
        metavar="HOURS",
        help="identity: rotate the token keys every HOURS (default: only by `aiostack token rotate-keys`)",
    )
    parser.add_argument(
        "--max-active-keys",
        type=int,
        metavar="N",
        help="identity: token keys kept (default 3, or what --token-key-rotation needs: (token lifetime"
        " + 2-day stale window) / period + 2; fewer is refused)",
    )


def _add_resize_confirm_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resize-confirm-window",
        type=float,
        default=0.0,
        help="conductor: seconds after which a resized server (VERIFY_RESIZE) is confirmed by"
        " itself (Nova's resize_confirm_window); 0: never",
    )
    parser.add_argument(
        "--shelved-offload-time",
        type=float,
        default=0.0,
        help="conductor: seconds after which a shelved server is offloaded (its host's resources"
        " freed; Nova's shelved_offload_time); 0: at once, -1: never",
    )


def _add_test_node_options(parser: argparse.ArgumentParser) -> None:
    """The size of a test-driver node's simulated host, and how fast it migrates a guest live."""
    parser.add_argument("--node-vcpus", type=int, default=128, help="vCPUs of each test-driver node")
    parser.add_argument(
        "--node-memory-mb", type=int, default=1024 * 1024, help="RAM of each test-driver node"
    )
    _add_migration_bandwidth(parser)


def _add_migration_bandwidth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--migration-bandwidth",
        type=float,
        default=0.0,
        metavar="MB_PER_S",
        help="test-driver node: the rate at which a live migration copies a guest's memory (0: at once)",
    )


def _add_trusted_proxy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        type=ipaddress.ip_network,
        metavar="CIDR",
        help="gateway: a reverse proxy whose X-Forwarded-Proto/-Host the URLs handed out follow (repeatable)",
    )


def _add_guest_options(parser: argparse.ArgumentParser, *, containers: bool = False) -> None:
    """Options of nodes on a QEMU libvirt (real guests); ``containers``: or of LXC nodes."""
    parser.add_argument(
        "--virt-type",
        choices=("auto", "kvm", "qemu", *(("lxc",) if containers else ())),
        default="auto",
        help="QEMU accelerator: kvm, qemu (TCG), or auto: kvm only where KVM really runs a guest"
        + ("; lxc: the node runs system containers (liblxc), not a libvirt host" if containers else ""),
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        help="seconds a guest gets to power off after ACPI shutdown before it is destroyed",
    )
    parser.add_argument(
        "--image-cache-max-age",
        type=float,
        default=86400.0,
        help="seconds a cached image no guest of the node uses is kept after its last use",
    )


def up(commands: Any) -> Runner:
    """`aiostack up`: nats-server and every process of the cloud."""
    parser = commands.add_parser("up", help="start nats-server and every actor; Ctrl-C stops them")
    _add_bus_options(parser)
    parser.add_argument(
        "--config",
        type=Path,
        help=f"settings (TOML; default: <data-dir>/{CONFIG_NAME}, written at the first start); flags win",
    )
    parser.add_argument("--nats", help="use this NATS instead of starting an embedded nats-server")
    parser.add_argument("--nats-port", type=int, default=0, help="port of the embedded nats-server (0: free)")
    parser.add_argument(
        "--nats-ca",
        type=Path,
        help="with --nats: the CA certificate (PEM) of that NATS's TLS; every process trusts it alone",
    )
    parser.add_argument(
        "--event-replicas", type=int, help="servers of a NATS cluster that keep the event stream (default 1)"
    )
    _add_database_option(parser)
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="start a cluster, this machine its first controller: its nats-server on ADDRESS (TLS with"
        " a CA made here, routes to the controllers that join); needs --database; hosts join with"
        " `aiostack cluster add` here and `aiostack join TOKEN` there",
    )
    parser.add_argument(
        "--host-name", default=socket.gethostname(), help="with --cluster: this host's name in the cluster"
    )
    parser.add_argument("--nodes", type=int, default=1, help="how many compute nodes to run")
    parser.add_argument(
        "--lxc-nodes",
        type=int,
        default=0,
        help="how many LXC nodes to run besides (lxc-1...): their instances are system containers, of"
        " the flavors whose extra spec capabilities:hypervisor_type is lxc",
    )
    parser.add_argument(
        "--remote-node",
        action="append",
        default=[],
        metavar="HOST",
        help="make bus credentials for a node that runs elsewhere (`aiostack run node --host HOST"
        " --credentials <data>/credentials/HOST.json`); repeatable",
    )
    parser.add_argument(
        "--events-max-age", type=float, default=7 * 24 * 3600.0, help="seconds events are kept"
    )
    parser.add_argument("--events-max-bytes", type=int, default=1024**3, help="bytes of events kept")
    parser.add_argument(
        "--libvirt",
        default="test",
        help="libvirt URI for the nodes; 'test' gives each node its own test-driver host",
    )
    parser.add_argument(
        "--nodes-per-process",
        type=int,
        default=1,
        help="run this many test-driver nodes in each node process (default: one each)",
    )
    parser.add_argument("--listen", default="127.0.0.1:8774", help="gateway address HOST:PORT (port 0: free)")
    parser.add_argument(
        "--tls-cert",
        help="serve the gateway over HTTPS with this certificate (PEM chain; with --tls-key), or 'generate':"
        " a CA made in <data-dir>/tls/gateway-ca signs one for the listen address, and the clients trust it",
    )
    parser.add_argument("--tls-key", type=Path, help="the private key (PEM) of --tls-cert")
    _add_trusted_proxy(parser)
    _add_guest_options(parser)
    _add_task_timeout(parser)
    _add_resize_confirm_window(parser)
    _add_test_node_options(parser)
    _add_token_key_options(parser)

    def run_up(args: argparse.Namespace) -> int:
        from deploy.up import up as start

        try:
            config = apply_config(parser, args, getattr(args, "argv", []))
        except ConfigError as exc:
            parser.error(str(exc))
        if args.cluster and not args.database:
            parser.error("--cluster needs --database (PostgreSQL, which every controller shares)")
        if args.cluster and args.nats:
            parser.error("--cluster runs its own nats-server: leave out --nats")
        if args.tls_cert not in (None, GENERATE) and args.tls_key is None:
            parser.error("--tls-cert FILE needs --tls-key FILE (or: --tls-cert generate)")
        if args.cluster and args.token_key_rotation is not None:
            parser.error(
                "--token-key-rotation rotates this host's token keys only, and each controller of a"
                " cluster keeps its own copy of them: their keys would part ways"
            )
        try:
            token_key_settings(args)
        except ValueError as exc:
            parser.error(str(exc))
        save_first_config(config, parser, args)
        configure_logging(args.log_level, args.log_format, "up")
        logging.getLogger(__name__).info("settings: %s", config)
        return asyncio.run(start(args))

    return run_up


def add_run_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="run one actor, the gateway or a node as this process"
    )
    _add_bus_options(parser)
    parser.add_argument("actor", choices=ACTOR_NAMES)
    parser.add_argument("--nats", required=True, help="NATS URL")
    _add_database_option(parser)
    parser.add_argument(
        "--credentials", type=Path, help="this process's NATS user file (<data>/credentials/<user>.json)"
    )
    parser.add_argument(
        "--host",
        action="append",
        help="node: the compute host's name (repeat for several); volume: its storage host's name",
    )
    parser.add_argument("--libvirt", action="append", help="node: libvirt URI, one per --host")
    parser.add_argument(
        "--nbd-listen",
        metavar="ADDRESS[:PORT]",
        help="volume: attach volumes as NBD exports served there (port 10809), reachable from other hosts",
    )
    parser.add_argument(
        "--overlay",
        metavar="LOCAL_IP",
        help="node: tenant networks as VXLAN segments across hosts, over the interface holding LOCAL_IP",
    )
    parser.add_argument(
        "--report-interval", type=float, default=10.0, help="node: seconds between heartbeats"
    )
    _add_guest_options(parser, containers=True)
    _add_task_timeout(parser)
    _add_token_key_options(parser)
    parser.add_argument(
        "--build-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="node (tests): each build waits this long before it gathers its image, ports and volumes",
    )
    _add_migration_bandwidth(parser)
    _add_resize_confirm_window(parser)
    parser.add_argument("--listen", default="127.0.0.1:8774", help="gateway: HOST:PORT to listen on")
    parser.add_argument("--tls-cert", type=Path, help="gateway: serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="gateway: the certificate's private key (PEM)")
    _add_trusted_proxy(parser)
    return parser


def run(commands: Any) -> Runner:
    """`aiostack run ACTOR`: one actor, the gateway or a node as this process."""
    add_run_parser(commands)

    def run_one(args: argparse.Namespace) -> int:
        from deploy.run import run_actor, starts_daemons

        process = process_label(args)
        configure_logging(args.log_level, args.log_format, process)
        if starts_daemons(args):
            return asyncio.run(run_actor(args, process))
        import uvloop

        return uvloop.run(run_actor(args, process))  # libuv's loop: about 15 % less CPU per boot

    return run_one


def audit(commands: Any) -> Runner:
    """`aiostack audit`: invariants across every actor."""
    parser = commands.add_parser("audit", help="check invariants across every actor; exit 1 if any is broken")
    _add_bus_options(parser)
    parser.add_argument("--nats", help="NATS URL (default: <data-dir>/nats.url, written by `aiostack up`)")
    parser.add_argument(
        "--credentials", type=Path, help="NATS user file (default: <data-dir>/credentials/admin.json)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")

    def run_audit(args: argparse.Namespace) -> int:
        from deploy.audit import run_audit as check

        nats_url = args.nats or _read_nats_url(args.data_dir)
        credentials = args.credentials or _admin_credentials(args.data_dir)
        return asyncio.run(check(args, nats_url, credentials))

    return run_audit


def ping(commands: Any) -> Runner:
    """`aiostack ping ACTOR`: is it alive?"""
    parser = commands.add_parser("ping", help="ping an actor over the bus")
    _add_bus_options(parser)
    parser.add_argument("--nats", required=True)
    parser.add_argument(
        "--credentials", type=Path, help="NATS user file (default: <data-dir>/credentials/admin.json if any)"
    )
    parser.add_argument("actor", help="actor address, e.g. scheduler or node.host1")

    def run_ping(args: argparse.Namespace) -> int:
        config = Config(data_dir=args.data_dir, nats_url=args.nats, prefix=args.prefix)
        return asyncio.run(_ping(config, args.actor, args.credentials))

    return run_ping


async def _ping(config: Config, address: str, credentials: Path | None) -> int:
    if credentials is None and credentials_file(config.data_dir, ADMIN).exists():
        credentials = credentials_file(config.data_dir, ADMIN)
    async with await Bus.connect(
        config.nats_url, prefix=config.prefix, name="aiostack-cli", credentials=credentials
    ) as bus:
        try:
            print(json.dumps(await liveness(bus, address, timeout=5).ping(), indent=2))
        except (AiostackError, ValueError) as exc:
            print(f"aiostack: {address}: {exc.code}: {exc}", file=sys.stderr)
            return 1
    return 0


def token(commands: Any) -> Runner:
    """`aiostack token rotate-keys`: the identity actor's token keys, by command."""
    parser = commands.add_parser("token", help="the identity service's token keys")
    actions = parser.add_subparsers(dest="action", required=True)
    rotate = actions.add_parser(
        "rotate-keys",
        help="promote the staged token key to primary and stage a new one; tokens issued before keep"
        " working while their key is kept",
    )
    _add_bus_options(rotate)
    rotate.add_argument("--nats", help="NATS URL (default: <data-dir>/nats.url, written by `aiostack up`)")
    rotate.add_argument(
        "--credentials", type=Path, help="NATS user file (default: <data-dir>/credentials/admin.json)"
    )
    rotate.add_argument("--json", action="store_true", help="the key layout as JSON")

    def run_token(args: argparse.Namespace) -> int:
        nats_url = args.nats or _read_nats_url(args.data_dir)
        config = Config(data_dir=args.data_dir, nats_url=nats_url, prefix=args.prefix)
        credentials = args.credentials or _admin_credentials(args.data_dir)
        return asyncio.run(_rotate_keys(config, credentials, args.json))

    return run_token


async def _rotate_keys(config: Config, credentials: Path | None, as_json: bool) -> int:
    """Ask the identity actor to rotate its token keys (as the bus's admin); print the new layout."""
    from api.identity import Tokens

    async with await Bus.connect(
        config.nats_url, prefix=config.prefix, name="aiostack-cli", credentials=credentials
    ) as bus:
        try:
            layout = await Tokens.client(bus).rotate_keys()
        except AiostackError as exc:
            print(f"aiostack: token rotate-keys: {exc.code}: {exc}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(layout))
        return 0
    secondary = [str(number) for number in layout["keys"] if 0 < number < layout["primary"]]
    print(f"primary key: {layout['primary']}")
    print("staged key: 0")
    print(f"secondary keys: {', '.join(secondary) or 'none'}")
    return 0


def _read_nats_url(data_dir: Path) -> str:
    url_file = data_dir / "nats.url"
    if not url_file.exists():
        raise SystemExit(f"aiostack: no {url_file}: pass --nats, or run `aiostack up` with this data dir")
    return url_file.read_text().strip()


def _admin_credentials(data_dir: Path) -> Path | None:
    path = credentials_file(data_dir, ADMIN)
    return path if path.exists() else None


def join(commands: Any) -> Runner:
    """`aiostack join TOKEN`: make this machine a host of a cluster and run it."""
    parser = commands.add_parser(
        "join",
        help="join a cluster with a token from `aiostack cluster add`, then run this host; Ctrl-C stops it",
    )
    parser.add_argument(
        "token",
        nargs="?",
        help="the join token, or - to read it from standard input (default: $AIOSTACK_JOIN_TOKEN; an"
        " argument stays visible in the process list while the host runs); leave out to start a host"
        " that has joined",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="where everything is kept")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (every process)")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text, or json: one object per line"
    )
    parser.add_argument(
        "--address", help="this host's address the others reach (default: towards the cluster)"
    )
    parser.add_argument("--listen", help="controller: the gateway's HOST:PORT (default: ADDRESS:8774)")
    parser.add_argument(
        "--libvirt",
        default="test",
        help="compute: libvirt URI; 'test': a test-driver host; 'embed': QEMU in the node's own process"
        " (qemu:///embed, its root in the data directory; no libvirtd)",
    )
    _add_guest_options(parser)
    _add_test_node_options(parser)
    _add_task_timeout(parser)
    _add_resize_confirm_window(parser)

    def run_join(args: argparse.Namespace) -> int:
        from deploy.join import run_host

        configure_logging(args.log_level, args.log_format, "join")
        return asyncio.run(run_host(args))

    return run_join


def cluster(commands: Any) -> Runner:
    """`aiostack cluster add|list|remove`: the hosts of a cluster, from one of its controllers."""
    parser = commands.add_parser("cluster", help="invite, list and remove the hosts of a cluster")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="print a join token for a new host (one use, 15 minutes)")
    add.add_argument("name", help="the new host's name")
    add.add_argument("--role", choices=("controller", "compute"), required=True)
    add.add_argument("--ttl", type=float, default=900.0, help="seconds the token works (default 15 minutes)")
    actions.add_parser("list", help="hosts, roles, states and liveness")
    remove = actions.add_parser("remove", help="revoke a host's bus credentials")
    remove.add_argument("name")
    for action in (add, *(actions.choices[name] for name in ("list", "remove"))):
        _add_bus_options(action)
        action.add_argument("--json", action="store_true", help="JSON instead of text")

    def run_cluster(args: argparse.Namespace) -> int:
        from deploy.members import manage

        return asyncio.run(
            manage(args, _read_nats_url(args.data_dir), credentials_file(args.data_dir, ADMIN))
        )

    return run_cluster
