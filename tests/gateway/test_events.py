"""The event stream: in order, resumable with nothing missing or repeated, bounded, isolated."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aiostack import Client, Event, EventsExpired
from bus import Bus
from gateway.app import create_app
from gateway.websocket import text_frame
from tests.helpers import DEMO_PASSWORD

DOCS = Path(__file__).resolve().parents[2] / "docs" / "EVENTS.md"


async def image_id(client: Client) -> str:
    return (await client.request("GET", "/image/v2/images?name=aiostack-tiny"))["images"][0]["id"]


async def boot(client: Client, name: str, image: str) -> str:
    body = {"server": {"name": name, "imageRef": image, "flavorRef": "1"}}
    return (await client.request("POST", "/compute/v2.1/servers", body))["server"]["id"]


async def collect(client: Client, into: list[Event], **filters: Any) -> None:
    async for event in client.events(**filters):
        into.append(event)


async def wait_until(predicate: Any, timeout: float = 60, reader: asyncio.Task | None = None) -> None:
    """Poll ``predicate``; if the ``reader`` task collecting events died, raise what killed it."""
    async with asyncio.timeout(timeout):
        while not predicate():
            if reader is not None and reader.done():
                reader.result()
                raise AssertionError("the event reader stopped")
            await asyncio.sleep(0.02)


@pytest.fixture
async def demo(gateway_url: str, cloud) -> Client:
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        yield client


async def test_events_arrive_in_order_per_resource_with_increasing_sequences(demo: Client) -> None:
    image = await image_id(demo)
    servers = await asyncio.gather(*(boot(demo, f"ordered-{i}", image) for i in range(5)))
    seen: list[Event] = []
    reader = asyncio.create_task(collect(demo, seen, kinds=("instance",), since=0))
    await wait_until(lambda: sum(e.type == "instance.active" for e in seen) == 5)
    await demo.request("POST", f"/compute/v2.1/servers/{servers[0]}/action", {"os-stop": None})
    await wait_until(lambda: any(e.type == "instance.shutoff" for e in seen))
    for server in servers:
        await demo.request("DELETE", f"/compute/v2.1/servers/{server}")
    await wait_until(lambda: sum(e.type == "instance.deleted" for e in seen) == 5)
    reader.cancel()
    by_id: dict[str, list[Event]] = defaultdict(list)
    for event in seen:
        by_id[event.id].append(event)
    assert set(by_id) == set(servers)
    for events in by_id.values():
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        types = [e.type for e in events]
        assert types[:2] == ["instance.building", "instance.spawning"] and types[-1] == "instance.deleted"
        assert types.index("instance.active") < types.index("instance.deleting")
    assert [e.type for e in by_id[servers[0]]][3:6] == [
        "instance.powering-off",
        "instance.shutoff",
        "instance.deleting",
    ]


async def test_client_disconnected_mid_run_resumes_with_exactly_what_it_missed(
    demo: Client, gateway_url
) -> None:
    reference: list[Event] = []
    reference_reader = asyncio.create_task(collect(demo, reference, kinds=("instance",)))
    await asyncio.sleep(0.2)
    image = await image_id(demo)
    before: list[dict[str, Any]] = []
    headers = {"X-Auth-Token": demo.token}
    async with demo.session.ws_connect(f"{gateway_url}/ws?kinds=instance", headers=headers) as ws:
        booting = asyncio.ensure_future(asyncio.gather(*(boot(demo, f"run-{i}", image) for i in range(100))))
        async for message in ws:
            frame = json.loads(message.data)
            if frame["type"] == "event":
                before.append(frame)
            if sum(f["event"]["type"] == "instance.active" for f in before) >= 30:
                break
    last_seen = before[-1]["seq"]
    await booting
    await wait_until(lambda: sum(e.type == "instance.active" for e in reference) == 100, timeout=120)
    after: list[dict[str, Any]] = []
    async with demo.session.ws_connect(
        f"{gateway_url}/ws?kinds=instance&since={last_seen}", headers=headers
    ) as ws:
        async for message in ws:
            frame = json.loads(message.data)
            if frame["type"] == "caught_up":
                break
            if frame["type"] == "event":
                after.append(frame)
    resumed = [f["seq"] for f in before + after]
    await wait_until(lambda: reference and reference[-1].seq >= resumed[-1])
    reference_reader.cancel()
    assert resumed == [e.seq for e in reference if e.seq <= resumed[-1]]
    assert len(set(resumed)) == len(resumed)
    assert after and after[0]["seq"] > last_seen


async def test_the_documented_raw_nats_subscriber_decodes_events(demo: Client, config, tmp_path) -> None:
    example = re.search(r"```python\n(import asyncio.*?)```", DOCS.read_text(), re.S).group(1)
    assert len(example.strip().splitlines()) <= 15
    script = tmp_path / "subscriber.py"
    script.write_text(example.replace("nats://127.0.0.1:4222", config.nats_url))
    server_id = await boot(demo, "watched", await image_id(demo))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any(line.split()[1:3] == ["instance.active", server_id] for line in lines):
                lines.append((await process.stdout.readline()).decode())
    finally:
        process.kill()
        await process.wait()
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == sorted(seqs)
    assert any(line.split()[1:3] == ["domain.lifecycle", server_id] for line in lines)
    assert any(line.split()[1:] == ["instance.active", server_id, "ACTIVE"] for line in lines)


@pytest.mark.event_queue_limit(8)
async def test_slow_consumer_is_cut_off_with_a_resume_point_and_a_fast_one_loses_nothing(
    demo: Client, gateway_url: str, bus: Bus
) -> None:
    fast: list[Event] = []
    fast_reader = asyncio.create_task(collect(demo, fast))
    slow = await demo.session.ws_connect(f"{gateway_url}/ws", headers={"X-Auth-Token": demo.token})
    await asyncio.sleep(0.2)
    padding = "x" * 20_000
    published = [
        await bus.publish_event(
            f"evt.instance.{demo.project_id}.bulk-{i}",
            {
                "kind": "instance",
                "id": f"bulk-{i}",
                "project": demo.project_id,
                "type": "instance.test",
                "ts": 0.0,
                "request_id": None,
                "state": {"padding": padding},
            },
        )
        for i in range(600)
    ]
    await wait_until(lambda: len(fast) >= 600)
    fast_reader.cancel()
    assert [e.seq for e in fast] == published

    slow_frames = []
    async for message in slow:
        if message.type == aiohttp.WSMsgType.TEXT:
            slow_frames.append(json.loads(message.data))
    assert slow.close_code == 4008
    cut = slow_frames[-1]
    assert cut["type"] == "slow_consumer"
    received = [f["seq"] for f in slow_frames if f["type"] == "event"]
    assert received == published[: len(received)] and len(received) < len(published)
    assert cut["resume_seq"] == received[-1]
    rest: list[Event] = []
    async for event in demo.events(since=cut["resume_seq"], until_caught_up=True):
        rest.append(event)
    assert received + [e.seq for e in rest] == published


async def test_subscriptions_see_only_their_own_project(gateway_url: str, cloud) -> None:
    async with Client(gateway_url) as admin, Client(gateway_url) as demo:
        await admin.login("admin", "admin-secret", "admin")
        await demo.login("demo", DEMO_PASSWORD, "demo")
        demo_live: list[Event] = []
        admin_on_demo: list[Event] = []
        readers = [
            asyncio.create_task(collect(demo, demo_live)),
            asyncio.create_task(collect(admin, admin_on_demo)),
        ]
        image = await image_id(admin)
        admins = await boot(admin, "admins-own", image)
        demos = await boot(demo, "demos-own", image)
        await wait_until(lambda: any(e.id == demos and e.type == "instance.active" for e in demo_live))
        await wait_until(lambda: any(e.id == admins and e.type == "instance.active" for e in admin_on_demo))
        for reader in readers:
            reader.cancel()
        replayed = [e async for e in demo.events(since=0, until_caught_up=True)]
        for events in (demo_live, replayed):
            assert {e.project for e in events} == {demo.project_id}
            assert admins not in {e.id for e in events}
        assert {demos, admins} <= {e.id for e in admin_on_demo}
        async with admin.session.ws_connect(
            f"{gateway_url}/ws?since=0&project={demo.project_id}", headers={"X-Auth-Token": admin.token}
        ) as ws:
            frames = []
            async for message in ws:
                frames.append(json.loads(message.data))
                if frames[-1]["type"] == "caught_up":
                    break
        assert {f["event"]["project"] for f in frames if f["type"] == "event"} == {demo.project_id}


async def test_a_gateway_restart_loses_nothing_for_a_resuming_client(config, cloud, bus: Bus) -> None:
    async def start_gateway(port: int) -> tuple[web.AppRunner, Bus, int]:
        gateway_bus = await Bus.connect(config.nats_url, name="gateway")
        runner = web.AppRunner(create_app(gateway_bus))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        return runner, gateway_bus, site._server.sockets[0].getsockname()[1]

    runner, gateway_bus, port = await start_gateway(0)
    async with Client(f"http://127.0.0.1:{port}") as demo:
        await demo.login("demo", DEMO_PASSWORD, "demo")
        seen: list[Event] = []
        reader = asyncio.create_task(collect(demo, seen, max_backoff=0.2))
        await asyncio.sleep(0.2)

        async def publish(n: int) -> int:
            return await bus.publish_event(
                f"evt.volume.{demo.project_id}.v{n}",
                {
                    "kind": "volume",
                    "id": f"v{n}",
                    "project": demo.project_id,
                    "type": "volume.available",
                    "ts": 0.0,
                    "request_id": None,
                    "state": {"n": n},
                },
            )

        published = [await publish(n) for n in range(10)]
        await wait_until(lambda: len(seen) >= 10, reader=reader)
        await runner.cleanup()
        await gateway_bus.close()
        published += [await publish(n) for n in range(10, 20)]
        runner, gateway_bus, _ = await start_gateway(port)
        published += [await publish(n) for n in range(20, 25)]
        await wait_until(lambda: len(seen) >= 25, reader=reader)
        await asyncio.sleep(0.3)
        reader.cancel()
        await runner.cleanup()
        await gateway_bus.close()
    assert [e.seq for e in seen] == published


async def test_a_resume_point_the_stream_no_longer_keeps_is_refused_explicitly(
    demo: Client, bus: Bus
) -> None:
    for n in range(20):
        await bus.publish_event(
            f"evt.volume.{demo.project_id}.old{n}",
            {
                "kind": "volume",
                "id": f"old{n}",
                "project": demo.project_id,
                "type": "volume.available",
                "ts": 0.0,
                "request_id": None,
                "state": {},
            },
        )
    js = bus.nc.jetstream()
    await js.purge_stream(bus.event_stream, keep=5)
    first = (await js.stream_info(bus.event_stream)).state.first_seq
    with pytest.raises(EventsExpired) as expired:
        async for _event in demo.events(since=1):
            pass
    assert expired.value.first_seq == first
    kept = [e async for e in demo.events(since=first - 1, until_caught_up=True)]
    assert [e.seq for e in kept] == list(range(first, first + len(kept)))


def test_an_event_frame_is_an_unmasked_text_frame_as_rfc_6455_writes_one() -> None:
    # RFC 6455 5.7: 'A single-frame unmasked text message', and the 16- and 64-bit lengths of 5.2
    assert text_frame(b"Hello") == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
    assert text_frame(b"x" * 256)[:4] == bytes([0x81, 126, 0x01, 0x00])
    assert text_frame(b"x" * 65536)[:10] == bytes([0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])


async def test_events_of_every_frame_length_arrive_whole_and_in_order_compressed_or_not(
    demo: Client, gateway_url: str, bus: Bus
) -> None:
    """Written at once by the hub (uncompressed, keeping up) or queued for the socket's sender
    (a 70 kB frame fills the transport's buffer; compression negotiated): the same frames."""
    headers = {"X-Auth-Token": demo.token}
    sizes = [0, 1_000, 70_000] * 10
    async with (
        demo.session.ws_connect(f"{gateway_url}/ws?kinds=volume", headers=headers) as plain,
        demo.session.ws_connect(f"{gateway_url}/ws?kinds=volume", headers=headers, compress=15) as deflated,
    ):
        for ws in (plain, deflated):
            assert (await ws.receive_json())["type"] == "subscribed"
            assert (await ws.receive_json())["type"] == "caught_up"
        published = []
        for n, size in enumerate(sizes):
            state = {"padding": "p" * size}
            body = {"kind": "volume", "id": f"sized{n}", "project": demo.project_id, "type": "volume.test"}
            subject = f"evt.volume.{demo.project_id}.sized{n}"
            seq = await bus.publish_event(subject, {**body, "ts": 0.0, "request_id": None, "state": state})
            published.append((seq, f"sized{n}", state))
        for ws in (plain, deflated):
            frames = [await ws.receive_json() for _ in sizes]
            got = [(f["seq"], f["event"]["id"], f["event"]["state"]) for f in frames]
            assert got == published
    assert "permessage-deflate" in deflated._response.headers.get("Sec-WebSocket-Extensions", "")
