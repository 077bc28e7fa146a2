"""The conductor's periodic reads (its task watch's, and the deletions the owners' orphan sweeps
ask for) read the work in flight, not every instance: each query walks an index of the instances
(or actions) it looks for, on sqlite and on PostgreSQL, so a cloud of many resting instances
costs a round no more than one with none."""

from __future__ import annotations

from typing import Any

import pytest

from actors.conductor.instances import AFTER_MARKER, page_query
from actors.conductor.schema import (
    DELETED_SINCE,
    EXPIRED_RESIZES,
    MIGRATIONS,
    RESTING_IN,
    TASKS_IN_FLIGHT,
    UNANNOUNCED,
    UNFINISHED_ACTIONS,
)
from actors.net.instances import INSTANCE_PORTS
from actors.net.schema import MIGRATIONS as NET_MIGRATIONS
from actors.net.schema import PORT
from actors.net.secgroups import group_names_query
from runtime.config import Config
from runtime.states import VmState
from runtime.store import open_store

PERIODIC_READS: dict[str, tuple[str, tuple[Any, ...], str]] = {
    "tasks in flight": (TASKS_IN_FLIGHT, (), "instances_in_task"),
    "shelved to offload": (RESTING_IN, (VmState.SHELVED,), "instances_vm_state"),
    "resizes to confirm": (EXPIRED_RESIZES, (VmState.RESIZED, 1e9), "instances_vm_state"),
    "changes not announced": (UNANNOUNCED, (), "instances_unannounced"),
    "NIC changes not finished": (
        UNFINISHED_ACTIONS,
        ("attach_interface", "detach_interface", "2026-01-01T00:00:00Z"),
        "instance_actions_unfinished",
    ),
    "deleted since": (DELETED_SINCE, ("2026-01-01T00:00:00Z",), "instances_deleted"),
}
PARTIAL = {"instances_in_task", "instances_unannounced", "instance_actions_unfinished"}
"""Indexes of the rows in flight alone: a scan of one reads no resting row."""


def full_scans(plan: list[str], dialect: str, index: str) -> list[str]:
    """The steps of ``plan`` that read a whole table (or a whole index of every row)."""
    if dialect == "postgresql":
        return [line for line in plan if "Seq Scan" in line]
    return [line for line in plan if line.startswith("SCAN") and not (index in PARTIAL and index in line)]


async def query_plan(
    config: Config,
    query: str,
    params: tuple[Any, ...],
    store_name: str = "conductor",
    migrations: Any = MIGRATIONS,
) -> tuple[str, list[str]]:
    """The dialect of a store (the conductor's by default), and its plan of ``query``."""
    store = open_store(config, store_name, migrations)
    await store.open()
    try:
        async with store.transaction() as db:
            if db.dialect == "postgresql":  # tables this small are scanned unless scans are off
                await db.execute("SET LOCAL enable_seqscan = off")
                plan = [row["QUERY PLAN"] for row in await db.fetchall(f"EXPLAIN {query}", params)]
            else:
                plan = [row["detail"] for row in await db.fetchall(f"EXPLAIN QUERY PLAN {query}", params)]
            dialect = db.dialect
    finally:
        await store.close()
    return dialect, plan


@pytest.mark.parametrize("read", sorted(PERIODIC_READS))
async def test_each_periodic_read_walks_an_index_of_the_work_in_flight(config: Config, read: str) -> None:
    query, params, index = PERIODIC_READS[read]
    dialect, plan = await query_plan(config, query, params)

    assert any(index in line for line in plan), plan
    assert not full_scans(plan, dialect, index), plan


PAGES = {
    "a project's first": (["deleted = 0", "project_id = ?"], ("a-project",), "instances_project"),
    "a project's next": (
        ["deleted = 0", "project_id = ?", AFTER_MARKER],
        ("a-project", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "an-id"),
        "instances_project",
    ),
    "every project's next": (
        ["deleted = 0", AFTER_MARKER],
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "an-id"),
        "instances_listing",
    ),
}


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_a_page_of_instances_walks_its_own_in_order(config: Config, page: str) -> None:
    """However many instances other projects have, or come before the marker: the index's range
    from the page's first instance on, no sort."""
    clauses, params, index = PAGES[page]
    dialect, plan = await query_plan(config, f"{page_query(clauses)} LIMIT ?", (*params, 100))

    assert any(index in line for line in plan), plan
    assert not full_scans(plan, dialect, index), plan
    assert not [line for line in plan if "TEMP B-TREE" in line or "Sort" in line], plan
    if dialect == "sqlite" and AFTER_MARKER in clauses:
        assert any("created_at<?" in line for line in plan), plan
    elif AFTER_MARKER in clauses:
        assert any("Index Cond" in line and "created_at <=" in line for line in plan), plan


@pytest.mark.parametrize("scoped", [True, False], ids=["a project's", "every project's"])
async def test_a_pages_security_group_names_are_read_by_its_devices(config: Config, scoped: bool) -> None:
    """However many ports the project has: the page's devices' ports, through their index."""
    devices = tuple(f"device-{number}" for number in range(100))
    query = group_names_query(len(devices), scoped=scoped)
    params = (*devices, *(("a-project",) * 2 if scoped else ()))
    _, plan = await query_plan(config, query, params, "net", NET_MIGRATIONS)

    assert any("ports_device" in line for line in plan), plan
    assert not any("ports_project" in line for line in plan), plan


async def test_an_instances_ports_in_its_project_are_read_by_the_instance(config: Config) -> None:
    """``allocate_for_instance``'s first read: however many ports the project has, the instance's,
    through the index of devices (with their projects)."""
    query = f"{PORT.select} WHERE {INSTANCE_PORTS} ORDER BY r.rowid"
    _, plan = await query_plan(config, query, ("an-instance", "a-project"), "net", NET_MIGRATIONS)

    assert any("ports_device" in line for line in plan), plan
    assert not any("ports_project" in line for line in plan), plan
