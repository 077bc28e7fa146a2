"""`aiostack run ACTOR`: one actor (or the gateway, or a node) as its own process on a NATS.

SIGTERM or SIGINT drains it and exits 0. Inside the process a ``Supervisor`` restarts the
actor when one of its background tasks fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiostack.config import Config
from bus import Actor, Bus, Supervisor

log = logging.getLogger(__name__)

ACTOR_NAMES = ("token", "conductor", "scheduler", "image", "net", "volume", "node", "gateway")


def actor_factory(name: str, bus: Bus, config: Config, args: argparse.Namespace) -> Callable[[], Actor]:
    """How to make the named actor; imports only that actor's module (a small process)."""
    if name == "token":
        from actors.token import TokenActor

        return lambda: TokenActor(bus, config)
    if name == "conductor":
        from actors.conductor import ConductorActor

        return lambda: ConductorActor(bus, config)
    if name == "scheduler":
        from actors.scheduler import SchedulerActor

        return lambda: SchedulerActor(bus, config)
    if name == "image":
        from actors.image import ImageActor

        return lambda: ImageActor(bus, config)
    if name == "net":
        from actors.net import NetActor

        return lambda: NetActor(bus, config)
    if name == "volume":
        from actors.volume import VolumeActor

        return lambda: VolumeActor(bus, config)
    if name == "node":
        from node.actor import NodeActor

        return lambda: NodeActor(
            bus, config, host=args.host, libvirt_uri=args.libvirt, report_interval=args.report_interval
        )
    raise ValueError(f"unknown actor {name!r}; one of {', '.join(ACTOR_NAMES)}")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def run_actor(args: argparse.Namespace) -> int:
    config = Config(data_dir=args.data_dir, nats_url=args.nats, prefix=args.prefix)
    stop = _stop_on_signals()
    name = f"{args.actor}.{args.host}" if args.actor == "node" else args.actor
    bus = await Bus.connect(config.nats_url, prefix=config.prefix, name=name)
    try:
        if args.actor == "gateway":
            await serve_gateway(bus, config, args.listen, stop)
            return 0
        supervisor = Supervisor(actor_factory(args.actor, bus, config, args))
        await supervisor.start()
        await stop.wait()
        await supervisor.stop()
        return 0
    finally:
        await bus.close()


async def serve_gateway(bus: Bus, config: Config, listen: str, stop: asyncio.Event) -> None:
    """Serve the gateway on ``listen`` (HOST:PORT, port 0 = free); write its URL to ``<data>/gateway.url``."""
    from aiohttp import web

    from gateway.app import create_app

    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(create_app(bus), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{host or '127.0.0.1'}:{bound_port}"
    url_file: Path = config.data_dir / "gateway.url"
    url_file.parent.mkdir(parents=True, exist_ok=True)
    url_file.write_text(url + "\n")
    log.info("gateway serving on %s", url)
    try:
        await stop.wait()
    finally:
        url_file.unlink(missing_ok=True)
        await runner.cleanup()
