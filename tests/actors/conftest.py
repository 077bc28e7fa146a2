"""Every actor's store on both backends: each test of this folder that uses ``config`` runs on a
sqlite file and on a database of its own in a real PostgreSQL (Debian's, started once per
session by ``deploy.postgres.LocalPostgres``). ``@pytest.mark.sqlite_only``: a test of what only
sqlite has (a store of an older schema on disk)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from bus import EmbeddedNatsServer
from deploy.postgres import LocalPostgres
from runtime.config import Config

BACKENDS = ("sqlite", "postgresql")

_databases = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about sqlite stores alone")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "config" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", BACKENDS[:1] if sqlite_only else BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture
async def config(
    request: pytest.FixtureRequest, backend: str, tmp_path, nats_server: EmbeddedNatsServer
) -> Config:
    database = None
    if backend == "postgresql":
        server: LocalPostgres = request.getfixturevalue("postgres")
        database = await server.create_database(f"test_{next(_databases)}")
    return Config(data_dir=tmp_path / "data", nats_url=nats_server.url, database=database)
