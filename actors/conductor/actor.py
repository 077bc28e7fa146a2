"""The conductor actor (nova-conductor, and nova-api's database writes): the only writer of compute state.

It owns instances, flavors, key pairs and instance actions; its API is ``api/conductor.py``.
It is composed of servants, one per job, sharing one ``Core`` (store, bus, clients, timers):

* ``build.Builder``: create_instance, scheduling, the node's build request, rescheduling;
* ``lifecycle.DomainReports``: libvirt's word on a domain, through the state machine
  (``states.py``: which states an action may start from and where it leads);
* ``power.PowerActions``: stop, start, reboot, pause, unpause, suspend, resume, delete;
* ``crash_dump.CrashDumps``: trigger_crash_dump (an NMI into the guest);
* ``evacuate.Evacuations``: evacuate (an instance of a down host built again on another);
* ``live_resources.LiveResources``: a running instance's vCPUs and RAM changed live;
* ``migrate.Migrations``: the migration records, cold migration (``resize.py``'s steps), live
  migration (``live.py``);
* ``shelve.Shelves``: shelve, shelve offload (at once, or after ``shelved_offload_time`` seconds;
  -1: never), unshelve;
* ``resize.Resizes``: resize, confirm, revert (and the auto-confirm after ``resize_confirm_window``
  seconds, 0: never);
* ``details.InstanceDetails``: rename, access addresses, metadata, lock;
* ``volumes.Attachments``: volume attach and detach;
* ``interfaces.Interfaces``: NIC attach and detach (os-interface), settled by the watch after a crash;
* ``watch.TaskWatch``: task supervision (redelivery, progress deadlines), live_instances and
  placements (for the owners' checks), the audit and the action log;
* ``instances.ServerReads``, ``flavors.FlavorCatalog``, ``keypairs.KeypairBook``,
  ``quotas.QuotaBook``: reads, flavors, key pairs, quotas;
* ``usage.UsageReports``: what instances used over a period (simple tenant usage).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge

from actors.conductor.build import Builder
from actors.conductor.core import ANNOUNCE_AFTER, Core
from actors.conductor.crash_dump import CrashDumps
from actors.conductor.details import InstanceDetails
from actors.conductor.evacuate import Evacuations
from actors.conductor.flavors import FlavorCatalog, FlavorSpecs, add_default_flavors
from actors.conductor.instances import ServerReads
from actors.conductor.interfaces import Interfaces
from actors.conductor.keypairs import KeypairBook
from actors.conductor.lifecycle import DomainReports
from actors.conductor.live import LiveMigrations
from actors.conductor.live_resources import LiveResources
from actors.conductor.migrate import Migrations
from actors.conductor.power import PowerActions
from actors.conductor.quotas import USAGE_TRIGGERS, QuotaBook
from actors.conductor.resize import Resizes
from actors.conductor.schema import MIGRATIONS, InstanceRow
from actors.conductor.services import HostServices
from actors.conductor.shelve import Shelves
from actors.conductor.usage import UsageReports
from actors.conductor.volumes import Attachments
from actors.conductor.watch import TaskWatch
from api.identity import ServiceTokens
from bus import Actor, Bus
from runtime.auth import keep_service_token
from runtime.config import Config
from runtime.metrics import on_collect
from runtime.states import TaskState, VmState
from runtime.store import open_store

INSTANCES = Gauge(
    "aiostack_instances",
    "Instances (deleted ones left out) by vm_state, as the conductor's store holds them",
    ["vm_state"],
)


class ConductorActor(Actor):
    name = "conductor"
    max_inflight = 256

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        schedule_timeout: float = 30.0,
        task_timeout: float = 60.0,
        ack_timeout: float = 5.0,
        announce_after: float = ANNOUNCE_AFTER,
        max_build_attempts: int = 3,
        resize_confirm_window: float = 0.0,
        shelved_offload_time: float = 0.0,
    ) -> None:
        super().__init__(bus)
        self._stop_counting: Callable[[], None] = lambda: None
        """Ends the metrics refresher ``on_start`` registers (nothing until it has)."""
        self.store = open_store(config, "conductor", MIGRATIONS)
        self.core = Core(
            bus,
            self.store,
            self.spawn,
            task_timeout=task_timeout,
            ack_timeout=ack_timeout,
            announce_after=announce_after,
        )
        self.builder = Builder(
            self.core, schedule_timeout=schedule_timeout, max_build_attempts=max_build_attempts
        )
        resizes = Resizes(self.core, confirm_window=resize_confirm_window)
        evacuations = Evacuations(self.core)
        self.builder.evacuate_failed = evacuations.fail
        live_resources = LiveResources(self.core)
        live = LiveMigrations(self.core)
        shelves = Shelves(self.core, offload_time=shelved_offload_time)
        self.builder.migration_failed = Migrations.failed_step(resizes, live)
        self.builder.unshelve_failed = shelves.unshelve_failed
        reports = DomainReports(self.core, resizes, evacuations, live_resources, live, shelves)
        self.interfaces = Interfaces(self.core)
        self.watch = TaskWatch(
            self.core,
            self.builder,
            reports,
            resizes,
            evacuations,
            live_resources,
            live,
            shelves,
            self.interfaces,
        )
        self.serve(
            ServerReads(self.core),
            self.builder,
            PowerActions(self.core, self.builder),
            CrashDumps(self.core),
            resizes,
            evacuations,
            live_resources,
            Migrations(self.core, resizes, live),
            shelves,
            InstanceDetails(self.core),
            Attachments(self.core),
            self.interfaces,
            FlavorCatalog(self.store),
            FlavorSpecs(self.store),
            KeypairBook(self.store),
            QuotaBook(self.store),
            HostServices(self.core),
            UsageReports(self.store),
            reports,
            self.watch,
        )

    async def on_start(self) -> None:
        # builds, snapshots, attachments outlive the user's token: calls for a user carry this too
        self.spawn(
            keep_service_token(self.bus, ServiceTokens.client(self.bus).issue_service_token),
            name="conductor-service-token",
        )
        await self.store.open()
        async with self.store.transaction() as db:
            for trigger in USAGE_TRIGGERS[db.dialect]:
                await db.execute(trigger)
        await add_default_flavors(self.store)
        # a build task lives in memory: pick up what a previous conductor had not scheduled yet
        for row in await self.store.fetchall(
            "SELECT * FROM instances WHERE deleted = 0 AND task_state = ?",
            (TaskState.SCHEDULING,),
            row=InstanceRow,
        ):
            self.builder.resume_scheduling(row)
        self.spawn(self.watch.watch_forever(), name="conductor-task-watch")
        self._stop_counting = on_collect(self.count_instances)

    async def on_stop(self) -> None:
        self._stop_counting()
        await self.store.close()

    async def count_instances(self) -> None:
        """Bring ``aiostack_instances`` up to date (before each collection of the metrics)."""
        rows = await self.store.fetchall(
            "SELECT vm_state, count(*) AS instances FROM instances WHERE deleted = 0 GROUP BY vm_state"
        )
        counted = {row["vm_state"]: row["instances"] for row in rows}
        for state in VmState:
            if state is not VmState.DELETED:
                INSTANCES.labels(state.value).set(counted.get(state.value, 0))
