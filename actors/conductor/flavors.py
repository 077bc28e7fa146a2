"""Flavors: the sizes an instance may have (Nova's five defaults, made at the first start), and
their extra specs (Nova's), of which aiostack reads the maxima of a live change (``MAXIMA``)."""

from __future__ import annotations

from api.conductor import Flavor, FlavorExtraSpecs, Flavors
from api.scheduler import CONTAINER_HYPERVISOR_TYPE
from bus import InvalidRequest, NotFound
from runtime.store import Db, Store

HYPERVISOR_TYPE_SPEC = "capabilities:hypervisor_type"
"""The extra spec that sends a flavor's instances to one kind of host (``lxc``: containers), as
Nova's ComputeCapabilitiesFilter matches it against each host's ``hypervisor_type``."""
MAXIMA = {"aiostack:max_vcpus": ("max_vcpus", "vcpus"), "aiostack:max_ram_mb": ("max_ram", "ram")}
"""The extra specs that bound a live change of an instance of the flavor: each key, the ``Flavor``
field it becomes (``find_flavor``), and the flavor's own field it may not be below."""

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
    """The flavor with that id, else the one with that name, with its live-change maxima."""
    flavor = await store.fetchone(
        "SELECT * FROM flavors WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
        (flavor_ref, flavor_ref, flavor_ref),
        row=Flavor,
    )
    if flavor is None:
        return None
    specs = await extra_specs_of(store, flavor["id"])
    if "aiostack:max_vcpus" in specs:
        flavor["max_vcpus"] = int(specs["aiostack:max_vcpus"])
    if "aiostack:max_ram_mb" in specs:
        flavor["max_ram"] = int(specs["aiostack:max_ram_mb"])
    if HYPERVISOR_TYPE_SPEC in specs:
        flavor["hypervisor_type"] = hypervisor_type_of(specs[HYPERVISOR_TYPE_SPEC])
    return flavor


def is_container_flavor(flavor: Flavor) -> bool:
    """Whether the flavor's instances are containers (they run on LXC hosts)."""
    return flavor.get("hypervisor_type") == CONTAINER_HYPERVISOR_TYPE


def hypervisor_type_of(value: str) -> str:
    """The host kind a ``capabilities:hypervisor_type`` extra spec asks for (Nova's ``s== lxc``
    or plain ``lxc``)."""
    return value.removeprefix("s==").strip().lower()


async def extra_specs_of(db: Db | Store, flavor_id: str) -> dict[str, str]:
    rows = await db.fetchall(
        "SELECT key, value FROM flavor_extra_specs WHERE flavor_id = ? ORDER BY key", (flavor_id,)
    )
    return {row["key"]: row["value"] for row in rows}


def check_maxima(flavor: Flavor, extra_specs: dict[str, str]) -> None:
    """:raises InvalidRequest: an aiostack maximum that is no whole number or is below the flavor's own."""
    own_sizes = {"vcpus": flavor["vcpus"], "ram": flavor["ram"]}
    for key, (_, own) in MAXIMA.items():
        if key not in extra_specs:
            continue
        value = extra_specs[key]
        if not value.isdigit() or int(value) < own_sizes[own]:
            raise InvalidRequest(
                f"Validation failed; extra spec {key} must be a whole number no smaller than the flavor's"
                f" {own} ({own_sizes[own]}), not {value!r}."
            )


class FlavorSpecs(FlavorExtraSpecs):
    """Serves ``api.conductor.FlavorExtraSpecs``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _flavor(self, flavor_id: str) -> Flavor:
        flavor = await self.store.fetchone("SELECT * FROM flavors WHERE id = ?", (flavor_id,), row=Flavor)
        if flavor is None:
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return flavor

    async def get_extra_specs(self, *, flavor_id: str) -> dict[str, str]:
        await self._flavor(flavor_id)
        return await extra_specs_of(self.store, flavor_id)

    async def set_extra_specs(self, *, flavor_id: str, extra_specs: dict[str, str]) -> dict[str, str]:
        check_maxima(await self._flavor(flavor_id), extra_specs)
        async with self.store.transaction() as db:
            await db.executemany(
                "INSERT INTO flavor_extra_specs (flavor_id, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (flavor_id, key) DO UPDATE SET value = excluded.value",
                [(flavor_id, key, value) for key, value in extra_specs.items()],
            )
            return await extra_specs_of(db, flavor_id)

    async def delete_extra_spec(self, *, flavor_id: str, key: str) -> None:
        await self._flavor(flavor_id)
        deleted = await self.store.execute(
            "DELETE FROM flavor_extra_specs WHERE flavor_id = ? AND key = ?", (flavor_id, key)
        )
        if not deleted:
            raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")


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
