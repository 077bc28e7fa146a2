"""Migrations (admins): ``GET /os-migrations`` lists every resize, cold and live migration and
evacuate, newest first, as Nova's ``migrations`` table shows them; a server's live migrations in
progress are listed and shown with their progress (``/servers/{id}/migrations``, 2.23), aborted
(``DELETE .../{migration_id}``, 2.24) or forced to complete (``POST .../{migration_id}/action``
``{"force_complete": null}``, 2.22).

Filters: ``host`` (source or destination), ``status``, ``instance_uuid``, ``migration_type``
(``migration``, ``resize``, ``live-migration``, ``evacuation``). From 2.23 each shows its
``migration_type``, and an in-progress live migration its ``links`` (to
``/servers/{id}/migrations/{id}``). Flavor ids are Nova's integers where the flavor's id is one
(null otherwise); nodes are named as their hosts (one node a host); ``dest_host`` (Nova's
destination address) is null. Paging (2.59) is not served.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import MigrationRecord, MigrationStatus, MigrationType
from api.fields import HostName, Id
from bus import NotFound
from gateway.compute.common import BASE, SERVER_ID, compute, links
from gateway.http import json_response, no_content
from gateway.routing import MAX_AMOUNT, Body, Link, Reply, Request, Routes, Time
from gateway.versions import microversion

MIGRATIONS = f"{BASE}/os-migrations"
TYPED_FROM = (2, 23)
"""The microversion from which a migration shows its type (and a live one in progress, links),
and a server's live migrations are listed and shown."""
FORCE_COMPLETE_FROM = (2, 22)
ABORT_FROM = (2, 24)
LIVE_IN_PROGRESS: frozenset[MigrationStatus] = frozenset({"queued", "preparing", "running", "post-migrating"})


class MigrationQuery(Request):
    host: HostName | UnsetType = UNSET
    status: Annotated[str, Meta(max_length=255)] | UnsetType = UNSET
    instance_uuid: Id | UnsetType = UNSET
    migration_type: MigrationType | UnsetType = UNSET


class MigrationView(Body):
    id: int
    instance_uuid: str
    status: str
    source_compute: str | None
    source_node: str | None
    dest_compute: str | None
    dest_node: str | None
    dest_host: str | None
    old_instance_type_id: int | None
    new_instance_type_id: int | None
    created_at: Time
    updated_at: Time | None
    migration_type: Annotated[MigrationType, Meta(description="2.23 and later.")] | UnsetType = UNSET
    links: (
        Annotated[list[Link], Meta(description="2.23 and later, a live migration in progress.")] | UnsetType
    ) = UNSET


class MigrationList(Body):
    migrations: list[MigrationView]


def flavor_number(flavor_id: str) -> int | None:
    """Nova's integer flavor id: the flavor's own id when it is a number."""
    return int(flavor_id) if flavor_id.isdigit() else None


def migration_view(request: web.Request, record: MigrationRecord) -> MigrationView:
    typed = microversion(request) >= TYPED_FROM
    live = record["migration_type"] == "live-migration" and record["status"] in LIVE_IN_PROGRESS
    return MigrationView(
        id=record["id"],
        instance_uuid=record["instance_uuid"],
        status=record["status"],
        source_compute=record["source_compute"],
        source_node=record["source_compute"],
        dest_compute=record["dest_compute"],
        dest_node=record["dest_compute"],
        dest_host=None,
        old_instance_type_id=flavor_number(record["old_instance_type_id"]),
        new_instance_type_id=flavor_number(record["new_instance_type_id"]),
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        migration_type=record["migration_type"] if typed else UNSET,
        links=(
            links(request, f"servers/{record['instance_uuid']}/migrations", str(record["id"]))
            if typed and live
            else UNSET
        ),
    )


routes = Routes()


@routes.get(
    MIGRATIONS,
    "List migrations",
    query=MigrationQuery,
    replies=[
        Reply(200, MigrationList, "Every resize, migration and evacuate matching the filters, newest first.")
    ],
    errors=(403,),
)
async def list_migrations(request: web.Request, query: MigrationQuery) -> web.Response:
    """403 but for admins."""
    records = await compute(request).list_migrations(
        host=query.host or None,
        status=query.status or None,
        instance_uuid=query.instance_uuid or None,
        migration_type=query.migration_type or None,
    )
    return json_response(MigrationList(migrations=[migration_view(request, record) for record in records]))


class ServerMigrationView(Body):
    id: int
    server_uuid: str
    status: str
    source_compute: str | None
    source_node: str | None
    dest_compute: str | None
    dest_node: str | None
    dest_host: str | None
    memory_total_bytes: int | None
    memory_processed_bytes: int | None
    memory_remaining_bytes: int | None
    disk_total_bytes: int | None
    disk_processed_bytes: int | None
    disk_remaining_bytes: int | None
    created_at: Time
    updated_at: Time | None


class ServerMigrationList(Body):
    migrations: list[ServerMigrationView]


class ServerMigrationShown(Body):
    migration: ServerMigrationView


class ForceComplete(Request):
    """Exactly ``{"force_complete": null}``."""

    force_complete: None


def server_migration_view(record: MigrationRecord) -> ServerMigrationView:
    return ServerMigrationView(
        id=record["id"],
        server_uuid=record["instance_uuid"],
        status=record["status"],
        source_compute=record["source_compute"],
        source_node=record["source_compute"],
        dest_compute=record["dest_compute"],
        dest_node=record["dest_compute"],
        dest_host=None,
        memory_total_bytes=record["memory_total_bytes"],
        memory_processed_bytes=record["memory_processed_bytes"],
        memory_remaining_bytes=record["memory_remaining_bytes"],
        disk_total_bytes=record["disk_total_bytes"],
        disk_processed_bytes=record["disk_processed_bytes"],
        disk_remaining_bytes=record["disk_remaining_bytes"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


def _since(request: web.Request, version: tuple[int, int]) -> None:
    """:raises NotFound: the request's microversion is older than ``version`` (Nova's 404)."""
    if microversion(request) < version:
        raise NotFound("The resource could not be found.")


def _migration_of(request: web.Request) -> dict[str, Any]:
    """The server and migration a ``/servers/{id}/migrations/{migration_id}`` route names."""
    return {
        "instance_uuid": request.match_info["server_id"],
        "migration_id": int(request.match_info["migration_id"]),
    }


SERVER_MIGRATIONS = f"{BASE}/servers/{{server_id}}/migrations"
MIGRATION_ID = {**SERVER_ID, "migration_id": Annotated[int, Meta(ge=1, le=MAX_AMOUNT)]}


@routes.get(
    SERVER_MIGRATIONS,
    "List a server's live migrations in progress",
    replies=[Reply(200, ServerMigrationList, "Its live migrations in progress (2.23 and later).")],
    errors=(403, 404),
    path_types=SERVER_ID,
)
async def list_server_migrations(request: web.Request) -> web.Response:
    """2.23 and later (404 before); 403 but for admins; 404: no such server."""
    _since(request, TYPED_FROM)
    server_id = request.match_info["server_id"]
    records = await compute(request).list_migrations(instance_uuid=server_id, migration_type="live-migration")
    shown = [server_migration_view(r) for r in records if r["status"] in LIVE_IN_PROGRESS]
    return json_response(ServerMigrationList(migrations=shown))


@routes.get(
    f"{SERVER_MIGRATIONS}/{{migration_id}}",
    "Show a server's live migration in progress",
    replies=[Reply(200, ServerMigrationShown, "The live migration, with its progress (2.23 and later).")],
    errors=(403, 404),
    path_types=MIGRATION_ID,
)
async def show_server_migration(request: web.Request) -> web.Response:
    """2.23 and later (404 before); 404: no such server, or no live migration of it in progress."""
    _since(request, TYPED_FROM)
    record = await compute(request).get_server_migration(**_migration_of(request))
    return json_response(ServerMigrationShown(migration=server_migration_view(record)))


@routes.delete(
    f"{SERVER_MIGRATIONS}/{{migration_id}}",
    "Abort a live migration",
    replies=[Reply(202, None, "Aborted: the migration is rolled back, the server stays on its host.")],
    errors=(400, 403, 404, 409),
    path_types=MIGRATION_ID,
)
async def abort_server_migration(request: web.Request) -> web.Response:
    """2.24 and later (404 before); 404: no such server or migration of it; 409: the server is not
    migrating; 400: the migration is not running (as Nova before 2.65)."""
    _since(request, ABORT_FROM)
    await compute(request).abort_migration(**_migration_of(request))
    return no_content(202)


@routes.post(
    f"{SERVER_MIGRATIONS}/{{migration_id}}/action",
    "Force a live migration to complete",
    body=ForceComplete,
    replies=[Reply(202, None, "Taken: the source finishes its copy now.")],
    errors=(400, 403, 404, 409),
    path_types=MIGRATION_ID,
)
async def force_complete_server_migration(request: web.Request, body: ForceComplete) -> web.Response:
    """2.22 and later (404 before); 404: no such server or migration of it; 409: the server is not
    migrating; 400: the migration is not running."""
    _since(request, FORCE_COMPLETE_FROM)
    await compute(request).force_complete_migration(**_migration_of(request))
    return no_content(202)
