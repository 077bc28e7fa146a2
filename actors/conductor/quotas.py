"""Compute quotas (Nova's quota sets): limits per project, checked where each resource is made.

A project's limit of a resource is its row in ``quotas`` or else the default (``DEFAULT_QUOTAS``).
Usage is read inside the store transaction that makes the new instance (or key pair, or an
instance's metadata), and the store has one writer at a time (``runtime.store``: sqlite's
``BEGIN IMMEDIATE``, PostgreSQL's transaction lock), so two creates can never both see room for
one. Key pairs and metadata are counted there. The instances, their vCPUs and RAM are summed in
``project_usage`` by the database itself (``USAGE_TRIGGERS``): every change of an instance row's
project, flavor or ``deleted`` moves its project's sums in the same statement, whichever code
made it, so usage stays exact (a deleted instance stops counting the moment its row says so)
and a boot reads one row however many instances its project has.
"""

from __future__ import annotations

from typing import Any, cast

from api.conductor import DEFAULT_QUOTAS, ComputeQuotas, Quotas, QuotaUsage
from bus import Conflict, Forbidden, QuotaExceeded
from runtime.context import require_caller
from runtime.store import Db, Migration, Store

MIGRATION = """
    CREATE TABLE quotas (
        project_id TEXT NOT NULL, resource TEXT NOT NULL, hard_limit INTEGER NOT NULL,
        PRIMARY KEY (project_id, resource));
"""
UNITS = {"instances": "instances", "cores": "cores", "ram": "MB of RAM"}


async def limits_of(db: Db | Store, project_id: str) -> dict[str, int]:
    """The project's limits: its own where it has them, the defaults elsewhere."""
    rows = await db.fetchall("SELECT resource, hard_limit FROM quotas WHERE project_id = ?", (project_id,))
    return {**DEFAULT_QUOTAS, **{row["resource"]: row["hard_limit"] for row in rows}}


def _flavor_field(dialect: str, field: str, row: str = "") -> str:
    """An integer of an instance's flavor (JSON) in SQL, 0 where it has none; ``row``: ``NEW`` or
    ``OLD`` in a trigger."""
    flavor = f"{row}.flavor" if row else "flavor"
    if dialect == "postgresql":
        return f"COALESCE(({flavor}::json->>'{field}')::bigint, 0)"
    return f"COALESCE(json_extract({flavor}, '$.{field}'), 0)"


def _usage_migration(dialect: str) -> str:
    return f"""
    CREATE TABLE project_usage (
        project_id TEXT PRIMARY KEY, instances BIGINT NOT NULL, cores BIGINT NOT NULL,
        ram BIGINT NOT NULL);
    INSERT INTO project_usage (project_id, instances, cores, ram)
        SELECT project_id, COUNT(*), SUM({_flavor_field(dialect, "vcpus")}),
            SUM({_flavor_field(dialect, "ram")})
        FROM instances WHERE deleted = 0 GROUP BY project_id;
    """


USAGE_MIGRATION = Migration(sqlite=_usage_migration("sqlite"), postgresql=_usage_migration("postgresql"))
"""``project_usage``: each project's live instances, their vCPUs and RAM (MB), as they are now."""


def _counted(dialect: str) -> str:
    """The statement adding the NEW row to its project's usage, if it is live."""
    return (
        "INSERT INTO project_usage (project_id, instances, cores, ram)"
        f" SELECT NEW.project_id, 1, {_flavor_field(dialect, 'vcpus', 'NEW')},"
        f" {_flavor_field(dialect, 'ram', 'NEW')} WHERE NEW.deleted = 0"
        " ON CONFLICT (project_id) DO UPDATE SET instances = project_usage.instances + 1,"
        " cores = project_usage.cores + excluded.cores, ram = project_usage.ram + excluded.ram;"
    )


def _uncounted(dialect: str) -> str:
    """The statement taking the OLD row from its project's usage, if it was live."""
    return (
        "UPDATE project_usage SET instances = instances - 1,"
        f" cores = cores - {_flavor_field(dialect, 'vcpus', 'OLD')},"
        f" ram = ram - {_flavor_field(dialect, 'ram', 'OLD')}"
        " WHERE project_id = OLD.project_id AND OLD.deleted = 0;"
    )


USAGE_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS instances_usage_insert AFTER INSERT ON instances"
        f" BEGIN {_counted('sqlite')} END",
        "CREATE TRIGGER IF NOT EXISTS instances_usage_update"
        " AFTER UPDATE OF project_id, flavor, deleted ON instances"
        f" BEGIN {_uncounted('sqlite')} {_counted('sqlite')} END",
        "CREATE TRIGGER IF NOT EXISTS instances_usage_delete AFTER DELETE ON instances"
        f" BEGIN {_uncounted('sqlite')} END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION instances_usage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF TG_OP <> 'INSERT' THEN {_uncounted('postgresql')} END IF;"
        f" IF TG_OP <> 'DELETE' THEN {_counted('postgresql')} END IF;"
        " RETURN NULL; END $$",
        "CREATE OR REPLACE TRIGGER instances_usage"
        " AFTER INSERT OR DELETE OR UPDATE OF project_id, flavor, deleted ON instances"
        " FOR EACH ROW EXECUTE FUNCTION instances_usage()",
    ],
}
"""What keeps ``project_usage`` in step with the instances, by the store's dialect (made at start:
a migration is split on ";", which a trigger's body holds)."""


async def instance_usage(db: Db | Store, project_id: str) -> dict[str, int]:
    """What the project's live instances hold: how many, their vCPUs, their RAM (MB)."""
    row = await db.fetchone(
        "SELECT instances, cores, ram FROM project_usage WHERE project_id = ?", (project_id,)
    )
    return {resource: int(row[resource]) if row else 0 for resource in ("instances", "cores", "ram")}


async def check_instance_quota(db: Db, project_id: str, flavor: dict[str, Any]) -> None:
    """Inside the transaction that records a new instance of ``flavor``.

    :raises QuotaExceeded: the project would go past its limit of instances, vCPUs or RAM.
    """
    limits = await limits_of(db, project_id)
    wanted = {"instances": 1, "cores": int(flavor.get("vcpus", 0)), "ram": int(flavor.get("ram", 0))}
    if all(limits[resource] < 0 for resource in wanted):
        return  # unlimited: the project's instances are not counted
    used = await instance_usage(db, project_id)
    for resource, amount in wanted.items():
        limit = limits[resource]
        if limit >= 0 and used[resource] + amount > limit:
            raise QuotaExceeded(
                f"Quota exceeded for {resource}: Requested {amount}, but already used {used[resource]}"
                f" of {limit} {UNITS[resource]}"
            )


async def check_count(db: Db | Store, project_id: str, resource: str, count: int) -> None:
    """:raises QuotaExceeded: ``count`` of ``resource`` (metadata items, key pairs) is past the limit."""
    limit = (await limits_of(db, project_id))[resource]
    if 0 <= limit < count:
        raise QuotaExceeded(f"Quota exceeded for {resource}: at most {limit}")


def _check_reader(project_id: str) -> None:
    ctx = require_caller()
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow reading the quotas of project {project_id}.")


def _check_admin() -> None:
    if not require_caller().is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.")


class QuotaBook(ComputeQuotas):
    """Serves ``api.conductor.ComputeQuotas``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_quotas(self, *, project_id: str) -> Quotas:
        _check_reader(project_id)
        return cast(Quotas, await limits_of(self.store, project_id))

    async def get_default_quotas(self) -> Quotas:
        return cast(Quotas, dict(DEFAULT_QUOTAS))

    async def get_quota_usage(self, *, project_id: str, user_id: str | None = None) -> dict[str, QuotaUsage]:
        _check_reader(project_id)
        limits = await limits_of(self.store, project_id)
        used = await instance_usage(self.store, project_id)
        keypairs = await self.store.fetchone(
            "SELECT COUNT(*) AS n FROM keypairs WHERE user_id = ?", (user_id or require_caller().user_id,)
        )
        used["key_pairs"] = int(keypairs["n"]) if keypairs else 0
        used["metadata_items"] = 0  # a per-instance limit: nothing is used project-wide
        return {
            resource: {"limit": limit, "in_use": used[resource], "reserved": 0}
            for resource, limit in limits.items()
        }

    async def set_quotas(self, *, project_id: str, limits: dict[str, int], force: bool = False) -> Quotas:
        _check_admin()
        async with self.store.transaction() as db:
            if not force:
                used = await instance_usage(db, project_id)
                for resource, limit in limits.items():
                    if resource in used and 0 <= limit < used[resource]:
                        raise Conflict(
                            f"Quota limit {limit} for {resource} must be at least {used[resource]}, what"
                            " the project uses (or force it)"
                        )
            for resource, limit in limits.items():
                await db.execute(
                    "DELETE FROM quotas WHERE project_id = ? AND resource = ?", (project_id, resource)
                )
                await db.execute(
                    "INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?)",
                    (project_id, resource, limit),
                )
            return cast(Quotas, await limits_of(db, project_id))

    async def delete_quotas(self, *, project_id: str) -> None:
        _check_admin()
        await self.store.execute("DELETE FROM quotas WHERE project_id = ?", (project_id,))
