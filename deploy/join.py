"""`aiostack join TOKEN`: make this machine a host of a cluster, then run it until Ctrl-C.

With the token's one-time user it asks the cluster for this host's bus users (and, for a
controller, the secrets controllers share: the CA, identity's token keys, the database),
writes them to its data directory (0700, files 0600) with ``cluster.json``, and runs:

* a **controller**: its own nats-server (TLS, routed to the other controllers, the cluster's
  users kept current) and ``CONTROLLER_PROCESSES``, replicas sharing the load with the other
  controllers';
* a **compute** host: its node (``--libvirt``; a test-driver host by default).

Each process restarts with backoff when it dies (``deploy.up.ChildProcess``); the supervisor
reports them to the cluster every few seconds. Run again (with or without the token), it
starts the same host from its data directory: a host that comes back rejoins by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from api.cluster import ClusterJoin, JoinGrant
from bus import AiostackError, Bus
from bus.bus import BusAuthFailed
from deploy.credentials import (
    ADMIN,
    CONTROLLER_PROCESSES,
    credentials_dir,
    credentials_file,
    member_user,
    write_credentials,
)
from deploy.members import (
    DATABASE_FILE,
    JOIN_TOKEN_VARIABLE,
    ClusteredNats,
    JoinToken,
    Membership,
    TokenError,
    address_towards,
    keep_member,
)
from deploy.privacy import make_private, restrict_new_files, write_private
from deploy.run import stop_on_signals
from deploy.up import ChildProcess, ChildSpec, answering, guest_args, keep_nats_running
from node.testnode import write_test_node_file
from runtime.config import DATABASE_VARIABLE

log = logging.getLogger(__name__)

GATEWAY_PORT = 8774


async def ask_to_join(token: JoinToken, address: str) -> JoinGrant:
    """Spend the token: this host's grant (:raises AiostackError: the cluster said no)."""
    with tempfile.TemporaryDirectory(prefix="aiostack-join-") as scratch:
        credentials = Path(scratch) / "join.json"
        write_credentials(credentials, token.user, token.password, token.ca)
        urls = ",".join(token.nats_urls)
        async with await connect_patiently(urls, token.prefix, f"join-{token.name}", credentials) as bus:
            joining = ClusterJoin.client(bus, host=token.name, timeout=30)
            return await joining.join(secret=token.password, address=address)


async def connect_patiently(
    urls: str, prefix: str, name: str, credentials: Path, patience: float = 15.0
) -> Bus:
    """Connect as a user that every controller's nats-server lists within a few seconds of the
    cluster making it (``REPORT_INTERVAL``): refused sooner, try again."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await Bus.connect(urls, prefix=prefix, name=name, credentials=credentials)
        except BusAuthFailed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def _first_identity(bus: Bus, patience: float = 120.0) -> None:
    """Wait (at most ``patience`` s) until an identity replica answers: the first controller's
    identity makes the admin user with the operator's password, and a replica starting on an
    empty database before it would make its own."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(patience):
            await answering(bus, ["identity"])
            return
    log.warning("no identity replica answered in %.0f s; starting this controller's anyway", patience)


def keep_grant(data_dir: Path, token: JoinToken, grant: JoinGrant, address: str) -> Membership:
    """Write what the grant holds to the data directory; the host's membership."""
    for user, password in grant["users"].items():
        write_credentials(credentials_file(data_dir, user), user, password, token.ca)
    routes: list[str] = []
    secrets = grant["controller"]
    if secrets is not None:
        write_credentials(credentials_file(data_dir, ADMIN), ADMIN, secrets["admin_password"], token.ca)
        (data_dir / "ca").mkdir(mode=0o700, exist_ok=True)
        write_private(data_dir / "ca" / "ca.pem", secrets["ca_certificate"])
        write_private(data_dir / "ca" / "ca.key", secrets["ca_key"])
        keys = data_dir / "keys" / "token"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, key in secrets["token_keys"].items():
            write_private(keys / name, key)
        write_private(data_dir / DATABASE_FILE, secrets["database"])
        (data_dir / "nats").mkdir(mode=0o700, exist_ok=True)
        write_private(data_dir / "nats" / "authorization.json", json.dumps(grant["authorization"]))
        routes = secrets["routes"]
    membership = Membership(
        grant["name"], grant["role"], address, grant["prefix"], grant["nats_urls"], routes
    )
    membership.save(data_dir)
    return membership


def host_specs(membership: Membership, args: argparse.Namespace, data_dir: Path) -> list[ChildSpec]:
    """The processes this host runs, each named by its bus user."""
    host = membership.name
    if membership.role == "compute":
        uri = args.libvirt
        if uri == "test":
            uri = write_test_node_file(
                data_dir / "nodes" / host / "testnode.xml",
                vcpus=args.node_vcpus,
                memory_mb=args.node_memory_mb,
            )
        elif uri == "embed":
            from node.libvirtd import prepare_embed_root  # libvirt-python: compute hosts only

            uri = prepare_embed_root(data_dir / "vm")
        node = ("node", "--host", host, "--libvirt", uri, "--overlay", membership.address)
        if not uri.startswith("test:"):
            node += guest_args(args)
        else:
            node += ("--migration-bandwidth", str(args.migration_bandwidth))
        return [ChildSpec(member_user("node", host), node, hosts=(host,))]
    listen = args.listen or f"{membership.address}:{GATEWAY_PORT}"
    options = {
        "gateway": ("--listen", listen),
        "conductor": (
            "--task-timeout",
            str(args.task_timeout),
            "--resize-confirm-window",
            str(args.resize_confirm_window),
            "--shelved-offload-time",
            str(args.shelved_offload_time),
        ),
        "volume": ("--host", host, "--nbd-listen", membership.address),  # each controller a storage host
    }
    return [
        ChildSpec(member_user(process, host), (process, *options.get(process, ())))
        for process in CONTROLLER_PROCESSES
    ]


def given_token(argument: str | None) -> str | None:
    """The join token: the argument, one line of standard input for ``-``, else
    ``$AIOSTACK_JOIN_TOKEN`` (taken out of the environment, so this host's processes do not
    inherit it). An argument stays in the process list, which every user reads, for as long as the
    host runs; the environment is readable by its owner alone."""
    from_environment = os.environ.pop(JOIN_TOKEN_VARIABLE, None)
    if argument == "-":
        return sys.stdin.readline().strip() or None
    return argument or from_environment or None


async def run_host(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    restrict_new_files()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(data_dir)
    membership = Membership.load(data_dir)
    text = given_token(args.token)
    if text:
        try:
            token = JoinToken.decode(text)
        except TokenError as exc:
            if membership is None:
                print(f"aiostack join: {exc}", file=sys.stderr)
                return 2
            token = None
        if token is not None and membership is not None and token.name != membership.name:
            print(
                f"aiostack join: {data_dir} is already host {membership.name}'s; give {token.name}"
                " another --data-dir",
                file=sys.stderr,
            )
            return 2
        if token is not None and membership is None:
            address = args.address or address_towards(token.nats_urls[0])
            credentials_dir(data_dir).mkdir(mode=0o700, exist_ok=True)
            try:
                grant = await ask_to_join(token, address)
            except AiostackError as exc:
                print(f"aiostack join: the cluster refused: {exc.code}: {exc}", file=sys.stderr)
                return 1
            membership = keep_grant(data_dir, token, grant, address)
            print(
                f"aiostack join: {membership.name} joined as {membership.role}; data in {data_dir}",
                flush=True,
            )
    if membership is None:
        print(f"aiostack join: {data_dir} belongs to no cluster: give the join token", file=sys.stderr)
        return 2
    return await serve_host(membership, args, data_dir)


async def serve_host(membership: Membership, args: argparse.Namespace, data_dir: Path) -> int:
    """Run this host's nats-server (a controller's) and processes until SIGINT or SIGTERM."""
    stop = stop_on_signals()
    log_dir = data_dir / "logs"
    log_dir.mkdir(mode=0o700, exist_ok=True)
    nats: ClusteredNats | None = None
    keeper: asyncio.Future[None] | None = None
    env: dict[str, str] = {}
    if membership.role == "controller":
        nats = ClusteredNats(data_dir, membership)
        await nats.server.start()
        keeper = asyncio.ensure_future(keep_nats_running(nats.server))
        env[DATABASE_VARIABLE] = (data_dir / DATABASE_FILE).read_text()
    urls = membership.client_urls()
    common = ["--nats", urls, "--data-dir", str(data_dir), "--prefix", membership.prefix]
    common += ["--log-level", args.log_level, "--log-format", args.log_format]
    children = [
        ChildProcess(
            spec, [*common, "--credentials", str(credentials_file(data_dir, spec.name))], log_dir, env
        )
        for spec in host_specs(membership, args, data_dir)
    ]
    agent = ADMIN if membership.role == "controller" else member_user("agent", membership.name)
    bus: Bus | None = None
    try:
        bus = await connect_patiently(
            urls, membership.prefix, f"agent-{membership.name}", credentials_file(data_dir, agent)
        )
        if membership.role == "controller":
            await _first_identity(bus)
        for child in children:
            child.start()
        print(
            f"aiostack join: {membership.name} ({membership.role}) runs "
            + ", ".join(child.spec.name for child in children)
            + f"; NATS {urls}; logs in {log_dir}",
            flush=True,
        )
        await keep_member(bus, membership, lambda: {c.spec.name: c.state for c in children}, nats, stop)
    finally:
        await asyncio.gather(*(child.stop() for child in reversed(children)))
        if bus is not None:
            await bus.close()
        if nats is not None and keeper is not None:
            keeper.cancel()
            await nats.server.stop()
    return 0
