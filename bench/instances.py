"""Many-instances benchmark: a cloud with 10,000 instances (`aiostack up`, real processes).

Starts `aiostack up --nodes 8 --nodes-per-process 8` (test-driver hosts), makes bench/api.py's
10 projects with a member user each and boots their 100 servers each, then boots the rest up to
``--instances`` as admin (all through the REST API, 64 in flight, each waited for ACTIVE).
With them all existing it measures:

* sequential boots: POST /servers to the ``instance.active`` event on the websocket, one after
  another, p50 and p99 (these stay, so the cloud grows by ``--sequential``);
* 100-server pages with 16 clients (bench/api.py's ``hammer``): each project's user walking its
  100 servers, and admin walking ``all_tenants=1`` 10 pages from a random server on (each
  client reading only the ids and links of a page);
* the cloud idle: the CPU time (user + system) of every aiostack process (nats-server included)
  over ``--idle`` seconds once the boots settled, as a share of one core, in all and by process.

Ends with one RESULT line; goals (issue 19): sequential boot p99 <= 100 ms, page p99 <= 50 ms
(users' and admin's), idle CPU <= 2 % of one core for the whole cloud.

    python bench/instances.py [--instances 10000] [--sequential 200] [--idle 60]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from typing import Any

import aiohttp
import psutil

from bench.api import (
    PAGE,
    PROJECTS,
    SERVERS,
    SERVERS_PER_PROJECT,
    boot_all,
    get_page,
    hammer,
    login,
    make_projects,
    show,
    wait_active,
    walk,
)
from bench.boot import PASSWORD, Cloud, boot_many, percentile
from deploy.launch import aiostack_up

GOAL_BOOT_P99_MS = 100.0
GOAL_PAGE_P99_MS = 50.0
GOAL_IDLE_CPU_PERCENT = 2.0
ADMIN_PAGES = 10


def cpu_by_process(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) each process of the cloud has used: pid -> (what, seconds)."""
    root = psutil.Process(pid)
    used = {}
    for process in [root, *root.children(recursive=True)]:
        with process.oneshot():
            args = process.cmdline()
            what = " ".join(args[2:5]) if "deploy.child" in args else os.path.basename(args[0])
            used[process.pid] = (what, sum(process.cpu_times()[:2]))
    return used


async def idle_cpu(pid: int, seconds: float) -> tuple[float, dict[str, float]]:
    """The cloud's CPU over ``seconds`` idle, in % of one core: in all, and by process."""
    before = cpu_by_process(pid)
    await asyncio.sleep(seconds)
    after = cpu_by_process(pid)
    by_process = {
        f"{what} [{number}]": (spent - before.get(number, (what, spent))[1]) * 100 / seconds
        for number, (what, spent) in after.items()
    }
    return sum(by_process.values()), by_process


async def sequential_boots(cloud: Cloud, count: int) -> list[float]:
    """Milliseconds from POST /servers to the ACTIVE event, ``count`` boots one after another."""
    took = []
    for number in range(count):
        server_id, sent, _ = await cloud.boot(f"seq-{number}")
        arrived, _ = await cloud.wait(server_id, "instance.active")
        took.append((arrived - sent) * 1000)
    return took


async def admin_pages(
    session: aiohttp.ClientSession, url: str, token: str, ids: list[str], times: list[float]
) -> list[dict[str, Any]]:
    """ADMIN_PAGES consecutive all_tenants pages from a random server on."""
    pages = []
    marker = random.choice(ids)
    for _ in range(ADMIN_PAGES):
        began = time.perf_counter()
        query = f"{url}{SERVERS}/detail?limit={PAGE}&all_tenants=1&marker={marker}"
        page = await get_page(session, query, token)
        times.append((time.perf_counter() - began) * 1000)
        pages.append(page)
        if len(page["servers"]) < PAGE:
            break
        marker = page["servers"][-1]["id"]
    return pages


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10000, help="instances existing when measured")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of page load, each kind")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the boots before idling")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-instances-") as data_dir:
        async with (
            aiostack_up(
                data_dir,
                "--nodes",
                str(args.nodes),
                "--nodes-per-process",
                str(args.nodes),
                "--log-level",
                "WARNING",
                env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD},
            ) as up,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session,
        ):
            url = up.gateway_url
            admin = await login(session, url, "admin", "admin")
            cloud = Cloud(url)
            await cloud.start()
            began = time.perf_counter()
            projects = await make_projects(session, url, admin)
            tokens = [await login(session, url, user, project) for project, user in projects]
            project_ids = await boot_all(session, url, tokens, cloud.image)
            await wait_active(session, url, admin, PROJECTS * SERVERS_PER_PROJECT)
            await boot_many(cloud, args.instances - PROJECTS * SERVERS_PER_PROJECT, "fill")
            filled_s = time.perf_counter() - began
            print(f"{args.instances} instances ACTIVE in {filled_s:.0f} s", flush=True)

            took = await sequential_boots(cloud, args.sequential)
            print(
                f"sequential boots with {args.instances}+ instances: p50 {statistics.median(took):.1f} ms,"
                f" p99 {percentile(took, 0.99):.1f} ms, max {max(took):.1f} ms",
                flush=True,
            )
            await cloud.close()

            users = await hammer(
                lambda number, times: walk(session, url, tokens[number % PROJECTS], "", times),
                args.clients,
                args.seconds,
            )
            show(f"per-project user walks, {args.clients} clients", users)
            every_id = [server_id for ids in project_ids for server_id in ids]
            admins = await hammer(
                lambda _, times: admin_pages(session, url, admin, every_id, times),
                args.clients,
                args.seconds,
            )
            show(f"admin all_tenants pages, {args.clients} clients", admins)

            await asyncio.sleep(args.settle)
            cpu, by_process = await idle_cpu(up.process.pid, args.idle)
            print(f"idle over {args.idle:.0f} s: {cpu:.2f} % of one core in all", flush=True)
            for what, percent in sorted(by_process.items(), key=lambda item: -item[1]):
                print(f"  {percent:6.2f} %  {what}")

    boot_p99 = percentile(took, 0.99)
    met = (
        boot_p99 <= GOAL_BOOT_P99_MS
        and max(users.p99_ms, admins.p99_ms) <= GOAL_PAGE_P99_MS
        and not users.errors
        and not admins.errors
        and cpu <= GOAL_IDLE_CPU_PERCENT
    )
    print(
        f"RESULT instances={args.instances} hosts={args.nodes} fill_s={filled_s:.0f}"
        f" boot_p50_ms={statistics.median(took):.1f} boot_p99_ms={boot_p99:.1f}"
        f" user_page_p99_ms={users.p99_ms:.1f} admin_page_p99_ms={admins.p99_ms:.1f}"
        f" user_page_rps={users.rps:.0f} admin_page_rps={admins.rps:.0f}"
        f" idle_cpu_percent={cpu:.2f} goal_met={'yes' if met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
