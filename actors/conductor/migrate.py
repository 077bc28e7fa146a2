"""Serves ``api.conductor.ServerMigrations``: the migration records (``migrations.py``), cold
migration, which is a resize to the instance's own flavor on another host (``resize.py``), and
live migration (``live.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.conductor.core import Core
from actors.conductor.live import LiveMigrations
from actors.conductor.migrations import list_migrations
from actors.conductor.resize import Resizes
from actors.conductor.schema import InstanceRow
from api.conductor import Instance, MigrationRecord, MigrationType, ServerMigrations
from runtime.states import TaskState


class Migrations(ServerMigrations):
    """Serves ``api.conductor.ServerMigrations``."""

    def __init__(self, core: Core, resizes: Resizes, live: LiveMigrations) -> None:
        self.core = core
        self.resizes = resizes
        self.live = live

    @staticmethod
    def failed_step(
        resizes: Resizes, live: LiveMigrations
    ) -> Callable[[InstanceRow, TaskState, str], Awaitable[None]]:
        """What ends a migration whose node could not define its domain: a live one is rolled
        back, a cold one ends in ERROR."""

        async def failed(row: InstanceRow, task: TaskState, reason: str) -> None:
            if task is TaskState.MIGRATING:
                await live.failed(row, task, reason)
            else:
                await resizes.fail(row, task, reason)

        return failed

    async def list_migrations(
        self,
        *,
        host: str | None = None,
        status: str | None = None,
        instance_uuid: str | None = None,
        migration_type: MigrationType | None = None,
    ) -> list[MigrationRecord]:
        return await list_migrations(
            self.core.store,
            host=host,
            status=status,
            instance_uuid=instance_uuid,
            migration_type=migration_type,
        )

    async def get_server_migration(self, *, instance_uuid: str, migration_id: int) -> MigrationRecord:
        return await self.live.server_migration(instance_uuid, migration_id)

    async def migrate_instance(self, *, instance_uuid: str) -> Instance:
        return await self.resizes.migrate_instance(instance_uuid=instance_uuid)

    async def live_migrate_instance(
        self, *, instance_uuid: str, host: str | None = None, block_migration: bool = False
    ) -> Instance:
        return await self.live.live_migrate_instance(instance_uuid, host)

    async def abort_migration(self, *, instance_uuid: str, migration_id: int) -> None:
        await self.live.abort(instance_uuid, migration_id)

    async def force_complete_migration(self, *, instance_uuid: str, migration_id: int) -> None:
        await self.live.force_complete(instance_uuid, migration_id)
