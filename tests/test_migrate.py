"""Cold migration (a resize to the server's own flavor on another host) and the migration records.

The cloud is test_evacuate's: every actor in this process against a real nats-server, two nodes
on libvirt's test driver (each its own), the gateway on a real loopback HTTP server; the
conductor's task timeout is 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

import aiohttp
import pytest

from actors.conductor.migrations import Kind, start
from aiostack import ApiError
from aiostack.client import Client
from api.node import Node
from api.scheduler import SchedulerReader
from bus import Bus
from deploy.audit import audit
from deploy.chaos import victim_pid
from deploy.launch import aiostack_up
from tests.helpers import DEMO_PASSWORD, Api, aiostack_audit
from tests.test_evacuate import (
    TASK_TIMEOUT,
    EvacuateCloud,
    _attach_volume,
    _other,
    boot_as,
    events_until_active,
)

V222 = {"OpenStack-API-Version": "compute 2.22"}
V223 = {"OpenStack-API-Version": "compute 2.23"}
V225 = {"OpenStack-API-Version": "compute 2.25"}


class MigrateCloud(EvacuateCloud):
    """test_evacuate's two-node cloud, with what a migration test asks; its nodes copy a live
    migration's guest memory at ``migration_bandwidth`` MB/s (0: at once)."""

    migration_bandwidth = 0.0

    async def start_node(self, host: str, **options: Any) -> Any:
        return await super().start_node(host, migration_bandwidth=self.migration_bandwidth, **options)

    async def live_migrate(
        self, server_id: str, host: str | None = None, headers: dict[str, str] | None = None, **body: Any
    ) -> tuple[int, Any]:
        action = {"os-migrateLive": {"host": host, "block_migration": "auto", **body}}
        return await self.api.post(
            f"/compute/v2.1/servers/{server_id}/action", action, headers=headers or V225
        )

    async def migrating(self) -> tuple[str, str]:
        """A new server being live-migrated to the scheduler's choice, and its host."""
        server_id = await self.boot()
        source = await self.host(server_id)
        status, body = await self.live_migrate(server_id)
        assert status == 202, body
        return server_id, source

    async def boot_placed(self) -> tuple[str, str, str]:
        """A new ACTIVE server, its host and the other host."""
        server_id = await self.boot()
        source = await self.host(server_id)
        return server_id, source, _other(source)

    async def until_copying(self, server_id: str) -> list[dict[str, Any]]:
        """The server's live migrations in progress, once its source has copied some memory."""
        async with asyncio.timeout(10):
            while (
                not (running := await self.server_migrations(server_id))
                or not running[0]["memory_processed_bytes"]
            ):
                await asyncio.sleep(0.05)
        return running

    async def server_migrations(self, server_id: str) -> list[dict[str, Any]]:
        status, body = await self.api.get(f"/compute/v2.1/servers/{server_id}/migrations", headers=V225)
        assert status == 200, body
        return list(body["migrations"])

    async def migrate(self, server_id: str, user: Api | None = None) -> tuple[int, Any]:
        return await (user or self.api).post(f"/compute/v2.1/servers/{server_id}/action", {"migrate": None})

    async def act(self, server_id: str, action: str) -> tuple[int, Any]:
        return await self.api.post(f"/compute/v2.1/servers/{server_id}/action", {action: None})

    async def host(self, server_id: str) -> str:
        return str((await self.server(server_id))["OS-EXT-SRV-ATTR:host"])

    async def migrations(
        self, query: str = "", headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        status, body = await self.api.get(f"/compute/v2.1/os-migrations{query}", headers=headers or {})
        assert status == 200, body
        return list(body["migrations"])

    async def action_steps(self, server_id: str) -> list[tuple[str, str]]:
        from api.conductor import ConductorOperator

        steps = await ConductorOperator.client(self.bus).list_action_events(instance_uuid=server_id)
        return [(step["action"], step["event"]) for step in steps]


class SlowCopyCloud(MigrateCloud):
    """Nodes that copy a live-migrating guest's memory at 1 MB/s: a migration runs for minutes."""

    migration_bandwidth = 1.0


@pytest.fixture
async def migrate_cloud(start_actor, config, api, bus) -> MigrateCloud:
    cloud = MigrateCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


@pytest.fixture
async def slow_copy_cloud(start_actor, config, api, bus) -> SlowCopyCloud:
    cloud = SlowCopyCloud(start_actor, config, api, bus)
    await cloud.start()
    return cloud


async def test_a_cold_migration_moves_the_server_and_holds_a_claim_on_each_host_until_confirmed(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    server_id, source, target = await cloud.boot_placed()
    [(port_id, address, _)] = await cloud.ports(server_id)
    status, body = await cloud.migrate(server_id)
    assert status == 202, body
    server = await cloud.until(server_id, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == target
    assert sorted(await cloud.claims(server_id)) == sorted([source, target])
    assert [uuid for uuid, _ in await cloud.domains(target)] == [server_id]
    assert await cloud.domains(source) == [(server_id, 5)]  # kept there, shut off, until confirmed (Nova's)
    assert await cloud.ports(server_id) == [(port_id, address, target)]
    assert (await audit(cloud.bus)).problems == {}
    [record] = await cloud.migrations(f"?instance_uuid={server_id}", headers=V223)
    assert (record["migration_type"], record["status"]) == ("migration", "finished")
    assert (record["source_compute"], record["dest_compute"]) == (source, target)
    assert record["old_instance_type_id"] == record["new_instance_type_id"] == 1

    status, body = await cloud.act(server_id, "confirmResize")
    assert status == 204, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == target
    assert await cloud.claims(server_id) == [target]
    async with asyncio.timeout(10):  # the source's copy goes once confirmed
        while await cloud.domains(source):
            await asyncio.sleep(0.05)
    assert [record["status"] for record in await cloud.migrations(f"?instance_uuid={server_id}")] == [
        "confirmed"
    ]
    assert ("migrate", "Success") in await cloud.actions(server_id)
    steps = [event for action, event in await cloud.action_steps(server_id) if action == "migrate"]
    assert steps[0] == "claim_resize" and "finish_migration:sent" in steps and steps[-1] == "finish_resize"
    assert (await audit(cloud.bus)).problems == {}


async def test_a_reverted_cold_migration_removes_its_copy_then_goes_back_to_its_host_with_its_port_and_volume(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    volume_id = await _attach_volume(cloud, server_id)
    source = await cloud.host(server_id)
    [(port_id, address, _)] = await cloud.ports(server_id)
    assert (await cloud.migrate(server_id))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert await cloud.attachments(server_id) == [(volume_id, "attached", _other(source))]
    status, body = await cloud.act(server_id, "revertResize")
    assert status == 202, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == source
    assert await cloud.claims(server_id) == [source]
    assert await cloud.ports(server_id) == [(port_id, address, source)]
    assert await cloud.attachments(server_id) == [(volume_id, "attached", source)]
    assert await cloud.domains(_other(source)) == []  # removed before the source started it
    assert [uuid for uuid, _ in await cloud.domains(source)] == [server_id]
    steps = [event for action, event in await cloud.action_steps(server_id) if action == "revertResize"]
    assert steps[:2] == ["remove_reverted_copy", "finish_migration:sent"], steps
    assert [record["status"] for record in await cloud.migrations(f"?instance_uuid={server_id}")] == [
        "reverted"
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_cold_migration_reverts_to_its_source_while_its_destination_is_down(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    server_id, source, target = await cloud.boot_placed()
    assert (await cloud.migrate(server_id))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    await cloud.stop_node(target)
    status, body = await cloud.act(server_id, "revertResize")
    assert status == 202, body
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT * 8)
    assert server["OS-EXT-SRV-ATTR:host"] == source
    assert [uuid for uuid, _ in await cloud.domains(source)] == [server_id]
    assert await cloud.claims(server_id) == [source]
    steps = await cloud.action_steps(server_id)
    assert ("revertResize", "remove_reverted_copy") in steps
    [record] = await cloud.migrations(f"?instance_uuid={server_id}")
    assert record["status"] == "reverted"


async def test_a_stopped_server_migrates_stopped(migrate_cloud: MigrateCloud) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    assert (await cloud.act(server_id, "os-stop"))[0] == 202
    await cloud.until(server_id, "SHUTOFF")
    assert (await cloud.migrate(server_id))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    assert (await cloud.act(server_id, "confirmResize"))[0] == 204
    server = await cloud.until(server_id, "SHUTOFF")
    assert [state for _, state in await cloud.domains(server["OS-EXT-SRV-ATTR:host"])] == [5]  # shut off


async def test_migrate_refusals_change_nothing(migrate_cloud: MigrateCloud, gateway_url: str) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    host = await cloud.host(server_id)
    async with aiohttp.ClientSession() as session:
        member = Api(session, gateway_url)
        await member.login("demo", DEMO_PASSWORD)
        status, body = await cloud.migrate(server_id, member)
        assert status == 403, body
        status, listed = await member.get("/compute/v2.1/os-migrations")
        assert status == 403, listed
        assert "Policy doesn't allow" in json.dumps(listed)
    status, body = await cloud.api.post(
        f"/compute/v2.1/servers/{server_id}/action", {"migrate": {"host": "x"}}
    )
    assert status == 400, body  # a host only from 2.56, which is not served
    assert (await cloud.act(server_id, "pause"))[0] == 202
    await cloud.until(server_id, "PAUSED")
    status, body = await cloud.migrate(server_id)
    assert status == 409, body
    assert "vm_state paused" in body["conflictingRequest"]["message"]
    assert (await cloud.act(server_id, "unpause"))[0] == 202
    await cloud.until(server_id, "ACTIVE")
    await cloud.stop_node(_other(host))
    status, body = await cloud.migrate(server_id)
    assert status == 400, body
    assert body["badRequest"]["message"].startswith("No valid host was found.")
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == host and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [host]
    [record] = await cloud.migrations(f"?instance_uuid={server_id}")
    assert record["status"] == "error"
    assert (await audit(cloud.bus)).problems == {}


async def test_a_member_may_not_migrate_its_own_server(migrate_cloud: MigrateCloud, gateway_url: str) -> None:
    cloud = migrate_cloud
    async with aiohttp.ClientSession() as session:
        member = Api(session, gateway_url)
        await member.login("demo", DEMO_PASSWORD)
        server_id = await boot_as(member, cloud)
        status, body = await cloud.migrate(server_id, member)
        assert status == 403, body
        assert "Policy doesn't allow" in json.dumps(body)
    assert (await cloud.server(server_id))["status"] == "ACTIVE"
    assert await cloud.migrations(f"?instance_uuid={server_id}") == []


async def test_the_migrations_list_shows_resizes_and_migrations_and_filters_them(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    resized = await cloud.boot("resized")
    migrated = await cloud.boot("migrated")
    status, body = await cloud.api.post(
        f"/compute/v2.1/servers/{resized}/action", {"resize": {"flavorRef": "2"}}
    )
    assert status == 202, body
    assert (await cloud.migrate(migrated))[0] == 202
    await cloud.until(resized, "VERIFY_RESIZE")
    await cloud.until(migrated, "VERIFY_RESIZE")
    everything = await cloud.migrations(headers=V223)
    kinds = {record["instance_uuid"]: record["migration_type"] for record in everything}
    assert kinds == {resized: "resize", migrated: "migration"}
    assert [r["instance_uuid"] for r in await cloud.migrations("?migration_type=resize")] == [resized]
    assert [r["instance_uuid"] for r in await cloud.migrations("?status=finished")] == [migrated, resized]
    assert await cloud.migrations("?status=confirmed") == []
    host = await cloud.host(migrated)
    assert migrated in [r["instance_uuid"] for r in await cloud.migrations(f"?host={host}")]
    assert "migration_type" not in (await cloud.migrations())[0]  # before 2.23
    resize_record = next(r for r in everything if r["instance_uuid"] == resized)
    assert (resize_record["old_instance_type_id"], resize_record["new_instance_type_id"]) == (1, 2)
    assert resize_record["source_compute"] == resize_record["dest_compute"]


async def test_a_record_whose_conductor_stopped_before_starting_the_task_ends_in_error(
    migrate_cloud: MigrateCloud,
) -> None:
    """A conductor stopped between making a migration record and starting its task: once older than
    the task timeout, the watch ends the record (error); the instance, never touched, migrates."""
    cloud = migrate_cloud
    server_id = await cloud.boot()
    assert cloud.conductor is not None
    row = await cloud.conductor.core.fresh(server_id)
    assert row is not None
    orphan = await start(cloud.conductor.core.store, row, Kind.MIGRATION, status="pre-migrating", dest=None)

    async def status_of(migration_id: int) -> str:
        records = await cloud.migrations(f"?instance_uuid={server_id}", headers=V223)
        return str(next(record["status"] for record in records if record["id"] == migration_id))

    assert await status_of(orphan) == "pre-migrating"
    async with asyncio.timeout(TASK_TIMEOUT * 4):
        while await status_of(orphan) != "error":
            await asyncio.sleep(0.2)
    assert (await cloud.server(server_id))["status"] == "ACTIVE"
    assert (await cloud.migrate(server_id))[0] == 202
    await cloud.until(server_id, "VERIFY_RESIZE")
    records = await cloud.migrations(f"?instance_uuid={server_id}", headers=V223)
    assert sorted((record["id"] == orphan, record["status"]) for record in records) == [
        (False, "finished"),
        (True, "error"),
    ]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_cold_migration_goes_on_after_its_conductor_restarts(migrate_cloud: MigrateCloud) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    source = await cloud.host(server_id)
    conductor = cloud.conductor
    assert conductor is not None
    assert (await cloud.migrate(server_id))[0] == 202
    await conductor.stop()  # the nodes' reports of their steps wait for a conductor
    await asyncio.sleep(1.0)
    await cloud.start_conductor()
    server = await cloud.until(server_id, "VERIFY_RESIZE", timeout=TASK_TIMEOUT + 20)
    assert server["OS-EXT-SRV-ATTR:host"] == _other(source)
    assert sorted(await cloud.claims(server_id)) == sorted([source, _other(source)])
    assert await cloud.domains(source) == [(server_id, 5)]  # kept, shut off, until confirmed
    assert (await audit(cloud.bus)).problems == {}


async def test_a_cold_migration_whose_destination_dies_ends_in_error_on_its_host_with_one_claim(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    source = await cloud.host(server_id)
    target = _other(source)
    await cloud.nodes[target].stop()  # gone, but the scheduler still calls it up for 2 s
    assert (await cloud.migrate(server_id))[0] == 202
    del cloud.nodes[target]
    server = await cloud.until(server_id, "ERROR", timeout=TASK_TIMEOUT * 8)
    assert "made no progress" in server["fault"]["message"]
    assert server["OS-EXT-STS:task_state"] is None
    assert server["OS-EXT-SRV-ATTR:host"] == source  # where its domain still is
    assert [uuid for uuid, _ in await cloud.domains(source)] == [server_id]
    assert await cloud.claims(server_id) == [source]  # one claim, where it is recorded
    [record] = await cloud.migrations(f"?instance_uuid={server_id}")
    assert record["status"] == "error"
    assert ("migrate", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def _cli(gateway_url: str, cwd: Any, *args: str) -> str:
    """``aiostack server ARGS`` as the admin; what it printed."""
    login = ("--url", gateway_url, "--username", "admin", "--password", "admin-secret", "--project", "admin")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiostack.cli",
        "server",
        *login,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    output, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()
    return output.decode().strip()


async def test_the_sdk_and_the_cli_migrate_cold_and_live_and_wait(
    migrate_cloud: MigrateCloud, gateway_url: str, tmp_path
) -> None:
    cloud = migrate_cloud
    first, second = await cloud.boot("first"), await cloud.boot("second")
    async with Client(gateway_url) as client:
        await client.login("admin", "admin-secret", "admin")
        source = await cloud.host(first)
        moved = await client.servers.migrate(first)
        assert (moved.status, moved.host) == ("VERIFY_RESIZE", _other(source))
        await client.servers.confirm_resize(first)
        moved = await client.servers.live_migrate(first, source)
        assert (moved.status, moved.host) == ("ACTIVE", source)
    source = await cloud.host(second)
    said = await _cli(gateway_url, tmp_path, "migrate", second, "--wait")
    assert said == f"second: VERIFY_RESIZE (host {_other(source)})"
    assert (await cloud.act(second, "confirmResize"))[0] == 204
    said = await _cli(gateway_url, tmp_path, "migrate", "--live", "--host", source, second, "--wait")
    assert said == f"second: ACTIVE (host {source})"


# -- live migration ------------------------------------------------------------------------------


async def test_a_live_migration_moves_the_running_server_with_its_port_address_and_volume(
    migrate_cloud: MigrateCloud, gateway_url: str
) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    volume_id = await _attach_volume(cloud, server_id)
    source = await cloud.host(server_id)
    target = _other(source)
    [(port_id, address, _)] = await cloud.ports(server_id)
    ws = await cloud.api.session.ws_connect(f"{gateway_url}/ws?kinds=instance", headers=cloud.api.headers)
    status, body = await cloud.live_migrate(server_id, target)
    assert status == 202, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == target and server["OS-EXT-STS:task_state"] is None
    try:
        seen = await events_until_active(ws, server_id)
    finally:
        await ws.close()
    assert seen == [  # started, claimed, recorded on its destination, running there
        ("instance.migrating", "MIGRATING"),
        ("instance.migrating", "MIGRATING"),
        ("instance.migrating", "MIGRATING"),
        ("instance.active", "ACTIVE"),
    ]
    assert [(uuid, state) for uuid, state in await cloud.domains(target)] == [(server_id, 1)]  # running
    async with asyncio.timeout(10):
        while await cloud.domains(source):
            await asyncio.sleep(0.05)
    assert await cloud.claims(server_id) == [target]
    assert await cloud.ports(server_id) == [(port_id, address, target)]
    assert await cloud.attachments(server_id) == [(volume_id, "attached", target)]
    [record] = await cloud.migrations(f"?instance_uuid={server_id}", headers=V223)
    assert (record["migration_type"], record["status"]) == ("live-migration", "completed")
    assert (record["source_compute"], record["dest_compute"]) == (source, target)
    assert "links" not in record  # no longer in progress
    steps = [event for action, event in await cloud.action_steps(server_id) if action == "live-migration"]
    # node_accepted unless the node's progress report (with its heartbeat) took the task first
    assert [step for step in steps if step != "node_accepted"] == [
        "claim_resize",
        "live_migration:sent",
        "live_migration",
        "finish_migration:sent",
        "post_live_migration",
    ]
    assert ("live-migration", "Success") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_live_migration_refusals_change_nothing(migrate_cloud: MigrateCloud, gateway_url: str) -> None:
    cloud = migrate_cloud
    server_id = await cloud.boot()
    host = await cloud.host(server_id)
    for target, message in (
        (host, "The target host can't be the same one"),
        ("nowhere", "Compute host nowhere could not be found."),
    ):
        status, body = await cloud.live_migrate(server_id, target)
        assert status == 400 and message in body["badRequest"]["message"], body
    status, body = await cloud.live_migrate(server_id, None, headers=V223)  # 'auto' only from 2.25
    assert status == 400, body
    status, body = await cloud.live_migrate(server_id, None, disk_over_commit=False)  # gone at 2.25
    assert status == 400 and "disk_over_commit" in body["badRequest"]["message"], body
    async with aiohttp.ClientSession() as session:
        member = Api(session, gateway_url)
        await member.login("demo", DEMO_PASSWORD)
        action = {"os-migrateLive": {"host": None, "block_migration": False, "disk_over_commit": False}}
        status, body = await member.post(f"/compute/v2.1/servers/{server_id}/action", action)
        assert status == 403, body
    assert (await cloud.act(server_id, "pause"))[0] == 202
    await cloud.until(server_id, "PAUSED")
    assert (await cloud.live_migrate(server_id))[0] == 409
    assert (await cloud.act(server_id, "unpause"))[0] == 202
    await cloud.until(server_id, "ACTIVE")
    await cloud.stop_node(_other(host))
    status, body = await cloud.live_migrate(server_id)
    assert status == 400 and body["badRequest"]["message"].startswith("No valid host was found."), body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == host and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [host]
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["error"]
    assert (await audit(cloud.bus)).problems == {}


async def test_a_live_migration_whose_destination_dies_is_rolled_back_and_keeps_running(
    migrate_cloud: MigrateCloud,
) -> None:
    cloud = migrate_cloud
    server_id, source, target = await cloud.boot_placed()
    [(port_id, address, _)] = await cloud.ports(server_id)
    await cloud.nodes[target].stop()  # gone, but the scheduler still calls it up for 2 s
    assert (await cloud.live_migrate(server_id, target))[0] == 202
    del cloud.nodes[target]
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT * 8)
    assert server["OS-EXT-SRV-ATTR:host"] == source and server["OS-EXT-STS:task_state"] is None
    assert [(uuid, state) for uuid, state in await cloud.domains(source)] == [
        (server_id, 1)
    ]  # ran throughout
    assert await cloud.claims(server_id) == [source]
    assert await cloud.ports(server_id) == [(port_id, address, source)]
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["failed"]
    assert ("live-migration", "Error") in await cloud.actions(server_id)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_running_live_migration_shows_its_progress_and_is_aborted(
    slow_copy_cloud: SlowCopyCloud,
) -> None:
    cloud = slow_copy_cloud
    server_id, source = await cloud.migrating()
    assert (await cloud.server(server_id))["status"] == "MIGRATING"
    running = await cloud.until_copying(server_id)
    [migration] = running
    assert migration["status"] == "running"
    assert migration["memory_total_bytes"] > migration["memory_remaining_bytes"] > 0
    assert (migration["source_compute"], migration["dest_compute"]) == (source, _other(source))
    path = f"/compute/v2.1/servers/{server_id}/migrations/{migration['id']}"
    status, shown = await cloud.api.get(path, headers=V225)
    assert status == 200 and shown["migration"]["server_uuid"] == server_id, shown
    [listed] = await cloud.migrations(f"?instance_uuid={server_id}", headers=V223)
    assert listed["links"][0]["href"].endswith(f"/servers/{server_id}/migrations/{migration['id']}")
    assert (await cloud.api.get(path, headers=V222))[0] == 404  # 2.23 and later
    assert (await cloud.api.delete(path, headers=V223))[0] == 404  # abort: 2.24 and later
    assert sorted(await cloud.claims(server_id)) == sorted([source, _other(source)])
    status, body = await cloud.api.delete(path, headers=V225)
    assert status == 202, body
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == source
    assert await cloud.claims(server_id) == [source]
    assert [(uuid, state) for uuid, state in await cloud.domains(source)] == [(server_id, 1)]
    assert await cloud.domains(_other(source)) == []
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["cancelled"]
    assert await cloud.server_migrations(server_id) == []
    status, body = await cloud.api.delete(path, headers=V225)
    assert status == 409, body  # the server is not migrating any more
    assert (await audit(cloud.bus)).problems == {}


async def test_a_running_live_migration_forced_to_complete_finishes_now(
    slow_copy_cloud: SlowCopyCloud,
) -> None:
    cloud = slow_copy_cloud
    server_id, source = await cloud.migrating()
    running = await cloud.until_copying(server_id)
    path = f"/compute/v2.1/servers/{server_id}/migrations/{running[0]['id']}/action"
    assert (await cloud.api.post(path, {"force_complete": None}, headers=V223))[0] == 202
    server = await cloud.until(server_id, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == _other(source)
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["completed"]
    status, body = await cloud.api.post(path, {"force_complete": None}, headers=V223)
    assert status == 409, body


async def test_a_live_migration_goes_on_after_its_conductor_restarts(slow_copy_cloud: SlowCopyCloud) -> None:
    cloud = slow_copy_cloud
    server_id, source = await cloud.migrating()
    running = await cloud.until_copying(server_id)
    conductor = cloud.conductor
    assert conductor is not None
    await conductor.stop()  # the source's progress reports wait for a conductor
    await asyncio.sleep(1.0)
    await cloud.start_conductor()
    path = f"/compute/v2.1/servers/{server_id}/migrations/{running[0]['id']}/action"
    assert (await cloud.api.post(path, {"force_complete": None}, headers=V223))[0] == 202
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT + 20)
    assert server["OS-EXT-SRV-ATTR:host"] == _other(source)
    assert await cloud.claims(server_id) == [_other(source)]
    async with asyncio.timeout(10):
        while await cloud.domains(source):
            await asyncio.sleep(0.05)
    assert (await audit(cloud.bus)).problems == {}


async def test_a_live_migration_whose_source_dies_mid_copy_ends_with_one_claim(
    slow_copy_cloud: SlowCopyCloud,
) -> None:
    cloud = slow_copy_cloud
    server_id, source = await cloud.migrating()
    await cloud.until_copying(server_id)
    await cloud.stop_node(source)
    server = await cloud.until(server_id, "ACTIVE", timeout=TASK_TIMEOUT * 8)
    assert server["OS-EXT-SRV-ATTR:host"] == source and server["OS-EXT-STS:task_state"] is None
    assert await cloud.claims(server_id) == [source]  # the destination's given back
    assert await cloud.domains(_other(source)) == []
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["error"]
    await cloud.start_node(source)
    async with asyncio.timeout(20):
        while (problems := (await audit(cloud.bus)).problems) != {}:
            await asyncio.sleep(0.5)
    assert problems == {}


async def test_a_server_deleted_while_it_migrates_live_leaves_nothing_on_either_host(
    slow_copy_cloud: SlowCopyCloud,
) -> None:
    cloud = slow_copy_cloud
    server_id, source = await cloud.migrating()
    await cloud.until_copying(server_id)
    status, body = await cloud.api.delete(f"/compute/v2.1/servers/{server_id}")
    assert status == 204, body
    async with asyncio.timeout(15):
        while (await cloud.api.get(f"/compute/v2.1/servers/{server_id}"))[0] != 404:
            await asyncio.sleep(0.05)
    assert await cloud.claims(server_id) == []
    assert await cloud.ports(server_id) == []
    assert await cloud.domains(source) == [] and await cloud.domains(_other(source)) == []
    assert [r["status"] for r in await cloud.migrations(f"?instance_uuid={server_id}")] == ["error"]
    assert (await audit(cloud.bus)).problems == {}


async def test_an_evacuate_is_a_migration_record_too(migrate_cloud: MigrateCloud) -> None:
    cloud = migrate_cloud
    server_id, source, target = await cloud.boot_placed()
    await cloud.stop_node(source)
    assert (await cloud.evacuate(server_id))[0] == 200
    await cloud.until(server_id, "ACTIVE")
    [record] = await cloud.migrations(f"?migration_type=evacuation&host={target}", headers=V223)
    assert (record["instance_uuid"], record["status"]) == (server_id, "done")
    assert (record["source_compute"], record["dest_compute"]) == (source, target)


# -- a real `aiostack up`, its processes killed mid-migration ---------------------------------------

CHAOS_PASSWORD = "chaos-secret"
CHAOS_VICTIMS = ("conductor", "scheduler", "net", "volume", "source", "destination", "nats-server")
"""Each process of a two-node `aiostack up`, by its role in the migration (the node processes)."""


async def _settled(client: Client, server_id: str, deadline: float = 90.0) -> dict[str, Any]:
    """The server once it is ACTIVE (or ERROR) with no task: its migration ended one way or the other."""
    path = f"/compute/v2.1/servers/{server_id}"
    async with asyncio.timeout(deadline):
        while True:
            try:
                server = (await client.request("GET", path, headers=V225))["server"]
                if server["status"] in ("ACTIVE", "ERROR") and server["OS-EXT-STS:task_state"] is None:
                    return dict(server)
            except ApiError:
                pass  # the gateway's bus is away (nats-server restarting)
            await asyncio.sleep(0.2)


@pytest.mark.full_size
@pytest.mark.timeout(900)
async def test_killing_any_process_mid_live_migration_leaves_one_domain_and_one_claim(tmp_path) -> None:
    """SIGKILL each process of a real `aiostack up --nodes 2` in turn while a live migration copies
    (4 MB/s): `aiostack up` restarts it, the migration ends (completed, or rolled back), the server
    is ACTIVE with exactly one claim and one domain, on its recorded host, and `aiostack audit` is
    clean."""
    args = ("--nodes", "2", "--task-timeout", "5", "--migration-bandwidth", "4")
    async with (
        aiostack_up(tmp_path, *args, env={"AIOSTACK_ADMIN_PASSWORD": CHAOS_PASSWORD}) as cloud,
        Client(cloud.gateway_url) as client,
        await Bus.connect(cloud.nats_url, name="migrate-chaos", credentials=cloud.admin_credentials) as bus,
    ):
        await client.login("admin", CHAOS_PASSWORD, "admin")
        for victim in CHAOS_VICTIMS:
            server = await client.servers.create(f"chaos-{victim}", image="aiostack-tiny", flavor="m1.tiny")
            source = str(server.host)
            await client.servers.live_migrate(server, wait=False)
            path = f"/compute/v2.1/servers/{server.id}/migrations"
            async with asyncio.timeout(30):
                while (
                    not (running := (await client.request("GET", path, headers=V225))["migrations"])
                    or not (running[0]["memory_processed_bytes"])
                ):
                    await asyncio.sleep(0.1)
            role = {"source": source, "destination": _other(source)}
            os.kill(victim_pid(tmp_path, role.get(victim, victim)), signal.SIGKILL)
            with contextlib.suppress(ApiError):  # done with the copy now (if it still runs)
                await client.request(
                    "POST", f"{path}/{running[0]['id']}/action", {"force_complete": None}, headers=V225
                )
            settled = await _settled(client, server.id)
            assert settled["status"] == "ACTIVE", (victim, settled)
            host = settled["OS-EXT-SRV-ATTR:host"]
            async with asyncio.timeout(60):
                while True:
                    claims = [c["host"] for c in await SchedulerReader.client(bus).list_allocations()]
                    domains = {
                        name: [d["uuid"] for d in await Node.client(bus, host=name).list_domains()]
                        for name in ("node-1", "node-2")
                    }
                    if claims == [host] and domains == {host: [server.id], _other(host): []}:
                        break
                    await asyncio.sleep(0.5)
            assert (await aiostack_audit(tmp_path))[0] == 0, victim
            await client.servers.delete(server)
