"""The gateway's ``/metrics``: requests by route template, errors by type, the actors' load, bus
calls, instances by state, hosts up and down, the event stream's lag; other processes' metrics
gathered over the bus; and the Grafana dashboard in docs/, which may name only what is served."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import COLLECT
from bus import Actor, Bus
from bus.envelope import request_id_of
from runtime.config import Config
from tests.helpers import Api

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-aiostack.json"
SERVERS = "/compute/v2.1/servers"
SERVER = "/compute/v2.1/servers/{server_id}"
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, Samples]:
    """``GET /metrics`` without a token: the text and each sample's value by name and labels."""
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(have)[label] for sample, have in samples if sample == name and label in dict(have)}


async def boot_active(api: Api) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    status, body = await api.post(
        SERVERS, {"server": {"name": "measured", "imageRef": images["images"][0]["id"], "flavorRef": "1"}}
    )
    assert status == 202, body
    server_id = str(body["server"]["id"])
    async with asyncio.timeout(30):
        while (await api.get(f"{SERVERS}/{server_id}"))[1]["server"]["status"] != "ACTIVE":
            await asyncio.sleep(0.05)
    return server_id


async def test_metrics_count_a_boot_by_route_template_and_show_the_cloud_without_a_token(
    api: Api, gateway_url: str, cloud: list[Actor]
) -> None:
    token = await api.login()
    _, before = await scrape(api.session, gateway_url)
    server_id = await boot_active(api)
    missing = "6b1a4c8e-0000-4000-8000-000000000000"
    status, _ = await api.get(f"{SERVERS}/{missing}")
    assert status == 404
    text, after = await scrape(api.session, gateway_url)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("aiostack_http_requests_total", method="POST", route=SERVERS, status="2xx") == 1
    assert moved("aiostack_http_request_seconds_count", method="POST", route=SERVERS) == 1
    assert moved("aiostack_http_requests_total", method="GET", route=SERVER, status="4xx") == 1
    assert moved("aiostack_http_requests_total", method="GET", route=SERVER, status="2xx") >= 1
    assert moved("aiostack_http_errors_total", route=SERVER, error="NotFound") == 1
    create = {"method": "create_instance", "outcome": "ok"}
    assert moved("aiostack_bus_call_seconds_count", target="conductor", **create) == 1
    assert moved("aiostack_bus_call_seconds_count", target="conductor", outcome="NotFound") >= 1
    assert moved("aiostack_actor_messages_total", actor="conductor", **create) == 1
    assert moved("aiostack_actor_messages_total", actor="node", outcome="ok") >= 1
    assert moved("aiostack_actor_handle_seconds_count", actor="scheduler") >= 1
    assert moved("aiostack_event_lag_seconds_count") >= 2  # the instance's building and active at least

    assert total(after, "aiostack_instances", vm_state="active") == 1
    assert total(after, "aiostack_instances", vm_state="error") == 0
    assert total(after, "aiostack_hosts", state="up") == 1
    assert total(after, "aiostack_hosts", state="down") == 0
    kinds = label_values(after, "aiostack_actor_inflight", "actor")
    assert kinds >= {"conductor", "node", "net", "volume.storage.{host}"}  # kinds: no host in them
    assert total(after, "aiostack_actor_max_backlog", actor="conductor") == cloud[2].max_backlog
    assert total(after, "aiostack_metrics_processes") == 1  # this test's actors share the gateway's process

    values = {value for _, labels in after for _, value in labels}
    assert not any(UUID.search(value) for value in values), [v for v in values if UUID.search(v)]
    for secret in (token, server_id, missing, api.project_id):
        assert secret and secret not in text


async def test_metrics_of_the_other_processes_are_gathered_over_the_bus(
    api: Api, gateway_url: str, config: Config
) -> None:
    # another process's own registry: this test process's holds every earlier test's series
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    text = generate_latest(registry).decode()

    async def answer(msg: Any) -> None:
        request_id = request_id_of(msg.data) or ""
        answered = {"process": "volume:elsewhere", "pid": os.getpid(), "exposition": text}
        await bus.reply(msg, request_id, answered)

    async with await Bus.connect(config.nats_url, prefix=config.prefix, name="another-process") as bus:
        await bus.subscribe(bus.subject(COLLECT.pattern), answer)
        await bus.flush()
        _, samples = await scrape(api.session, gateway_url)
    assert total(samples, "aiostack_metrics_processes", process="gateway") == 2
    memory = "process_resident_memory_bytes"
    assert label_values(samples, memory, "process") == {"gateway", "volume:elsewhere"}
    assert len(label_values(samples, memory, "pid")) == 1  # both are this test's process


async def test_an_answer_that_is_no_exposition_is_left_out(
    api: Api, gateway_url: str, config: Config
) -> None:
    async def garbled(msg: Any) -> None:
        await bus.reply(msg, request_id_of(msg.data) or "", {"process": "garbled", "exposition": "x {"})

    async with await Bus.connect(config.nats_url, prefix=config.prefix, name="garbled-process") as bus:
        await bus.subscribe(bus.subject(COLLECT.pattern), garbled)
        await bus.flush()
        text, _ = await scrape(api.session, gateway_url)
    assert "garbled" not in text and 'process="gateway"' in text


async def test_scrapes_that_come_together_share_one_collection(
    api: Api, gateway_url: str, config: Config
) -> None:
    asked: list[str] = []

    async def silent(msg: Any) -> None:  # a process that never answers: each collection waits it out
        asked.append(msg.subject)

    async with await Bus.connect(config.nats_url, prefix=config.prefix, name="silent-process") as bus:
        await bus.subscribe(bus.subject(COLLECT.pattern), silent)
        await bus.flush()
        scrapes = await asyncio.gather(*(scrape(api.session, gateway_url) for _ in range(5)))
    assert len(asked) == 1
    assert len({text for text, _ in scrapes}) == 1


async def test_metrics_take_only_get_and_any_other_method_is_refused_in_the_error_format(
    api: Api, cloud: list[Actor]
) -> None:
    status, body = await api.post("/metrics", {})
    assert status == 401 and "requires authentication" in json.dumps(body), body  # as any unknown route
    await api.login()
    status, body = await api.post("/metrics", {})
    [fault] = body.values()  # Nova's format: {"<fault name>": {"code": ..., "message": ...}}
    assert status == 405 and fault["code"] == 405, body
    status, _ = await api.delete("/metrics")
    assert status == 405


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its variables' queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: list[str] = []
    pending: list[Any] = list(dashboard["panels"])
    while pending:
        panel = pending.pop()
        pending.extend(panel.get("panels", []))
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


async def test_the_grafana_dashboard_names_only_metrics_the_gateway_serves(
    api: Api, gateway_url: str, cloud: list[Actor]
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = dashboard["templating"]["list"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in variables)
    await api.login()
    await boot_active(api)
    await api.get(f"{SERVERS}/6b1a4c8e-0000-4000-8000-000000000000")
    _, samples = await scrape(api.session, gateway_url)
    served = {name for name, _ in samples}
    queries = dashboard_queries()
    assert len(queries) >= 20
    metric = re.compile(r"\b(?:aiostack|process|python)_[a-z_]+\b")
    named = {name for query in queries for name in metric.findall(query)}
    assert named >= {
        "aiostack_http_request_seconds_bucket",
        "aiostack_actor_inflight",
        "aiostack_actor_backlog",
        "aiostack_bus_call_seconds_bucket",
        "aiostack_instances",
        "aiostack_hosts",
        "aiostack_event_lag_seconds_bucket",
    }
    assert named <= served, sorted(named - served)
