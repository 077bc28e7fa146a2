"""Shared fixtures: a real nats-server per test on a free loopback port."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from bus import Bus, EmbeddedNatsServer

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@pytest.fixture
async def nats_server(tmp_path) -> AsyncIterator[EmbeddedNatsServer]:
    async with EmbeddedNatsServer(tmp_path) as server:
        yield server


@pytest.fixture
async def bus(nats_server: EmbeddedNatsServer) -> AsyncIterator[Bus]:
    async with await Bus.connect(nats_server.url, name="test-client") as connection:
        yield connection
