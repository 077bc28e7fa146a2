"""Listing benchmark on the real stack: `aiostack up` with 4 test-driver nodes in one node process.

Sets up 10 projects with a member user each through the Keystone v3 API, boots 100 servers
in each (1,000 in all, 64 in flight) and waits until all are ACTIVE. Then measures
``GET /compute/v2.1/servers/detail?limit=100`` walked page by page (``marker=<last id>``
until a short page), with 16 concurrent clients for 10 s: as the projects' users (each
walk is its 100-server page and the empty last one) and as admin with ``all_tenants=1``
(10 full pages and the empty last one); each client reads only the ids and links of a page
(``ServerPage``), as a load generator should. Requests/s counts every page request; p50/p99
are over every page request (the full pages are also shown apart). Finally the time of one
user's whole listing: `openstack server list` end to end (median of 3 runs, a fresh CLI
process each) and plain HTTP (login, then one GET /servers/detail, on a new connection).
Paging is checked on the way (every server once, only the caller's, ``servers_links``), and
each page's latency with one client alone is shown (the cost of a page by its depth).

Goal (client and cloud share this machine's 2 cores): page requests p99 < 50 ms and
>= 500 page requests/s, both for the users and for admin's all_tenants pages, and
`openstack server list` of 100 servers < 3 s (a failed CLI run misses the goal).
Ends with one RESULT line.

    python bench/api.py [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from aiostack.client import password_auth
from deploy.launch import aiostack_up

PASSWORD = "bench-secret"
PROJECTS = 10
SERVERS_PER_PROJECT = 100
IN_FLIGHT = 64
PAGE = 100
CLI_TIMEOUT = 60.0
ACTIVE_TIMEOUT = 900.0
GOAL_P99_MS = 50.0
GOAL_RPS = 500.0
GOAL_CLI_S = 3.0
SERVERS = "/compute/v2.1/servers"


class ApiError(RuntimeError):
    """The gateway answered an unexpected status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body[:300]}")
        self.status = status


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    expect: int = 200,
) -> tuple[Any, dict[str, str]]:
    """One request; its JSON answer (None when empty) and headers, or ApiError."""
    headers = {"X-Auth-Token": token} if token else {}
    async with session.request(method, url, headers=headers, json=body) as response:
        text = await response.text()
        if response.status != expect:
            raise ApiError(method, url, response.status, text)
        return (json.loads(text) if text else None), dict(response.headers)


class ListedServer(msgspec.Struct):
    id: str


class ListLink(msgspec.Struct):
    rel: str
    href: str


class ServerPage(msgspec.Struct):
    """What a walk reads of a page of servers: their ids and the page's links. The rest of each
    server is checked as JSON but not made into Python objects: the 16 clients share the cloud's
    2 cores, and decoding whole pages took them as much CPU as the cloud took to serve them."""

    servers: list[ListedServer]
    servers_links: list[ListLink] = msgspec.field(default_factory=list)


async def get_page(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    """One page of servers as ``ServerPage`` reads it (as dicts), or ApiError."""
    async with session.get(url, headers={"X-Auth-Token": token}) as response:
        body = await response.read()
        if response.status != 200:
            raise ApiError("GET", url, response.status, body.decode(errors="replace"))
    try:
        return msgspec.to_builtins(msgspec.json.decode(body, type=ServerPage))
    except msgspec.DecodeError as exc:
        raise ApiError("GET", url, response.status, f"not a page of servers: {exc}") from None


async def login(session: aiohttp.ClientSession, url: str, user: str, project: str) -> str:
    """A project-scoped token of ``user``."""
    body = password_auth(user, PASSWORD, project)
    _, headers = await call(session, "POST", f"{url}/identity/v3/auth/tokens", body=body, expect=201)
    return headers["X-Subject-Token"]


async def make_projects(session: aiohttp.ClientSession, url: str, admin: str) -> list[tuple[str, str]]:
    """PROJECTS projects with a member user each: (project name, user name)."""
    v3 = f"{url}/identity/v3"
    roles, _ = await call(session, "GET", f"{v3}/roles", admin)
    member = next(role["id"] for role in roles["roles"] if role["name"] == "member")
    made = []
    for number in range(PROJECTS):
        name, user_name = f"bench-{number}", f"bench-user-{number}"
        project, _ = await call(
            session, "POST", f"{v3}/projects", admin, {"project": {"name": name}}, expect=201
        )
        user, _ = await call(
            session,
            "POST",
            f"{v3}/users",
            admin,
            {
                "user": {
                    "name": user_name,
                    "password": PASSWORD,
                    "default_project_id": project["project"]["id"],
                    "domain_id": "default",
                }
            },
            expect=201,
        )
        grant = f"{v3}/projects/{project['project']['id']}/users/{user['user']['id']}/roles/{member}"
        await call(session, "PUT", grant, admin, expect=204)
        made.append((name, user_name))
    return made


async def boot_all(
    session: aiohttp.ClientSession, url: str, tokens: list[str], image: str
) -> list[list[str]]:
    """SERVERS_PER_PROJECT servers in each project, IN_FLIGHT POSTs at a time: their ids by project."""
    jobs = [(project, number) for number in range(SERVERS_PER_PROJECT) for project in range(len(tokens))]
    ids: list[list[str]] = [[] for _ in tokens]

    async def lane() -> None:
        while jobs:
            project, number = jobs.pop()
            server = {"name": f"p{project}-{number}", "imageRef": image, "flavorRef": "1", "networks": "auto"}
            body, _ = await call(session, "POST", url + SERVERS, tokens[project], {"server": server}, 202)
            ids[project].append(body["server"]["id"])

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    return ids


async def wait_active(session: aiohttp.ClientSession, url: str, admin: str, total: int) -> None:
    """Poll as admin every 0.5 s until ``total`` servers are ACTIVE; fail on any ERROR."""
    async with asyncio.timeout(ACTIVE_TIMEOUT):
        while True:
            query = f"{url}{SERVERS}/detail?all_tenants=1&status="
            failed, _ = await call(session, "GET", query + "ERROR", admin)
            if failed["servers"]:
                server = failed["servers"][0]
                raise RuntimeError(f"{len(failed['servers'])} servers in ERROR, e.g. {server.get('fault')}")
            active, _ = await call(session, "GET", query + "ACTIVE", admin)
            if len(active["servers"]) >= total:
                return
            await asyncio.sleep(0.5)


async def walk(
    session: aiohttp.ClientSession, url: str, token: str, query: str, latencies: list[float] | None = None
) -> list[dict[str, Any]]:
    """Every page of GET /servers/detail?limit=PAGE<query>, following marker=<last id> to a short page."""
    pages: list[dict[str, Any]] = []
    marker = ""
    while True:
        began = time.perf_counter()
        page = await get_page(session, f"{url}{SERVERS}/detail?limit={PAGE}{query}{marker}", token)
        if latencies is not None:
            latencies.append((time.perf_counter() - began) * 1000)
        pages.append(page)
        if len(page["servers"]) < PAGE:
            return pages
        if len(pages) > PROJECTS * SERVERS_PER_PROJECT // PAGE + 1:
            raise RuntimeError(f"paging does not end: {len(pages)} full pages (marker ignored?)")
        marker = f"&marker={page['servers'][-1]['id']}"


async def unloaded(session: aiohttp.ClientSession, url: str, token: str, query: str) -> list[float]:
    """One client alone, 5 walks: the median latency (ms) of each page of the walk."""
    walks = []
    for _ in range(5):
        times: list[float] = []
        await walk(session, url, token, query, times)
        walks.append(times)
    return [statistics.median(page) for page in zip(*walks, strict=True)]


def check_walk(label: str, pages: list[dict[str, Any]], expected: set[str], problems: Counter[str]) -> None:
    """Note what is wrong with one walk: lost, repeated or foreign servers, missing next links."""
    seen = [server["id"] for page in pages for server in page["servers"]]
    sizes = [len(page["servers"]) for page in pages]
    if len(seen) != len(set(seen)):
        problems[f"{label}: {len(seen) - len(set(seen))} servers listed twice (pages {sizes})"] += 1
    if set(seen) != expected:
        missing, unexpected = len(expected - set(seen)), len(set(seen) - expected)
        problems[f"{label}: {missing} servers missing, {unexpected} unexpected (pages {sizes})"] += 1
    unlinked = sum(
        1
        for page in pages
        if len(page["servers"]) == PAGE
        and not any(link.get("rel") == "next" for link in page.get("servers_links", []))
    )
    if unlinked:
        problems[f"{label}: {unlinked} of {sizes.count(PAGE)} full pages without a servers_links next"] += 1


@dataclass(frozen=True, slots=True)
class Load:
    """What ``hammer`` measured: page requests/s and latencies in ms, failed walks by status."""

    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    full_p50_ms: float
    full_p99_ms: float
    requests: int
    errors: Counter[str]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def hammer(
    walker: Callable[[int, list[float]], Awaitable[list[dict[str, Any]]]], clients: int, seconds: float
) -> Load:
    """``clients`` tasks walking the pages again and again for ``seconds``."""
    latencies: list[float] = []
    full: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        while time.perf_counter() < deadline:
            times: list[float] = []
            try:
                pages = await walker(number, times)
            except (RuntimeError, aiohttp.ClientError) as exc:
                errors[str(getattr(exc, "status", type(exc).__name__))] += 1
                pages = []
            latencies.extend(times)
            full.extend(t for t, page in zip(times, pages, strict=False) if len(page["servers"]) == PAGE)

    began = time.perf_counter()
    await asyncio.gather(*(client(number) for number in range(clients)))
    elapsed = time.perf_counter() - began
    return Load(
        len(latencies) / elapsed,
        statistics.median(latencies),
        percentile(latencies, 0.99),
        max(latencies),
        statistics.median(full),
        percentile(full, 0.99),
        len(latencies),
        errors,
    )


async def http_list(url: str, user: str, project: str) -> tuple[float, int]:
    """Seconds for a new client to log in and GET /servers/detail; how many servers it got."""
    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        token = await login(session, url, user, project)
        body, _ = await call(session, "GET", f"{url}{SERVERS}/detail", token)
    return time.perf_counter() - began, len(body["servers"])


async def openstack_server_list(url: str, user: str, project: str, problems: Counter[str]) -> float:
    """Median wall time of 3 runs of `openstack server list` as ``user``; nan when a run fails."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OS_")}
    env |= {
        "OS_AUTH_URL": f"{url}/identity/v3",
        "OS_USERNAME": user,
        "OS_PASSWORD": PASSWORD,
        "OS_PROJECT_NAME": project,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_IDENTITY_API_VERSION": "3",
    }
    cli = os.path.join(os.path.dirname(sys.executable), "openstack")
    runs = []
    for _ in range(3):
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            cli,
            "server",
            "list",
            "-f",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            async with asyncio.timeout(CLI_TIMEOUT):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            out, err = await process.communicate()
            err += f"\n(killed after {CLI_TIMEOUT:.0f} s)".encode()
        runs.append(time.perf_counter() - began)
        if process.returncode != 0:
            tail = "\n    ".join(err.decode(errors="replace").strip().splitlines()[-15:])
            print(f"`openstack server list` failed (exit {process.returncode}); stderr tail:\n    {tail}")
            problems[f"openstack server list: exit {process.returncode}"] += 1
            return math.nan
        listed = len(json.loads(out))
        if listed != SERVERS_PER_PROJECT:
            problems[f"openstack server list: {listed} servers, not {SERVERS_PER_PROJECT}"] += 1
    return statistics.median(runs)


def show(label: str, load: Load) -> None:
    errors = f", errors {dict(load.errors)}" if load.errors else ""
    print(
        f"{label}: {load.rps:.0f} page requests/s ({load.requests}), p50 {load.p50_ms:.1f} ms,"
        f" p99 {load.p99_ms:.1f} ms, max {load.max_ms:.1f} ms;"
        f" 100-server pages alone p50 {load.full_p50_ms:.1f} ms, p99 {load.full_p99_ms:.1f} ms{errors}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    problems: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-api-") as data_dir:
        async with (
            aiostack_up(
                data_dir,
                "--nodes",
                "4",
                "--nodes-per-process",
                "4",
                "--log-level",
                "WARNING",
                env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD},
            ) as cloud,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session,
        ):
            url = cloud.gateway_url
            admin = await login(session, url, "admin", "admin")
            images, _ = await call(session, "GET", f"{url}/image/v2/images?name=aiostack-tiny", admin)
            projects = await make_projects(session, url, admin)
            tokens = [await login(session, url, user, project) for project, user in projects]
            began = time.perf_counter()
            ids = await boot_all(session, url, tokens, images["images"][0]["id"])
            total = sum(len(project_ids) for project_ids in ids)
            await wait_active(session, url, admin, total)
            print(f"{total} servers in {PROJECTS} projects ACTIVE in {time.perf_counter() - began:.1f} s")

            for number, token in enumerate(tokens):
                pages = await walk(session, url, token, "")
                check_walk("user walk", pages, set(ids[number]), problems)
            pages = await walk(session, url, admin, "&all_tenants=1")
            check_walk(
                "admin all_tenants walk", pages, {i for project_ids in ids for i in project_ids}, problems
            )
            alone = [
                " ".join(f"{ms:.1f}" for ms in await unloaded(session, url, token, query))
                for token, query in ((tokens[0], ""), (admin, "&all_tenants=1"))
            ]
            print(
                f"one client alone, median ms per page of a walk: user [{alone[0]}],"
                f" admin all_tenants [{alone[1]}]",
                flush=True,
            )
            try:
                await call(session, "GET", f"{url}{SERVERS}/detail?limit={PAGE}&marker=nonexistent", admin)
                problems["an unknown marker answered 200"] += 1
            except ApiError as exc:
                if exc.status != 400:
                    problems[f"an unknown marker answered {exc.status}, not 400"] += 1

            user = await hammer(
                lambda number, times: walk(session, url, tokens[number % PROJECTS], "", times),
                args.clients,
                args.seconds,
            )
            show(f"per-project user walks, {args.clients} clients", user)
            admin_load = await hammer(
                lambda _, times: walk(session, url, admin, "&all_tenants=1", times),
                args.clients,
                args.seconds,
            )
            show(f"admin all_tenants walks, {args.clients} clients", admin_load)

            project, user_name = projects[0]
            lists = [await http_list(url, user_name, project) for _ in range(3)]
            http_list_ms = statistics.median(seconds for seconds, _ in lists) * 1000
            if any(count != SERVERS_PER_PROJECT for _, count in lists):
                problems[f"plain GET /servers/detail listed {[c for _, c in lists]} servers"] += 1
            print(
                f"plain HTTP, login + GET /servers/detail ({SERVERS_PER_PROJECT} servers):"
                f" {http_list_ms:.0f} ms"
            )
            cli_s = await openstack_server_list(url, user_name, project, problems)
            print(f"`openstack server list` ({SERVERS_PER_PROJECT} servers), median of 3: {cli_s:.2f} s")

    for problem, times in problems.items():
        print(f"problem: {problem}" + (f" (x{times})" if times > 1 else ""))
    goal_met = (
        all(
            load.p99_ms < GOAL_P99_MS and load.rps >= GOAL_RPS and not load.errors
            for load in (user, admin_load)
        )
        and cli_s < GOAL_CLI_S
    )
    print(
        f"RESULT user_page_rps={user.rps:.0f} user_page_p50_ms={user.p50_ms:.1f}"
        f" user_page_p99_ms={user.p99_ms:.1f} admin_page_rps={admin_load.rps:.0f}"
        f" admin_page_p50_ms={admin_load.p50_ms:.1f} admin_page_p99_ms={admin_load.p99_ms:.1f}"
        f" http_list_ms={http_list_ms:.0f} openstack_server_list_s={cli_s:.2f}"
        f" goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
