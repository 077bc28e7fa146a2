"""The scheduler actor (nova-scheduler + Placement): host capacity, liveness and claims.

Compute nodes report their capacity (which is also their heartbeat); a boot asks
``select_destinations`` for a host, which filters, weighs and claims in one transaction.
Every change of a host's usage is a compare-and-swap on its ``generation``, so replicas
sharing the sqlite file never put a host over capacity.

Its API, events and version history: ``api/scheduler.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Gauge

from actors.orphans import ORPHAN_SWEEP_INTERVAL, sweep_orphans_forever
from api.scheduler import (
    CONTAINER_HYPERVISOR_TYPE,
    HEARTBEAT,
    Allocation,
    Destination,
    HostLiveness,
    HostView,
    Released,
    Scheduler,
)
from bus import Actor, AiostackError, Bus, Conflict, NotFound, NoValidHost
from bus.envelope import request_id_of
from runtime.config import Config
from runtime.events import publish_event
from runtime.metrics import on_collect
from runtime.stamps import utcnow
from runtime.store import Db, open_store

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE hosts (
        host TEXT PRIMARY KEY, hypervisor_type TEXT NOT NULL,
        vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
        vcpus_used INTEGER NOT NULL DEFAULT 0 CHECK (vcpus_used >= 0),
        memory_mb_used INTEGER NOT NULL DEFAULT 0 CHECK (memory_mb_used >= 0),
        disk_gb_used INTEGER NOT NULL DEFAULT 0 CHECK (disk_gb_used >= 0),
        generation INTEGER NOT NULL DEFAULT 0, last_seen REAL NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        announced_up INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE allocations (
        instance_uuid TEXT PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(host),
        vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE INDEX allocations_host ON allocations(host);
    """,
    "ALTER TABLE hosts ADD COLUMN disabled_reason TEXT",
    # the claim of the flavor a resize leaves, held (and counted in its host's usage) until the
    # resize is confirmed or reverted; the instance's ``allocations`` row is the new flavor's
    """
    CREATE TABLE resize_held (
        instance_uuid TEXT PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(host),
        vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    """,
    # Placement's inventory: what each host offers after the allocation ratios (``capacity``),
    # indexed by what is free in the order a claim picks hosts, so a claim reads one row
    """
    ALTER TABLE hosts ADD COLUMN vcpus_capacity INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN memory_mb_capacity INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN disk_gb_capacity INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX hosts_by_free ON hosts (
        (memory_mb_capacity - memory_mb_used) DESC, (vcpus_capacity - vcpus_used) DESC, host);
    """,
]

# hosts.generation: bumped by every change of a row but a bare heartbeat (inventory, usage,
# announced_up); usage changes only through ``_swap_usage``, which checks it.
# hosts.announced_up: the liveness last published (node.up = 1, node.down = 0).

RESOURCES = ("vcpus", "memory_mb", "disk_gb")
HOSTS = Gauge(
    "aiostack_hosts",
    "Compute hosts by state: up (reported within the service down time) or down",
    ["state"],
)
CAS_ATTEMPTS = 5

FREE = {resource: f"({resource}_capacity - {resource}_used)" for resource in RESOURCES}
"""What is left of each resource on a host, in SQL (capacity: total x allocation ratio)."""
CONTAINER_HOSTS = CONTAINER_HYPERVISOR_TYPE
"""Hosts that run containers take only the instances that ask for them (``select_destinations``'
``hypervisor_type``), and those land nowhere else."""
BEST_HOST = (
    "SELECT * FROM hosts WHERE enabled = 1 AND last_seen >= :since {excluding}"
    f" AND hypervisor_type {{kind}} '{CONTAINER_HOSTS}'"
    f" AND {FREE['memory_mb']} >= :memory_mb AND {FREE['vcpus']} >= :vcpus"
    f" AND {FREE['disk_gb']} >= :disk_gb"
    f" ORDER BY {FREE['memory_mb']} DESC, {FREE['vcpus']} DESC, host LIMIT 1"
)
"""The claim's pick: the live, enabled host with the most free RAM (then vCPUs, then by name)
that fits; it walks the ``hosts_by_free`` index and stops at the first host that fits."""

HOST_ROWS = (
    "SELECT hosts.*, COUNT(allocations.instance_uuid) AS instances FROM hosts"
    " LEFT JOIN allocations ON allocations.host = hosts.host {where}"
    " GROUP BY hosts.host ORDER BY hosts.host"
)

T = TypeVar("T")


def runs_containers(row: dict[str, Any]) -> bool:
    return bool(row["hypervisor_type"] == CONTAINER_HOSTS)


class _StaleGeneration(Exception):
    """A host's generation moved between read and write; the transaction rolls back."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _swap_usage(db: Db, host: str, generation: int, delta: dict[str, int]) -> None:
    """Add ``delta`` to a host's usage if its generation is still ``generation``.

    :raises _StaleGeneration: the generation moved (another writer got there first).
    """
    changed = await db.execute(
        "UPDATE hosts SET vcpus_used = vcpus_used + ?, memory_mb_used = memory_mb_used + ?,"
        " disk_gb_used = disk_gb_used + ?, generation = generation + 1"
        " WHERE host = ? AND generation = ?",
        (*(delta[resource] for resource in RESOURCES), host, generation),
    )
    if changed != 1:
        raise _StaleGeneration(host)


class SchedulerActor(Actor, Scheduler):
    name = "scheduler"
    orphan_sweep_interval = ORPHAN_SWEEP_INTERVAL

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        service_down_time: float = 60.0,
        cpu_allocation_ratio: float = 16.0,
        ram_allocation_ratio: float = 1.0,
        disk_allocation_ratio: float = 1.0,
        liveness_interval: float = 5.0,
    ) -> None:
        super().__init__(bus)
        self._stop_counting: Callable[[], None] = lambda: None
        """Ends the metrics refresher ``on_start`` registers (nothing until it has)."""
        ratios = (cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio)
        if min(service_down_time, liveness_interval, *ratios) <= 0:
            raise ValueError("scheduler times and allocation ratios must be positive")
        self.store = open_store(config, "scheduler", MIGRATIONS)
        self.service_down_time = service_down_time
        self.liveness_interval = liveness_interval
        self.allocation_ratios = dict(zip(RESOURCES, ratios, strict=True))
        self._heartbeats: Subscription | None = None

    async def on_start(self) -> None:
        await self.store.open()
        await self._apply_allocation_ratios()
        self._heartbeats = await self.bus.subscribe(
            self.bus.subject(HEARTBEAT.pattern), self._on_heartbeat, queue="scheduler"
        )
        self.spawn(self._watch_liveness(), name="scheduler-liveness")
        self._stop_counting = on_collect(self.count_hosts)
        self.spawn(
            sweep_orphans_forever(
                self.bus, self._claimants, self._release, "claim", self.orphan_sweep_interval
            ),
            name="scheduler-orphans",
        )

    async def _claimants(self, among: Sequence[str] | None) -> list[str]:
        """The instances with a claim (held or not): all, or those ``among`` these."""
        where, params = "", list(among or ())
        if among is not None:
            where = f" WHERE instance_uuid IN ({', '.join('?' * len(among))})"
        rows = await self.store.fetchall(
            f"SELECT instance_uuid FROM allocations{where}"
            f" UNION SELECT instance_uuid FROM resize_held{where}",
            params * 2,
        )
        return [row["instance_uuid"] for row in rows]

    async def _on_heartbeat(self, msg: Msg) -> None:
        """A node's heartbeat on ``<prefix>.hb.<host>``: the host is the subject's, never the body's."""
        request_id = request_id_of(msg.data) or ""
        try:
            request_id, capacity = HEARTBEAT.parse(msg.data, self.bus.max_bytes)
            reported = await self.report_capacity(
                host=HEARTBEAT.fields_of(self.bus, msg.subject)["host"], **capacity
            )
            await self.bus.reply(msg, request_id, reported)
        except AiostackError as exc:
            await self.bus.reply(msg, request_id, error=exc.to_wire())

    async def on_stop(self) -> None:
        self._stop_counting()
        if self._heartbeats is not None:
            await self._heartbeats.unsubscribe()
        await self.store.close()

    # -- host views -----------------------------------------------------------------------

    def _capacities(self, totals: dict[str, Any]) -> dict[str, int]:
        """What a host with these totals offers: each total x its allocation ratio."""
        return {
            f"{resource}_capacity": int(totals[resource] * self.allocation_ratios[resource])
            for resource in RESOURCES
        }

    async def _apply_allocation_ratios(self) -> None:
        """Bring every host's capacity to this scheduler's allocation ratios (they may have changed
        since the last start); a host whose capacity changes gets a new generation."""
        async with self.store.transaction() as db:
            for row in await db.fetchall("SELECT * FROM hosts"):
                capacities = self._capacities(row)
                if any(row[column] != value for column, value in capacities.items()):
                    await db.execute(
                        "UPDATE hosts SET vcpus_capacity = :vcpus_capacity,"
                        " memory_mb_capacity = :memory_mb_capacity,"
                        " disk_gb_capacity = :disk_gb_capacity, generation = generation + 1"
                        " WHERE host = :host",
                        {**capacities, "host": row["host"]},
                    )

    @staticmethod
    def _free(row: dict[str, Any], resource: str) -> int:
        """What is left of ``resource`` on a host: its capacity - used."""
        return int(row[f"{resource}_capacity"]) - int(row[f"{resource}_used"])

    def _alive(self, row: dict[str, Any], now: float) -> bool:
        return now - row["last_seen"] <= self.service_down_time

    async def count_hosts(self) -> None:
        """Bring ``aiostack_hosts`` up to date (before each collection of the metrics)."""
        now = time.time()
        rows = await self.store.fetchall("SELECT last_seen FROM hosts")
        up = sum(self._alive(row, now) for row in rows)
        HOSTS.labels("up").set(up)
        HOSTS.labels("down").set(len(rows) - up)

    def _view(self, row: dict[str, Any], now: float) -> HostView:
        """A host as ``list_hosts`` shows it (``row`` from ``HOST_ROWS``)."""
        view: Any = {
            "host": row["host"],
            "hypervisor_type": row["hypervisor_type"],
            "enabled": bool(row["enabled"]),
            "disabled_reason": row["disabled_reason"],
            "alive": self._alive(row, now),
            "last_seen": row["last_seen"],
            "generation": row["generation"],
            "instances": row["instances"],
        }
        for resource in RESOURCES:
            view[resource] = row[resource]
            view[f"{resource}_used"] = row[f"{resource}_used"]
            view[f"{resource}_free"] = self._free(row, resource)
        return view

    async def _views(self, db: Db, hosts: list[str]) -> list[HostView]:
        marks = ", ".join("?" * len(hosts))
        rows = await db.fetchall(HOST_ROWS.format(where=f"WHERE hosts.host IN ({marks})"), hosts)
        now = time.time()
        return [self._view(row, now) for row in rows]

    # -- capacity and liveness ------------------------------------------------------------

    async def report_capacity(
        self, *, host: str, vcpus: int, memory_mb: int, disk_gb: int, hypervisor_type: str = "test"
    ) -> HostView:
        """A node's totals and heartbeat; a new host, or one back after ``node.down``, is ``node.up``."""
        values = {
            "vcpus": vcpus,
            "memory_mb": memory_mb,
            "disk_gb": disk_gb,
            "host": host,
            "hypervisor_type": hypervisor_type,
        }
        async with self.store.transaction() as db:
            old = await db.fetchone("SELECT * FROM hosts WHERE host = ?", (host,))
            came_up = old is None or not old["announced_up"]
            changed = came_up or any(old[key] != value for key, value in values.items())
            await db.execute(
                "INSERT INTO hosts (host, hypervisor_type, vcpus, memory_mb, disk_gb, last_seen,"
                " vcpus_capacity, memory_mb_capacity, disk_gb_capacity)"
                " VALUES (:host, :hypervisor_type, :vcpus, :memory_mb, :disk_gb, :last_seen,"
                " :vcpus_capacity, :memory_mb_capacity, :disk_gb_capacity)"
                " ON CONFLICT (host) DO UPDATE SET hypervisor_type = excluded.hypervisor_type,"
                " vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, disk_gb = excluded.disk_gb,"
                " vcpus_capacity = excluded.vcpus_capacity,"
                " memory_mb_capacity = excluded.memory_mb_capacity,"
                " disk_gb_capacity = excluded.disk_gb_capacity,"
                " last_seen = excluded.last_seen, announced_up = 1,"
                " generation = hosts.generation + :bump",
                {
                    **values,
                    **self._capacities(values),
                    "last_seen": time.time(),
                    "bump": int(changed),
                },
            )
            (view,) = await self._views(db, [host])
        if came_up:
            log.info("host %s is up", host)
            await publish_event(self.bus, "node", host, None, "node.up", view)
        return view

    async def _watch_liveness(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_interval)
            await self._mark_down()

    async def _mark_down(self) -> None:
        """Announce hosts whose last report is older than ``service_down_time`` as down, once."""
        async with self.store.transaction() as db:
            gone = await db.fetchall(
                "UPDATE hosts SET announced_up = 0, generation = generation + 1"
                " WHERE announced_up = 1 AND last_seen < ? RETURNING host",
                (time.time() - self.service_down_time,),
            )
            views = await self._views(db, [row["host"] for row in gone]) if gone else []
        for view in views:
            log.warning("host %s is down: no report since %.3f", view["host"], view["last_seen"])
            await publish_event(self.bus, "node", view["host"], None, "node.down", view)

    async def list_hosts(self) -> list[HostView]:
        """Every host: totals, used, free (after allocation ratios), alive, generation, instances."""
        rows = await self.store.fetchall(HOST_ROWS.format(where=""))
        now = time.time()
        return [self._view(row, now) for row in rows]

    async def list_host_liveness(self) -> list[HostLiveness]:
        now = time.time()
        rows = await self.store.fetchall("SELECT host, last_seen FROM hosts ORDER BY host")
        return [{"host": row["host"], "alive": self._alive(row, now)} for row in rows]

    async def set_host_enabled(
        self, *, host: str, enabled: bool, disabled_reason: str | None = None
    ) -> HostView:
        async with self.store.transaction() as db:
            changed = await db.execute(
                "UPDATE hosts SET enabled = ?, disabled_reason = ?, generation = generation + 1"
                " WHERE host = ?",
                (int(enabled), None if enabled else disabled_reason, host),
            )
            if not changed:
                raise NotFound(f"no compute host {host}")
            [view] = await self._views(db, [host])
        log.info(
            "host %s %s (%s)",
            host,
            "enabled" if enabled else "disabled",
            disabled_reason or "no reason given",
        )
        return view

    # -- claims ---------------------------------------------------------------------------

    async def select_destinations(
        self,
        *,
        instance_uuid: str,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        exclude_hosts: list[str] | None = None,
        hypervisor_type: str | None = None,
    ) -> Destination:
        """Claim on the best host (``api.scheduler.Scheduler.select_destinations``)."""
        request = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
        excluded = set(exclude_hosts or ())
        containers = hypervisor_type == CONTAINER_HOSTS
        host = await self._retrying(
            f"claim for {instance_uuid}", lambda: self._claim(instance_uuid, request, excluded, containers)
        )
        return {"host": host}

    async def _claim(
        self, instance_uuid: str, request: dict[str, int], excluded: set[str], containers: bool
    ) -> str:
        async with self.store.transaction() as db:
            existing = await db.fetchone(
                "SELECT host FROM allocations WHERE instance_uuid = ?", (instance_uuid,)
            )
            if existing is not None:
                return existing["host"]
            best = await self._best_host(db, request, excluded, time.time(), containers)
            await _swap_usage(db, best["host"], best["generation"], request)
            await db.execute(
                "INSERT INTO allocations (instance_uuid, host, vcpus, memory_mb, disk_gb, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (instance_uuid, best["host"], *(request[resource] for resource in RESOURCES), utcnow()),
            )
        log.info("claimed %s on %s", instance_uuid, best["host"])
        return best["host"]

    async def _best_host(
        self, db: Db, request: dict[str, int], excluded: set[str], now: float, containers: bool
    ) -> dict[str, Any]:
        """The host with the most free RAM (then vCPUs, then by name) that can take ``request``,
        among the hosts of containers (``containers``) or the others.

        :raises NoValidHost: none can, with how many hosts failed which filter.
        """
        names = {f"excluded_{index}": host for index, host in enumerate(sorted(excluded))}
        excluding = f"AND host NOT IN ({', '.join(f':{name}' for name in names)})" if names else ""
        best = await db.fetchone(
            BEST_HOST.format(excluding=excluding, kind="=" if containers else "<>"),
            {**request, **names, "since": now - self.service_down_time},
        )
        if best is not None:
            return best
        rows = await db.fetchall("SELECT * FROM hosts")
        reasons = Counter(
            filter(None, (self._rejection(row, request, excluded, now, containers) for row in rows))
        )
        raise self._no_valid_host(request, reasons, len(rows))

    def _rejection(
        self, row: dict[str, Any], request: dict[str, int], excluded: set[str], now: float, containers: bool
    ) -> str | None:
        """Why a host cannot take ``request`` (the first filter it fails), or None."""
        if (row["hypervisor_type"] == CONTAINER_HOSTS) != containers:
            return "running containers" if not containers else "running no containers"
        if not self._alive(row, now):
            return "down"
        if not row["enabled"]:
            return "disabled"
        if row["host"] in excluded:
            return "excluded"
        for resource, label in (("memory_mb", "RAM"), ("vcpus", "vCPU"), ("disk_gb", "disk")):
            if self._free(row, resource) < request[resource]:
                return f"short of {label}"
        return None

    @staticmethod
    def _no_valid_host(request: dict[str, int], reasons: Counter[str], known: int) -> NoValidHost:
        wanted = (
            f"no valid host for {request['memory_mb']} MB RAM, {request['vcpus']} vCPU,"
            f" {request['disk_gb']} GB disk"
        )
        if not known:
            return NoValidHost(f"{wanted}: no compute host has reported its capacity")
        why = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        return NoValidHost(f"{wanted}: {_plural(known, 'host')} known, {why}")

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` (one transaction) again while a generation check fails, a few times.

        :raises Conflict: it failed ``CAS_ATTEMPTS`` times.
        """
        for _ in range(CAS_ATTEMPTS):
            try:
                return await attempt()
            except _StaleGeneration as exc:
                log.info("%s: generation of host %s moved, retrying", what, exc)
        raise Conflict(f"{what}: host usage kept changing, gave up after {CAS_ATTEMPTS} attempts")

    async def release(self, *, instance_uuid: str) -> Released:
        """Give an instance's claim back; idempotent."""
        released = await self._retrying(f"release of {instance_uuid}", lambda: self._release(instance_uuid))
        return {"released": released}

    async def _release(self, instance_uuid: str) -> bool:
        """Both claims of the instance (a resize holds two), in one transaction."""
        async with self.store.transaction() as db:
            released = [
                await self._give_back(db, table, instance_uuid) for table in ("allocations", "resize_held")
            ]
        return any(released)

    @staticmethod
    async def _give_back(db: Db, table: str, instance_uuid: str) -> bool:
        """Delete the instance's claim in ``table`` and give its usage back to its host.

        :raises _StaleGeneration: the host's generation moved.
        """
        claim = await db.fetchone(f"SELECT * FROM {table} WHERE instance_uuid = ?", (instance_uuid,))
        if claim is None:
            return False
        host = await db.fetchone("SELECT generation FROM hosts WHERE host = ?", (claim["host"],))
        assert host is not None, "an allocation's host row is never deleted"
        delta = {resource: -claim[resource] for resource in RESOURCES}
        await _swap_usage(db, claim["host"], host["generation"], delta)
        await db.execute(f"DELETE FROM {table} WHERE instance_uuid = ?", (instance_uuid,))
        log.info("released %s's claim (%s) from %s", instance_uuid, table, claim["host"])
        return True

    # -- resizes --------------------------------------------------------------------------

    async def claim_resize(
        self,
        *,
        instance_uuid: str,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        elsewhere: bool = False,
        host: str | None = None,
    ) -> Destination:
        """Claim a resize's new flavor beside the old (``api.scheduler.Scheduler.claim_resize``)."""
        request = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
        destination = await self._retrying(
            f"resize claim for {instance_uuid}",
            lambda: self._claim_resize(instance_uuid, request, elsewhere=elsewhere, forced=host),
        )
        return {"host": destination}

    async def _claim_resize(
        self, instance_uuid: str, request: dict[str, int], *, elsewhere: bool, forced: str | None
    ) -> str:
        async with self.store.transaction() as db:
            claim = await db.fetchone("SELECT * FROM allocations WHERE instance_uuid = ?", (instance_uuid,))
            if claim is None:
                raise NotFound(f"no allocation for instance {instance_uuid}")
            if await db.fetchone("SELECT 1 FROM resize_held WHERE instance_uuid = ?", (instance_uuid,)):
                return str(claim["host"])  # claimed already: this request, sent again
            source, now = claim["host"], time.time()
            if elsewhere:
                kind = await self._runs_containers(db, source)
                row = await self._chosen_host(db, request, {source}, forced, now, kind)
            else:
                found = await db.fetchone("SELECT * FROM hosts WHERE host = ?", (source,))
                assert found is not None, "an allocation's host row is never deleted"
                row = found
                reason = self._rejection(row, request, set(), now, runs_containers(row))
                if reason is not None:
                    raise self._no_valid_host(request, Counter({f"its host {row['host']} {reason}": 1}), 1)
            await _swap_usage(db, row["host"], row["generation"], request)
            await db.execute(
                "INSERT INTO resize_held (instance_uuid, host, vcpus, memory_mb, disk_gb, created_at)"
                " SELECT instance_uuid, host, vcpus, memory_mb, disk_gb, created_at FROM allocations"
                " WHERE instance_uuid = ?",
                (instance_uuid,),
            )
            await db.execute(
                "UPDATE allocations SET host = ?, vcpus = ?, memory_mb = ?, disk_gb = ?, created_at = ?"
                " WHERE instance_uuid = ?",
                (row["host"], *(request[resource] for resource in RESOURCES), utcnow(), instance_uuid),
            )
        log.info("claimed the resize of %s on %s (from %s)", instance_uuid, row["host"], source)
        return str(row["host"])

    # -- live changes of vCPUs and RAM ----------------------------------------------------

    async def set_claim_size(self, *, instance_uuid: str, vcpus: int, memory_mb: int) -> Allocation:
        """Give the instance's claim another size (``api.scheduler.Scheduler.set_claim_size``)."""
        size = {"vcpus": vcpus, "memory_mb": memory_mb}
        return await self._retrying(
            f"claim size of {instance_uuid}", lambda: self._set_claim_size(instance_uuid, size)
        )

    async def _set_claim_size(self, instance_uuid: str, size: dict[str, int]) -> Allocation:
        async with self.store.transaction() as db:
            claim = await db.fetchone(
                "SELECT * FROM allocations WHERE instance_uuid = ?", (instance_uuid,), row=Allocation
            )
            if claim is None:
                raise NotFound(f"no allocation for instance {instance_uuid}")
            delta = {**{resource: size[resource] - claim[resource] for resource in size}, "disk_gb": 0}
            if not any(delta.values()):
                return claim  # that size already: this request, sent again
            row = await db.fetchone("SELECT * FROM hosts WHERE host = ?", (claim["host"],))
            assert row is not None, "an allocation's host row is never deleted"
            growth = {resource: max(0, amount) for resource, amount in delta.items()}
            short = [resource for resource in RESOURCES if self._free(row, resource) < growth[resource]]
            if short:
                reason = f"its host {row['host']} short of {', '.join(short)}"
                raise self._no_valid_host(growth, Counter({reason: 1}), 1)
            await _swap_usage(db, row["host"], row["generation"], delta)
            resized = await db.fetchone(
                "UPDATE allocations SET vcpus = ?, memory_mb = ? WHERE instance_uuid = ? RETURNING *",
                (size["vcpus"], size["memory_mb"], instance_uuid),
                row=Allocation,
            )
        assert resized is not None
        log.info("claim of %s on %s is now %s", instance_uuid, row["host"], size)
        return resized

    async def _chosen_host(
        self,
        db: Db,
        request: dict[str, int],
        excluded: set[str],
        forced: str | None,
        now: float,
        containers: bool,
    ) -> dict[str, Any]:
        """The host asked for (if it can take ``request``, disabled or not, as Nova forces it), else
        the best other than ``excluded`` (of the kind ``containers`` says: an instance moves only
        between hosts of its kind).

        :raises NotFound: the host asked for is unknown.
        :raises NoValidHost: it (or every host) cannot take it.
        """
        if forced is None:
            return await self._best_host(db, request, excluded, now, containers)
        row = await db.fetchone("SELECT * FROM hosts WHERE host = ?", (forced,))
        if row is None:
            raise NotFound(f"Compute host {forced} not found.")
        reason = self._rejection({**row, "enabled": 1}, request, excluded, now, containers)
        if reason is not None:
            raise self._no_valid_host(request, Counter({f"the host asked for {reason}": 1}), 1)
        return row

    @staticmethod
    async def _runs_containers(db: Db, host: str) -> bool:
        """Whether ``host`` runs containers (an instance leaving it goes to a host of its kind)."""
        row = await db.fetchone("SELECT hypervisor_type FROM hosts WHERE host = ?", (host,))
        return row is not None and runs_containers(row)

    # -- evacuates ------------------------------------------------------------------------

    async def claim_evacuate(
        self,
        *,
        instance_uuid: str,
        source_host: str,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        host: str | None = None,
    ) -> Destination:
        """Move an evacuate's claim off its source (``api.scheduler.Scheduler.claim_evacuate``)."""
        request = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
        destination = await self._retrying(
            f"evacuate claim for {instance_uuid}",
            lambda: self._claim_evacuate(instance_uuid, source_host, request, host),
        )
        return {"host": destination}

    async def _claim_evacuate(
        self, instance_uuid: str, source: str, request: dict[str, int], forced: str | None
    ) -> str:
        async with self.store.transaction() as db:
            claim = await db.fetchone("SELECT * FROM allocations WHERE instance_uuid = ?", (instance_uuid,))
            if claim is not None and claim["host"] != source:
                return str(claim["host"])  # moved already: this request, sent again
            kind = await self._runs_containers(db, source)
            best = await self._chosen_host(db, request, {source}, forced, time.time(), kind)
            for table in ("allocations", "resize_held"):
                await self._give_back(db, table, instance_uuid)
            await _swap_usage(db, best["host"], best["generation"], request)
            await db.execute(
                "INSERT INTO allocations (instance_uuid, host, vcpus, memory_mb, disk_gb, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (instance_uuid, best["host"], *(request[resource] for resource in RESOURCES), utcnow()),
            )
        log.info("moved the claim of %s from %s to %s (evacuate)", instance_uuid, source, best["host"])
        return str(best["host"])

    async def confirm_resize(self, *, instance_uuid: str) -> Released:
        """The resize is kept: its held (old) claim is given back."""
        released = await self._retrying(
            f"confirm of {instance_uuid}'s resize", lambda: self._confirm_resize(instance_uuid)
        )
        return {"released": released}

    async def _confirm_resize(self, instance_uuid: str) -> bool:
        async with self.store.transaction() as db:
            return await self._give_back(db, "resize_held", instance_uuid)

    async def revert_resize(self, *, instance_uuid: str) -> Released:
        """The resize is undone: its new claim is given back, the held one is the instance's again."""
        released = await self._retrying(
            f"revert of {instance_uuid}'s resize", lambda: self._revert_resize(instance_uuid)
        )
        return {"released": released}

    async def _revert_resize(self, instance_uuid: str) -> bool:
        async with self.store.transaction() as db:
            held = await db.fetchone("SELECT * FROM resize_held WHERE instance_uuid = ?", (instance_uuid,))
            if held is None:
                return False
            await self._give_back(db, "allocations", instance_uuid)
            await db.execute(
                "INSERT INTO allocations (instance_uuid, host, vcpus, memory_mb, disk_gb, created_at)"
                " SELECT instance_uuid, host, vcpus, memory_mb, disk_gb, created_at FROM resize_held"
                " WHERE instance_uuid = ?",
                (instance_uuid,),
            )
            await db.execute("DELETE FROM resize_held WHERE instance_uuid = ?", (instance_uuid,))
        log.info("reverted the resize claim of %s", instance_uuid)
        return True

    async def list_allocations(self) -> list[Allocation]:
        """Every claim, oldest first; a resize's held claim with ``resize_held``."""
        claims = await self.store.fetchall("SELECT * FROM allocations", row=Allocation)
        held = await self.store.fetchall("SELECT * FROM resize_held", row=Allocation)
        for claim in held:
            claim["resize_held"] = True
        return sorted([*claims, *held], key=lambda claim: (claim["created_at"], claim["instance_uuid"]))

    async def get_allocation(self, *, instance_uuid: str) -> Allocation:
        allocation = await self.store.fetchone(
            "SELECT * FROM allocations WHERE instance_uuid = ?", (instance_uuid,), row=Allocation
        )
        if allocation is None:
            raise NotFound(f"no allocation for instance {instance_uuid}")
        return allocation
