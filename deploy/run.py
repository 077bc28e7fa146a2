"""`aiostack run ACTOR`: one actor (or the gateway, or a node) as its own process on a NATS.

SIGTERM or SIGINT drains it and exits 0. Inside the process a ``Supervisor`` restarts the
actor when one of its background tasks fails.

On a NATS with authorization (`aiostack up`'s, or one run elsewhere that includes
``<data>/credentials/authorization.conf``) give the process its own user's file:
``aiostack run conductor --nats URL --credentials <data>/credentials/conductor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from api.metrics import COLLECT
from bus import Actor, Bus, Supervisor
from bus.bus import BusAuthFailed
from deploy.privacy import restrict_new_files
from runtime.auth import install
from runtime.config import Config
from runtime.metrics import answer_collections

log = logging.getLogger(__name__)

YOUNG_OBJECTS_PER_COLLECTION = 10_000
"""CPython's default, 700, had the gateway collect its young objects about 150 times a second
under a page load, and every tenth time the older ones too (with a full collection of every
object, tens of milliseconds, now and then)."""


def settle_garbage_collection() -> None:
    """Once a process has started: what it made so far (modules, routes, stores, schemas) is never
    collected again (``gc.freeze``), so a collection of the old generations walks only what came
    since; and the young generation is collected after ``YOUNG_OBJECTS_PER_COLLECTION`` new
    objects. Under load a page of 100 servers cost the cloud a fifth less CPU, and its p99 with 16
    clients fell by about a third."""
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, *gc.get_threshold()[1:])


ACTOR_NAMES = ("identity", "conductor", "scheduler", "image", "net", "volume", "node", "gateway", "cluster")


def starts_daemons(args: argparse.Namespace) -> bool:
    """Whether the process starts programs that outlive the call that started them: the volume
    actor (its qemu-storage-daemon) and a node of real guests or containers (qemu-storage-daemon,
    lxc-start, dnsmasq). Those run on asyncio's own event loop, the others on uvloop's: a child
    uvloop starts inherits some of its parent's descriptors (libuv's own pipes and sockets) even
    with ``close_fds``, so a daemon would hold them for its whole life, and waiting for a
    daemonizing program's output would wait for the daemon's end."""
    if args.actor == "volume":
        return True
    if args.actor != "node":
        return False
    return args.virt_type == "lxc" or any(not uri.startswith("test:///") for uri in args.libvirt or [])


def actor_factories(
    name: str, bus: Bus, config: Config, args: argparse.Namespace
) -> list[Callable[[], Actor]]:
    """How to make the named actor (or the process's nodes); imports only what it needs."""
    if name == "node" and args.virt_type == "lxc":
        from node.lxc.actor import LxcNodeActor

        if args.libvirt:
            raise SystemExit("aiostack run node: an LXC node (--virt-type lxc) has no --libvirt")
        return [
            partial(
                LxcNodeActor,
                bus,
                config,
                host=host,
                report_interval=args.report_interval,
                shutdown_timeout=args.shutdown_timeout,
            )
            for host in args.host or ["lxc-1"]
        ]
    if name == "node":
        from node.actor import NodeActor

        hosts, uris = args.host or ["node-1"], args.libvirt or ["test:///default"]
        if len(hosts) != len(uris):
            raise SystemExit("aiostack run node: give one --libvirt URI for each --host")
        if len(hosts) > 1 and not all(
            uri.startswith("test:///") and uri != "test:///default" for uri in uris
        ):
            raise SystemExit("aiostack run node: several hosts in one process need test-driver node files")
        return [
            partial(
                NodeActor,
                bus,
                config,
                host=host,
                libvirt_uri=uri,
                report_interval=args.report_interval,
                virt_type=args.virt_type,
                shutdown_timeout=args.shutdown_timeout,
                overlay_ip=args.overlay,
                image_cache_max_age=args.image_cache_max_age,
                build_delay=args.build_delay,
                migration_bandwidth=args.migration_bandwidth,
            )
            for host, uri in zip(hosts, uris, strict=True)
        ]
    if name == "volume":
        from actors.volume import VolumeActor
        from api.volume import LOCAL_STORAGE

        (host,) = args.host or [LOCAL_STORAGE]
        return [partial(VolumeActor, bus, config, host=host, nbd_listen=args.nbd_listen)]
    if name == "identity":
        from actors.identity.actor import IdentityActor

        try:
            period, max_active_keys = token_key_settings(args)
        except ValueError as exc:
            raise SystemExit(f"aiostack run identity: {exc}") from None
        return [
            partial(IdentityActor, bus, config, token_key_rotation=period, max_active_keys=max_active_keys)
        ]
    if name == "conductor":
        from actors.conductor.actor import ConductorActor

        return [
            partial(
                ConductorActor,
                bus,
                config,
                task_timeout=args.task_timeout,
                resize_confirm_window=args.resize_confirm_window,
                shelved_offload_time=args.shelved_offload_time,
            )
        ]
    if name == "cluster":
        from actors.cluster import ClusterActor
        from deploy.credentials import join_users, member_users

        return [
            partial(
                ClusterActor,
                bus,
                config,
                users_for=partial(member_users, prefix=config.prefix),
                join_user=partial(join_users, prefix=config.prefix),
            )
        ]
    return [actor_factory(name, bus, config)]


def token_key_settings(args: argparse.Namespace) -> tuple[float | None, int]:
    """The rotation period in seconds and the keys kept that ``args`` ask for.

    :raises ValueError: a period that is not positive, or too few keys for it.
    """
    from actors.identity.keys import DEFAULT_TOKEN_TTL, STALE_WINDOW, max_active_keys_for

    hours: float | None = args.token_key_rotation
    period = None if hours is None else hours * 3600.0
    return period, max_active_keys_for(DEFAULT_TOKEN_TTL, STALE_WINDOW, period, args.max_active_keys)


ACTOR_CLASSES = {
    "identity": "actors.identity.actor:IdentityActor",
    "conductor": "actors.conductor.actor:ConductorActor",
    "scheduler": "actors.scheduler:SchedulerActor",
    "image": "actors.image:ImageActor",
    "net": "actors.net.actor:NetActor",
    "volume": "actors.volume:VolumeActor",
}


def actor_factory(name: str, bus: Bus, config: Config) -> Callable[[], Actor]:
    """How to make the named actor; imports only that actor's module (a small process)."""
    if name not in ACTOR_CLASSES:
        raise ValueError(f"unknown actor {name!r}; one of {', '.join(ACTOR_NAMES)}")
    module, class_name = ACTOR_CLASSES[name].split(":")
    actor_class = getattr(importlib.import_module(module), class_name)
    return partial(actor_class, bus, config)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def run_actor(args: argparse.Namespace, process: str) -> int:
    """Run the actor, gateway or nodes ``args`` name as this process (``process``: its name in logs
    and metrics) until SIGTERM or SIGINT; the exit status."""
    restrict_new_files()
    config = Config(data_dir=args.data_dir, nats_url=args.nats, prefix=args.prefix, database=args.database)
    stop = stop_on_signals()
    try:  # named as in the logs (node-1+999: a name joining every host would not fit in CONNECT)
        bus = await Bus.connect(
            config.nats_url, prefix=config.prefix, name=process, credentials=args.credentials
        )
    except BusAuthFailed as exc:
        log.error("aiostack run %s: %s", args.actor, exc)
        return 2
    try:
        if args.actor == "gateway":
            tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
            await serve_gateway(bus, config, args.listen, stop, tls, args.trusted_proxy)
            return 0
        await install(bus)
        await answer_collections(bus, COLLECT, args.actor)  # its kind: the pid tells processes apart
        supervisors = [Supervisor(factory) for factory in actor_factories(args.actor, bus, config, args)]
        for supervisor in supervisors:
            await supervisor.start()
        settle_garbage_collection()
        await stop.wait()
        await asyncio.gather(*(supervisor.stop() for supervisor in supervisors))
        return 0
    finally:
        await bus.close()


async def serve_gateway(
    bus: Bus,
    config: Config,
    listen: str,
    stop: asyncio.Event,
    tls: tuple[Path, Path] | None = None,
    trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
) -> None:
    """Serve the gateway on ``listen`` (HOST:PORT, port 0 = free); write its URL to ``<data>/gateway.url``.
    ``tls``: its certificate (chain) and key files: HTTPS (TLS 1.2 and later) instead of HTTP;
    ``trusted_proxies``: where requests whose ``X-Forwarded-*`` headers are believed come from.

    Its limits (sockets per user, header and body timeouts) come from the environment
    (``gateway.http.Limits.from_environment``); each connection is a ``gateway.server.GatewayProtocol``.
    """
    from aiohttp import web

    from gateway.access_log import GatewayAccessLogger
    from gateway.app import create_app, handler_args
    from gateway.forwarded import forwarded_middleware
    from gateway.http import Limits
    from gateway.server import GatewaySite

    host, _, port = listen.rpartition(":")
    limits = Limits.from_environment()
    access = {"access_log_class": GatewayAccessLogger, "access_log": logging.getLogger("aiostack.access")}
    app = create_app(bus, limits)
    app.middlewares.insert(0, forwarded_middleware(trusted_proxies))
    runner = web.AppRunner(app, handle_signals=False, **access)
    await runner.setup()
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*tls)
    site = GatewaySite(runner, host or "127.0.0.1", int(port), {**handler_args(limits), **access}, context)
    await site.start()
    url = f"{'https' if context else 'http'}://{host or '127.0.0.1'}:{site.port}"
    url_file: Path = config.data_dir / "gateway.url"
    url_file.parent.mkdir(parents=True, exist_ok=True)
    url_file.write_text(url + "\n")
    log.info("gateway serving on %s", url)
    settle_garbage_collection()
    try:
        await stop.wait()
    finally:
        url_file.unlink(missing_ok=True)
        await runner.cleanup()
