"""Flavors: the sizes an instance may have (Nova's five defaults, made at the first start)."""

from __future__ import annotations

from api.conductor import Flavor, Flavors
from bus import NotFound
from runtime.store import Store

DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)
"""(id, name, vCPUs, RAM in MB, disk in GB)."""


async def add_default_flavors(store: Store) -> None:
    """Make the default flavors that are missing."""
    async with store.transaction() as db:
        await db.executemany(
            "INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            DEFAULT_FLAVORS,
        )


async def find_flavor(store: Store, flavor_ref: str) -> Flavor | None:
    """The flavor with that id, else the one with that name."""
    return await store.fetchone(
        "SELECT * FROM flavors WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
        (flavor_ref, flavor_ref, flavor_ref),
        row=Flavor,
    )


class FlavorCatalog(Flavors):
    """Serves ``api.conductor.Flavors``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_flavors(self) -> list[Flavor]:
        return await self.store.fetchall("SELECT * FROM flavors ORDER BY ram, id", row=Flavor)

    async def get_flavor(self, *, flavor_id: str) -> Flavor:
        flavor = await find_flavor(self.store, flavor_id)
        if flavor is None:
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return flavor
