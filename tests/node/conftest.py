"""The fixtures of the node tests that boot real QEMU guests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.testguest import TestGuest
from tests.node.real_guests import QemuCloud, qemu_cloud_of


@pytest.fixture
async def qemu_cloud(start_actor, config, gateway_url, test_guest: TestGuest) -> AsyncIterator[QemuCloud]:
    async for cloud in qemu_cloud_of(start_actor, config, gateway_url, test_guest, shutdown_timeout=30.0):
        yield cloud
