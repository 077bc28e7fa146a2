"""A project's instance usage (``actors.conductor.quotas``): the database keeps ``project_usage`` in
step with the instance rows, whatever statement changes them, on sqlite and on PostgreSQL; the
table is summed from the rows already there when a store of an earlier version is migrated."""

from __future__ import annotations

import json
from collections.abc import Sequence

from actors.conductor.quotas import USAGE_TRIGGERS, instance_usage
from actors.conductor.schema import MIGRATIONS
from runtime.config import Config
from runtime.store import Db, Step, Store, open_store

PROJECTS = ("p1", "p2", "p3")


async def _opened(config: Config, migrations: Sequence[Step] = MIGRATIONS, *, triggers: bool = True) -> Store:
    store = open_store(config, "conductor", migrations)
    await store.open()
    if triggers:
        async with store.transaction() as db:
            for trigger in USAGE_TRIGGERS[db.dialect]:
                await db.execute(trigger)
    return store


async def _insert(db: Db | Store, uuid: str, project: str, vcpus: int, ram: int, deleted: int = 0) -> None:
    await db.execute(
        "INSERT INTO instances (uuid, name, project_id, user_id, flavor, image_ref, requested_networks,"
        " vm_state, created_at, updated_at, deleted) VALUES (?, ?, ?, 'u', ?, 'i', '[]', 'active', ?, ?, ?)",
        (uuid, uuid, project, json.dumps({"vcpus": vcpus, "ram": ram}), "2026-01-01", "2026-01-01", deleted),
    )


async def _counted_afresh(store: Store, project: str) -> dict[str, int]:
    """The project's live instances, vCPUs and RAM, summed here from every row."""
    rows = await store.fetchall(
        "SELECT flavor FROM instances WHERE project_id = ? AND deleted = 0", (project,)
    )
    flavors = [json.loads(row["flavor"]) for row in rows]
    return {
        "instances": len(flavors),
        "cores": sum(flavor["vcpus"] for flavor in flavors),
        "ram": sum(flavor["ram"] for flavor in flavors),
    }


async def _assert_in_step(store: Store) -> None:
    for project in PROJECTS:
        assert await instance_usage(store, project) == await _counted_afresh(store, project), project


async def test_usage_follows_every_change_of_an_instance_row(config: Config) -> None:
    store = await _opened(config)
    try:
        assert await instance_usage(store, "p1") == {"instances": 0, "cores": 0, "ram": 0}
        async with store.transaction() as db:
            await _insert(db, "a", "p1", 1, 512)
            await _insert(db, "b", "p1", 2, 2048)
            await _insert(db, "c", "p2", 4, 4096)
            await _insert(db, "gone", "p1", 8, 8192, deleted=1)
        assert await instance_usage(store, "p1") == {"instances": 2, "cores": 3, "ram": 2560}
        await _assert_in_step(store)
        changes = [  # a resize, a move to another project, a delete, a row gone, the deleted one's too
            ("UPDATE instances SET flavor = ? WHERE uuid = 'a'", (json.dumps({"vcpus": 2, "ram": 1024}),)),
            ("UPDATE instances SET project_id = 'p3' WHERE uuid = 'b'", ()),
            ("UPDATE instances SET deleted = 1, vm_state = 'deleted' WHERE uuid = 'c'", ()),
            ("UPDATE instances SET vm_state = 'stopped' WHERE uuid = 'a'", ()),
            ("DELETE FROM instances WHERE uuid IN ('b', 'gone')", ()),
        ]
        for sql, params in changes:
            await store.execute(sql, params)
            await _assert_in_step(store)
        assert await instance_usage(store, "p1") == {"instances": 1, "cores": 2, "ram": 1024}
        assert (
            await instance_usage(store, "p2")
            == await instance_usage(store, "p3")
            == {
                "instances": 0,
                "cores": 0,
                "ram": 0,
            }
        )
    finally:
        await store.close()


async def test_a_store_of_an_earlier_version_gets_its_usage_summed_from_its_instances(config: Config) -> None:
    earlier = await _opened(config, MIGRATIONS[:-1], triggers=False)
    try:
        async with earlier.transaction() as db:
            await _insert(db, "a", "p1", 1, 512)
            await _insert(db, "b", "p1", 2, 2048)
            await _insert(db, "c", "p2", 4, 4096)
            await _insert(db, "gone", "p2", 8, 8192, deleted=1)
    finally:
        await earlier.close()
    store = await _opened(config)
    try:
        assert await instance_usage(store, "p1") == {"instances": 2, "cores": 3, "ram": 2560}
        assert await instance_usage(store, "p2") == {"instances": 1, "cores": 4, "ram": 4096}
        await _insert(store, "d", "p2", 1, 512)
        await _assert_in_step(store)
    finally:
        await store.close()
