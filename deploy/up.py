"""`aiostack up`: one command, one cloud.

Starts the embedded nats-server (unless ``--nats`` names one) and every aiostack process,
each as its own OS process under a supervisor that restarts it with backoff when it dies.
Ctrl-C (or SIGTERM) stops the processes in reverse order, then nats-server.

The bus is locked down: each process logs in to NATS as its own user, allowed only the
subjects it uses (``deploy.credentials``), with the credentials file ``up`` hands it
(``--credentials <data>/credentials/<user>.json``); ``up`` itself and the operator's CLI use
``admin.json``. With ``--nats URL`` the same files are used: that server must list the
users of ``<data>/credentials/authorization.conf`` (``include`` it in its config), or have
no authorization at all. ``--nats`` may name a cluster's servers, comma-separated; with
``--nats-ca`` every credentials file trusts that CA (TLS to NATS), and ``--event-replicas 3``
keeps the event stream on three servers. ``--remote-node HOST`` adds the bus user of a node
that runs on another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats.errors

from actors.identity.keys import KeyRepository
from api.cluster import BusUser, Cluster
from api.node import Node
from api.volume import LOCAL_STORAGE
from bus import TRANSIENT_ERRORS, AiostackError, Bus, EmbeddedNatsServer, NatsServerError
from bus.api import liveness
from deploy.clouds import write_client_files
from deploy.credentials import ADMIN, Credentials, Principal, member_user, prepare, trust
from deploy.gateway_tls import GatewayTls, gateway_tls
from deploy.members import ClusteredNats, Membership, hashed_users, keep_member
from deploy.privacy import make_private, restrict_new_files
from node.testnode import write_test_node_file
from runtime.config import DATABASE_VARIABLE

log = logging.getLogger(__name__)

T = TypeVar("T")

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One process `aiostack up` runs: ``aiostack run <args>``."""

    name: str
    args: tuple[str, ...]
    user: str | None = None
    """Its NATS user when not named like the process (a cluster's: ``conductor@controller-1``)."""
    hosts: tuple[str, ...] = ()
    """A node process's compute hosts."""

    @property
    def principal(self) -> Principal:
        """Its NATS user; a node process's user serves its hosts, a volume process's its storage host."""
        kind = self.args[0]
        hosts = self.hosts
        if kind == "volume":
            hosts = (self.args[self.args.index("--host") + 1],)
        return Principal(self.user or self.name, kind, hosts)


class ChildProcess:
    """Runs one child; restarts it with backoff (0.2 s doubling to 10 s) whenever it exits."""

    def __init__(
        self, spec: ChildSpec, common_args: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.env = {**os.environ, **(env or {})}
        self.common_args = common_args
        self.log_path = log_dir / f"{spec.name}.log"
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        with self.log_path.open("ab") as log_file:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "deploy.child",
                *self.spec.args,
                *self.common_args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    async def _keep_running(self) -> None:
        backoff = 0.2
        while not self._stopping:
            began = time.monotonic()
            self.process = await self._spawn()
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - began > 30:
                backoff = 0.2
            self.restarts += 1
            log.warning(
                "%s exited with %s; restarting in %.1f s (log: %s)",
                self.spec.name,
                code,
                backoff,
                self.log_path,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name=f"child-{self.spec.name}")

    @property
    def state(self) -> str:
        """``waiting`` to be started, ``running``, or ``restarting`` between an exit and the next start."""
        if self._task is None:
            return "waiting"
        return "running" if self.process is not None and self.process.returncode is None else "restarting"

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                log.warning("%s did not stop in %.0f s; killing it", self.spec.name, timeout)
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def guest_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The options of a node of real guests, as ``aiostack up`` or ``join`` were given them."""
    return (
        "--virt-type", args.virt_type,
        "--shutdown-timeout", str(args.shutdown_timeout),
        "--image-cache-max-age", str(args.image_cache_max_age),
    )  # fmt: skip


def token_key_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The identity actor's token key options, as `aiostack up` was given them."""
    rotation, keys = args.token_key_rotation, args.max_active_keys
    return (
        *(("--token-key-rotation", str(rotation)) if rotation is not None else ()),
        *(("--max-active-keys", str(keys)) if keys is not None else ()),
    )


def child_specs(args: argparse.Namespace, tls: GatewayTls | None = None) -> list[ChildSpec]:
    """The processes of a one-machine cloud: every actor, the gateway (HTTPS with ``tls``), the nodes."""
    specs = [ChildSpec(name, (name,)) for name in ("scheduler", "image", "net")]
    specs.insert(0, ChildSpec("identity", ("identity", *token_key_args(args))))
    specs.append(ChildSpec("volume", ("volume", "--host", LOCAL_STORAGE)))
    conductor_args = ("--task-timeout", str(args.task_timeout))
    conductor_args += ("--resize-confirm-window", str(args.resize_confirm_window))
    conductor_args += ("--shelved-offload-time", str(args.shelved_offload_time))
    specs.insert(2, ChildSpec("conductor", ("conductor", *conductor_args)))
    https = ("--tls-cert", str(tls.certificate), "--tls-key", str(tls.key)) if tls else ()
    proxies = tuple(item for proxy in args.trusted_proxy for item in ("--trusted-proxy", str(proxy)))
    specs.append(ChildSpec("gateway", ("gateway", "--listen", args.listen, *https, *proxies)))
    hosts = [f"node-{number}" for number in range(1, args.nodes + 1)]
    per_process = max(1, args.nodes_per_process) if args.libvirt == "test" else 1
    for first in range(0, len(hosts), per_process):
        group = hosts[first : first + per_process]
        node_args: list[str] = ["node"]
        for host in group:
            uri = args.libvirt
            if uri == "test":
                uri = write_test_node_file(
                    args.data_dir / "nodes" / host / "testnode.xml",
                    vcpus=args.node_vcpus,
                    memory_mb=args.node_memory_mb,
                )
            node_args += ["--host", host, "--libvirt", uri]
        if args.libvirt != "test":
            node_args += guest_args(args)
        else:
            node_args += ["--migration-bandwidth", str(args.migration_bandwidth)]
        name = group[0] if len(group) == 1 else f"{group[0]}+{len(group) - 1}"  # node-1+24: and 24 more
        specs.append(ChildSpec(name, tuple(node_args), hosts=tuple(group)))
    for host in (f"lxc-{number}" for number in range(1, args.lxc_nodes + 1)):
        lxc_args = ("--virt-type", "lxc", "--shutdown-timeout", str(args.shutdown_timeout))
        specs.append(ChildSpec(host, ("node", "--host", host, *lxc_args), hosts=(host,)))
    if getattr(args, "cluster", None):
        specs.insert(0, ChildSpec("cluster", ("cluster",)))
        storage = (
            "volume",
            "--host",
            args.host_name,
            "--nbd-listen",
            args.cluster,
        )  # reached from every host
        specs = [dataclasses.replace(spec, args=storage) if spec.name == "volume" else spec for spec in specs]
        specs = [
            spec
            if spec.args[0] == "node"
            else dataclasses.replace(spec, user=member_user(spec.name, args.host_name))
            for spec in specs
        ]
    return specs


def first_start_passwords(data_dir: Path) -> dict[str, str]:
    """On first start, the admin and demo passwords (from the environment, else generated): not
    once identity's sqlite file or the client files (written with the passwords) exist."""
    if (data_dir / "identity.sqlite").exists() or (data_dir / "clouds.yaml").exists():
        return {}
    return {
        f"AIOSTACK_{user.upper()}_PASSWORD": os.environ.get(f"AIOSTACK_{user.upper()}_PASSWORD")
        or secrets.token_urlsafe(12)
        for user in ("admin", "demo")
    }


def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when `aiostack up` dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def actor_addresses(specs: list[ChildSpec]) -> list[str]:
    """The bus address of every actor and node the children run."""
    addresses = []
    for spec in specs:
        if spec.args[0] == "node":
            addresses += [Node.address_for(host=host) for host in spec.hosts]
        elif spec.name != "gateway":
            addresses.append(spec.name)
    return addresses


async def wait_for_actors(
    nats_url: str, prefix: str, addresses: list[str], credentials: Path | None = None, timeout: float = 90.0
) -> None:
    """Return once every actor and node answers ``ping``.

    One that is away, still starting, restarting or busy (``TRANSIENT_ERRORS``) is asked again.
    """
    async with (
        await Bus.connect(nats_url, prefix=prefix, name="aiostack-up", credentials=credentials) as bus,
        asyncio.timeout(timeout),
    ):
        await answering(bus, addresses)


async def answering(bus: Bus, addresses: list[str]) -> None:
    """Return once every actor of ``addresses`` answers ``ping`` on ``bus`` (asked again while it
    is away, starting, restarting or busy: ``TRANSIENT_ERRORS``)."""
    for address in addresses:
        while True:
            try:
                await liveness(bus, address, timeout=2).ping()
                break
            except TRANSIENT_ERRORS:
                await asyncio.sleep(0.05)


async def wait_for_gateway(data_dir: Path, timeout: float = 60.0) -> str | None:
    url_file = data_dir / "gateway.url"
    async with asyncio.timeout(timeout):
        while not url_file.exists() or not url_file.read_text().strip():
            await asyncio.sleep(0.05)
    return url_file.read_text().strip()


async def _ready(
    data_dir: Path, nats_url: str, prefix: str, specs: list[ChildSpec], credentials: Credentials
) -> str:
    gateway_url = await wait_for_gateway(data_dir)
    await wait_for_actors(nats_url, prefix, actor_addresses(specs), credentials.file(ADMIN))
    return gateway_url


async def up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    restrict_new_files()
    opened_up = make_private(data_dir)
    if opened_up:
        print(
            f"aiostack up: {len(opened_up)} files and folders of {data_dir} were readable by others;"
            " made them owner-only (folders 0700, files 0600)",
            file=sys.stderr,
        )
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    if args.libvirt.startswith("qemu:///system"):
        from node.libvirtd import ensure_libvirtd

        await asyncio.to_thread(ensure_libvirtd, args.libvirt)
    tls = gateway_tls(data_dir, args.tls_cert, args.tls_key, args.listen)
    specs = child_specs(args, tls)
    remote_nodes = [Principal(host, "node", (host,)) for host in args.remote_node]
    credentials = prepare(data_dir, [*(spec.principal for spec in specs), *remote_nodes], args.prefix)
    if args.nats_ca is not None:
        trust(data_dir, args.nats_ca.read_text())
    server: EmbeddedNatsServer | None = None
    nats_url = args.nats
    membership: Membership | None = None
    clustered: ClusteredNats | None = None
    own_users: list[BusUser] = []
    if args.cluster:
        membership = Membership.load(data_dir) or Membership(
            args.host_name, "controller", args.cluster, args.prefix, [], []
        )
        membership.save(data_dir)
        await KeyRepository(data_dir / "keys" / "token").setup()
        clustered = ClusteredNats(data_dir, membership)
        trust(data_dir, clustered.ca_pem)
        own_users = await asyncio.to_thread(hashed_users, credentials.authorization)
        clustered.merge(own_users)
        server = clustered.server
        await server.start()
        nats_url = membership.client_urls()
    elif nats_url is None:
        server = EmbeddedNatsServer(data_dir, port=args.nats_port, authorization=credentials.authorization)
        await server.start()
        nats_url = server.url
    nats_keeper = asyncio.ensure_future(keep_nats_running(server)) if server is not None else None
    (data_dir / "nats.url").unlink(missing_ok=True)
    common = ["--nats", nats_url, "--data-dir", str(data_dir), "--prefix", args.prefix]
    common += ["--log-level", args.log_level, "--log-format", args.log_format]
    passwords = first_start_passwords(data_dir)
    (data_dir / "gateway.url").unlink(missing_ok=True)
    database = {DATABASE_VARIABLE: args.database} if args.database else {}
    children = [
        ChildProcess(
            spec,
            [*common, "--credentials", str(credentials.file(spec.principal.user))],
            log_dir,
            {**database, **(passwords if spec.name == "identity" else {})},
        )
        for spec in specs
    ]
    admin = await Bus.connect(
        nats_url, prefix=args.prefix, name="aiostack-up", credentials=credentials.file(ADMIN)
    )
    member: asyncio.Future[None] | None = None
    try:
        if membership is not None:
            children[0].start()
            async with asyncio.timeout(90):
                await answering(admin, ["cluster"])
            await Cluster.client(admin).register(
                name=membership.name, address=membership.address, users=own_users
            )
            (data_dir / "nats.url").write_text(f"{nats_url}\n")  # `aiostack cluster add` may run now
            states = {child.spec.name: child for child in children}
            member = asyncio.ensure_future(
                keep_member(
                    admin, membership, lambda: {n: c.state for n, c in states.items()}, clustered, stop
                )
            )
        else:
            (data_dir / "nats.url").write_text(f"{nats_url}\n")
        stream = await _until_stopped(
            _ensure_event_stream(admin, args, clustered=membership is not None), stop
        )
        if stream is None:
            return 1
        stream.result()
        for child in children[1:] if membership is not None else children:
            child.start()
        started = await _until_stopped(_ready(data_dir, nats_url, args.prefix, specs, credentials), stop)
        if started is None:
            return 1
        try:
            gateway_url = started.result()
        except TimeoutError:
            print(
                f"aiostack up: the cloud did not come up in time; see the logs in {log_dir}", file=sys.stderr
            )
            return 1
        print(f"aiostack up: NATS at {nats_url} (prefix {args.prefix!r}), data in {data_dir}")
        if server is not None:
            print(f"  embedded nats-server pid {server.pid}, JetStream store in {server.data_dir}")
        else:
            print(
                f"  NATS credentials from {credentials.directory}: that server must include "
                f"{credentials.config_file} (or have no authorization)"
            )
        print(f"  bus users: one per process, least privilege; admin's: {credentials.file(ADMIN)}")
        print("  processes: " + ", ".join(c.spec.name for c in children) + f" (logs in {log_dir})")
        print(f"  gateway: {gateway_url}")
        if tls is not None and tls.ca is not None:
            print(f"  TLS: the gateway's certificate is signed by {tls.ca} (clouds.yaml and openrc trust it)")
        clouds_file, openrc_file = write_client_files(
            data_dir,
            gateway_url,
            {user: passwords[f"AIOSTACK_{user.upper()}_PASSWORD"] for user in ("admin", "demo") if passwords},
            ca=tls.ca if tls else None,
        )
        print(
            f"  OpenStack clients: export OS_CLIENT_CONFIG_FILE={clouds_file} OS_CLOUD=aiostack-admin"
            f" (or aiostack-demo), or: source {openrc_file} [admin|demo]"
        )
        if passwords:
            print(f"  first start: passwords (kept as hashes, and in {clouds_file.name} and openrc, 0600):")
            for user in ("admin", "demo"):
                print(f"    {user}: {passwords[f'AIOSTACK_{user.upper()}_PASSWORD']}")
        if membership is not None:
            print(
                f"  cluster: {membership.name} is its first controller; add hosts with"
                " `aiostack cluster add NAME --role controller|compute`; see them: `aiostack cluster list`"
            )
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
    finally:
        print("aiostack: stopping", flush=True)
        if member is not None:
            member.cancel()
        await asyncio.gather(*(child.stop() for child in reversed(children)))
        await admin.close()
        if server is not None and nats_keeper is not None:
            nats_keeper.cancel()
            await server.stop()
    return 0


async def _until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> asyncio.Future[T] | None:
    """Do ``work`` unless ``stop`` is set first (then cancel it): its finished future, or None."""
    doing = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({doing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not doing.done():
        doing.cancel()
        return None
    return doing


NATS_RESTART_DELAY = 2.0  # lets its clients see it gone and the port be free again


async def _ensure_event_stream(
    bus: Bus, args: argparse.Namespace, *, clustered: bool = False, patience: float = 60.0
) -> None:
    """Make or update the event stream; a NATS cluster just started may have no JetStream leader
    for some seconds, so failures are tried again for ``patience`` seconds. A cluster's first
    controller waits for as long as it takes: JetStream's cluster needs a second server."""
    began = time.monotonic()
    hinted = False
    async with asyncio.timeout(None if clustered else patience):
        while True:
            try:
                await bus.ensure_event_stream(
                    max_age=args.events_max_age, max_bytes=args.events_max_bytes, replicas=args.event_replicas
                )
                return
            except (nats.errors.Error, AiostackError) as exc:
                log.info("event stream not ready yet (%s); trying again", type(exc).__name__)
                if clustered and not hinted and time.monotonic() - began > 5:
                    hinted = True
                    print(
                        "aiostack up: waiting for a second controller (a NATS cluster's JetStream needs two"
                        " servers): `aiostack cluster add NAME --role controller` here, `aiostack join TOKEN`"
                        " there",
                        flush=True,
                    )
                await asyncio.sleep(0.5)


async def keep_nats_running(server: EmbeddedNatsServer) -> None:
    """Restart the embedded nats-server on its port whenever it dies (every client reconnects)."""
    backoff = NATS_RESTART_DELAY
    while True:
        code = await server.exited()
        log.warning("nats-server exited with %s; restarting it on %s in %.1f s", code, server.url, backoff)
        await asyncio.sleep(backoff)
        try:
            await server.start()
            backoff = NATS_RESTART_DELAY
        except NatsServerError as exc:
            log.error("nats-server did not restart: %s", exc)
            backoff = min(backoff * 2, 10.0)
