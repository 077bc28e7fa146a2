"""Shared fixtures: a real nats-server per test on a free loopback port, actors on it, the gateway."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import Actor, Bus, EmbeddedNatsServer
from deploy.testguest import TestGuest, build_test_guest, default_cache_dir
from runtime.auth import install
from runtime.config import Config
from tests.helpers import DEMO_PASSWORD, Api

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

# every actor of the suite, in this process or in an `aiostack up` it starts, checks each of its
# replies against the type its API declares (bus.api): a declaration that drifts fails the test
os.environ["AIOSTACK_CHECK_REPLIES"] = "1"

ADMIN_PASSWORD = "admin-secret"

FULL_SIZE_HINT = "`./stack test --full` runs every test, the full-size cases of the heavy suites too"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the full-size cases of the heavy suites (marked full_size), which CI leaves out",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption("--full"):
        return "aiostack: the full suite, full-size cases included"
    return f"aiostack: the CI-sized suite; {FULL_SIZE_HINT}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``--full``, the full-size cases are deselected (pytest counts them as such)."""
    if config.getoption("--full"):
        return
    full_size = [item for item in items if item.get_closest_marker("full_size")]
    if full_size:
        items[:] = [item for item in items if not item.get_closest_marker("full_size")]
        config.hook.pytest_deselected(items=full_size)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.getoption("--full"):
        terminalreporter.write_line(f"aiostack: full-size cases deselected; {FULL_SIZE_HINT}")


@pytest.fixture
def full_size(request: pytest.FixtureRequest) -> bool:
    """Whether the run is the full one (``--full``): sized suites take their full size."""
    return bool(request.config.getoption("--full"))


@pytest.fixture(autouse=True)
def bootstrap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOSTACK_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("AIOSTACK_DEMO_PASSWORD", DEMO_PASSWORD)


@pytest.fixture
async def nats_server(tmp_path) -> AsyncIterator[EmbeddedNatsServer]:
    async with EmbeddedNatsServer(tmp_path) as server:
        yield server


@pytest.fixture
async def bus(nats_server: EmbeddedNatsServer) -> AsyncIterator[Bus]:
    async with await Bus.connect(nats_server.url, name="test-client") as connection:
        yield connection


@pytest.fixture
def config(tmp_path, nats_server: EmbeddedNatsServer) -> Config:
    return Config(data_dir=tmp_path / "data", nats_url=nats_server.url)


StartActor = Callable[..., Awaitable[Actor]]


@pytest.fixture
async def start_actor(config: Config) -> AsyncIterator[StartActor]:
    """``await start_actor(NetActor, config)``: an actor on its own bus connection, stopped at teardown.

    ``secure=True`` makes it check tokens and policies as `aiostack run` does.
    """
    started: list[tuple[Actor, Bus]] = []

    async def start(actor_class: type[Actor], *args: Any, secure: bool = False, **kwargs: Any) -> Actor:
        actor_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name=actor_class.__name__)
        if secure:
            await install(actor_bus)
        actor = actor_class(actor_bus, *args, **kwargs)
        await actor.start()
        started.append((actor, actor_bus))
        return actor

    yield start
    for actor, actor_bus in reversed(started):
        await actor.stop()
        await actor_bus.close()


@pytest.fixture
async def gateway_url(config: Config, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The gateway app on a real loopback HTTP server, on its own bus connection.

    ``@pytest.mark.event_queue_limit(n)`` sets each event socket's queue bound.
    """
    from gateway.app import create_app
    from gateway.websocket import EVENT_QUEUE_LIMIT

    gateway_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name="gateway")
    app = create_app(gateway_bus)
    marker = request.node.get_closest_marker("event_queue_limit")
    if marker:
        app[EVENT_QUEUE_LIMIT] = marker.args[0]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await gateway_bus.close()


@pytest.fixture
async def api(gateway_url: str) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, gateway_url)


def liveness(request: pytest.FixtureRequest) -> tuple[dict[str, float], dict[str, float]]:
    """The scheduler's and the nodes' options that ``@pytest.mark.host_down_after(s)`` asks: a host
    is called down after ``s`` seconds without a report, and its node reports 8 times as often."""
    marker = request.node.get_closest_marker("host_down_after")
    if marker is None:
        return {}, {}
    down_after = float(marker.args[0])
    return (
        {"service_down_time": down_after, "liveness_interval": down_after / 10},
        {"report_interval": down_after / 8},
    )


@pytest.fixture
async def cloud(start_actor: StartActor, config: Config, request: pytest.FixtureRequest) -> list[Actor]:
    """Every actor in this process, each on its own bus connection, plus ``nodes`` test-driver nodes.

    Parametrize the node count with ``@pytest.mark.nodes(4)`` (default 1).
    """
    from actors.conductor.actor import ConductorActor
    from actors.identity.actor import IdentityActor
    from actors.image import ImageActor
    from actors.net.actor import NetActor
    from actors.scheduler import SchedulerActor
    from actors.volume import VolumeActor
    from node.actor import NodeActor
    from node.testnode import write_test_node_file

    marker = request.node.get_closest_marker("nodes")
    node_count = marker.args[0] if marker else 1
    scheduler, node = liveness(request)
    actors = [
        await start_actor(cls, config, secure=True, **(scheduler if cls is SchedulerActor else {}))
        for cls in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor)
    ]
    for number in range(1, node_count + 1):
        host = f"node-{number}"
        uri = write_test_node_file(
            config.data_dir / "nodes" / host / "testnode.xml", vcpus=64, memory_mb=65536
        )
        actors.append(await start_actor(NodeActor, config, host=host, libvirt_uri=uri, secure=True, **node))
    for node in actors[6:]:
        await node.report_capacity()  # type: ignore[attr-defined]
    return actors


@pytest.fixture(scope="session")
def test_guest() -> TestGuest:
    """The test guest of ``deploy.testguest`` (built once from Debian packages, then cached)."""
    return build_test_guest(default_cache_dir())
