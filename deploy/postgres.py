"""PostgreSQL from Debian's package, run by aiostack itself: ``initdb`` in a directory of its own
(owned by the ``postgres`` user when aiostack runs as root, as Debian's ``/var/lib/postgresql``
is), a role ``aiostack`` with a new password (SCRAM), a database ``aiostack``.

``LocalPostgres`` listens on a unix socket in its directory only (no TCP): the store tests
run every actor's store on it; the multi-host harness (``deploy.hosts.start_postgres``) runs the
same server on a database host's address.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from deploy.privacy import write_private

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian 12's PostgreSQL (the ``postgresql`` package)."""
ROLE = "aiostack"
DATABASE = "aiostack"
PORT = 5432


class PostgresError(Exception):
    """PostgreSQL could not be set up or started (its output says why)."""


def server_user() -> str | None:
    """Who runs PostgreSQL: ``postgres`` when aiostack runs as root (PostgreSQL refuses root)."""
    return "postgres" if os.geteuid() == 0 else None


def prepare(directory: Path) -> tuple[Path, str]:
    """Give ``directory`` to the server's user and write a new password for it; the password
    file (0600, the server's user's) and the password."""
    password = secrets.token_urlsafe(24)
    password_file = directory / "password"
    write_private(password_file, password + "\n")
    user = server_user()
    if user:
        shutil.chown(directory, user, user)
        shutil.chown(password_file, user, user)
    return password_file, password


def initdb_argv(data: Path, password_file: Path) -> list[str]:
    return [
        str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", ROLE, "--pwfile", str(password_file),
        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions",
    ]  # fmt: skip


def server_argv(data: Path, *, listen: str, port: int, socket_dir: Path) -> list[str]:
    """The server on ``listen:port`` (``listen`` empty: the unix socket in ``socket_dir`` only); a
    client gone without a word (a host cut off) is noticed within about 11 s of silence."""
    return [
        str(POSTGRES_BIN / "postgres"), "-D", str(data), "-c", f"listen_addresses={listen}",
        "-c", f"port={port}", "-c", f"unix_socket_directories={socket_dir}", "-c", "max_connections=300",
        "-c", "tcp_keepalives_idle=5", "-c", "tcp_keepalives_interval=2", "-c", "tcp_keepalives_count=3",
    ]  # fmt: skip


def as_server_user(argv: list[str]) -> list[str]:
    user = server_user()
    return ["runuser", "-u", user, "--", *argv] if user else argv


class LocalPostgres:
    """A PostgreSQL server on a unix socket in a new directory; ``with`` starts it and removes it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aiostack-postgres-"))
        self.password = ""
        self._server: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{ROLE}:{quote(self.password)}@/{database}?host={quote(str(self.dir))}"

    def __enter__(self) -> LocalPostgres:
        try:
            password_file, self.password = prepare(self.dir)
            _run(as_server_user(initdb_argv(self.dir / "data", password_file)))
            self.start()
            _run([*self._psql("postgres"), "-c", f"CREATE DATABASE {DATABASE}"], password=self.password)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self) -> None:
        """Run the server (again, after ``stop``) and return once it takes connections."""
        self._server = subprocess.Popen(
            as_server_user(server_argv(self.dir / "data", listen="", port=PORT, socket_dir=self.dir)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()

    def stop(self, *, discard: bool = False) -> None:
        """Stop the server ("fast" shutdown: connections are cut), keeping its data; with
        ``discard``, "immediate" (no shutdown checkpoint: the data is about to be removed)."""
        if self._server is not None and self._server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._server.pid, signal.SIGQUIT if discard else signal.SIGINT)
            try:
                self._server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait()

    def _psql(self, database: str) -> list[str]:
        return [str(POSTGRES_BIN / "psql"), "-h", str(self.dir), "-p", str(PORT), "-U", ROLE, "-d", database]

    def _wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        ready = [str(POSTGRES_BIN / "pg_isready"), "-q", "-h", str(self.dir), "-p", str(PORT)]
        while subprocess.run(ready, check=False).returncode != 0:
            if self._server is not None and self._server.poll() is not None:
                raise PostgresError(f"postgres exited {self._server.returncode}")
            if time.monotonic() > end:
                raise PostgresError(f"postgres in {self.dir} was not ready within {timeout} s")
            time.sleep(0.1)

    async def create_database(self, name: str) -> str:
        """A new, empty database; its DSN."""
        import asyncpg

        connection = await asyncpg.connect(self.dsn("postgres"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.dsn(name)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(discard=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _run(argv: list[str], password: str | None = None) -> None:
    env = {**os.environ, "PGPASSWORD": password} if password else None
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False, env=env)
    if result.returncode != 0:
        text = (result.stdout + result.stderr).decode(errors="replace")
        raise PostgresError(f"{' '.join(argv[:3])} exited {result.returncode}: {text}")
