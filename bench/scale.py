"""Scale benchmark: a cloud of 1,000 simulated hosts on one machine (`aiostack up`, real processes).

Starts `aiostack up --nodes 1000 --nodes-per-process K` (test-driver hosts), waits until every
host has reported, and measures:

* the memory of the whole cloud idle (every aiostack process and its nats-server), as the sum of
  their proportional set sizes (PSS: a page shared by processes counted once in all), beside the
  sum of their RSS;
* the scheduler's decision time at that size: ``select_destinations`` called over the bus as the
  conductor calls it (one claim each, released after), sequentially, p50 and p99;
* boots/s through the REST API with 64 in flight (``bench/boot.py``'s load), on that cloud and
  then on a cloud of 8 hosts in one node process, in the same run.

Ends with one RESULT line; goals (issue 19): idle memory <= 600 MB, decision p50 <= 2 ms and
p99 <= 10 ms, boots/s at 1,000 hosts within 20 % of 8 hosts'.

    python bench/scale.py [--nodes 1000] [--nodes-per-process 1000] [--decisions 2000] [--boots 1000]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import tempfile
import time
import uuid

import psutil

from api.scheduler import Scheduler
from bench.boot import IN_FLIGHT, PASSWORD, Cloud, boot_many, percentile
from bus import Bus
from deploy.launch import RunningCloud, aiostack_up

SMALL = {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}
GOALS = {"idle_mb": 600.0, "decision_p50_ms": 2.0, "decision_p99_ms": 10.0}
THROUGHPUT_KEPT_GOAL = 0.8


def memory_mb(pid: int) -> dict[str, tuple[float, float]]:
    """The memory of a process and each of its children, in MiB, by command line: resident
    (RSS: pages shared between processes counted in each) and proportional (PSS: each shared
    page split between the processes sharing it, so the sum is what the cloud takes)."""
    root = psutil.Process(pid)
    shown = {}
    for process in [root, *root.children(recursive=True)]:
        memory = process.memory_full_info()
        shown[" ".join(process.cmdline()[2:6]) or process.name()] = (memory.rss / 2**20, memory.pss / 2**20)
    return shown


async def wait_for_hosts(scheduler: Scheduler, count: int, deadline: float) -> float:
    """Seconds until ``count`` hosts are up by the scheduler's word."""
    started = time.monotonic()
    async with asyncio.timeout(deadline):
        while sum(host["alive"] for host in await scheduler.list_hosts()) < count:
            await asyncio.sleep(1.0)
    return time.monotonic() - started


async def decide(scheduler: Scheduler, count: int) -> list[float]:
    """Milliseconds per claim, ``count`` claims one after another, each released at once."""
    took = []
    for _ in range(count):
        instance = str(uuid.uuid4())
        started = time.perf_counter()
        await scheduler.select_destinations(instance_uuid=instance, **SMALL)
        took.append((time.perf_counter() - started) * 1000)
        await scheduler.release(instance_uuid=instance)
    return took


def cpu_seconds(pid: int) -> dict[str, float]:
    """The CPU time (user + system) each process of the cloud has used, by command line."""
    root = psutil.Process(pid)
    return {
        " ".join(process.cmdline()[2:4]) or process.name(): sum(process.cpu_times()[:2])
        for process in [root, *root.children(recursive=True)]
    }


async def boots_per_s(up: RunningCloud, boots: int, label: str) -> float:
    """Boots/s through the REST API with ``IN_FLIGHT`` in flight (after a warm-up round); prints
    the CPU each process spent per boot."""
    cloud = Cloud(up.gateway_url)
    await cloud.start()
    try:
        await boot_many(cloud, IN_FLIGHT, "warm")
        before = cpu_seconds(up.process.pid)
        rate = boots / await boot_many(cloud, boots, "load")
        after = cpu_seconds(up.process.pid)
    finally:
        await cloud.close()
    spent = {command: (after[command] - before.get(command, 0.0)) * 1000 / boots for command in after}
    shown = ", ".join(f"{command} {ms:.1f}" for command, ms in sorted(spent.items(), key=lambda i: -i[1]))
    print(f"CPU ms per boot, {label}: {sum(spent.values()):.1f} in all: {shown}", flush=True)
    return rate


async def eight_hosts_boots_per_s(boots: int) -> float:
    """The same load on a cloud of 8 simulated hosts in one node process."""
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-scale-8-") as data_dir:
        async with aiostack_up(
            data_dir, "--nodes", "8", "--nodes-per-process", "8", env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
        ) as cloud:
            return await boots_per_s(cloud, boots, "8 hosts")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--nodes-per-process", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before measuring memory")
    parser.add_argument("--boots", type=int, default=1000, help="boots timed on each cloud")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiostack-bench-scale-") as data_dir:
        async with (
            aiostack_up(
                data_dir,
                "--nodes",
                str(args.nodes),
                "--nodes-per-process",
                str(args.nodes_per_process),
                env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD},
                timeout=600.0,
            ) as cloud,
            await Bus.connect(cloud.nats_url, name="bench-scale", credentials=cloud.admin_credentials) as bus,
        ):
            scheduler = Scheduler.client(bus)
            up_s = await wait_for_hosts(scheduler, args.nodes, deadline=600.0)
            print(f"{args.nodes} hosts up {up_s:.1f} s after the gateway answered", flush=True)
            await asyncio.sleep(args.settle)
            by_process = memory_mb(cloud.process.pid)
            idle_rss_mb = sum(rss for rss, _ in by_process.values())
            idle_mb = sum(pss for _, pss in by_process.values())
            print(f"idle: {idle_mb:.0f} MB in all (PSS; RSS summed: {idle_rss_mb:.0f} MB)", flush=True)
            for command, (rss, pss) in sorted(by_process.items(), key=lambda item: -item[1][1]):
                print(f"  {pss:6.0f} MB PSS {rss:6.0f} MB RSS  {command}")
            await decide(scheduler, 50)  # warm up connections and caches
            took = await decide(scheduler, args.decisions)
            many_hosts = await boots_per_s(cloud, args.boots, f"{args.nodes} hosts")
    eight_hosts = await eight_hosts_boots_per_s(args.boots)
    print(
        f"boots/s with {IN_FLIGHT} in flight: {many_hosts:.0f} over {args.nodes} hosts,"
        f" {eight_hosts:.0f} over 8"
    )
    figures = {
        "idle_mb": idle_mb,
        "idle_rss_mb": idle_rss_mb,
        "decision_p50_ms": percentile(took, 0.5),
        "decision_p99_ms": percentile(took, 0.99),
    }
    kept = many_hosts / eight_hosts
    met = all(figures[key] <= goal for key, goal in GOALS.items()) and kept >= THROUGHPUT_KEPT_GOAL
    shown = " ".join(
        f"{key}={value:.0f}" if key.endswith("_mb") else f"{key}={value:.2f}"
        for key, value in figures.items()
    )
    print(
        f"RESULT hosts={args.nodes} nodes_per_process={args.nodes_per_process} {shown}"
        f" boots_per_s={many_hosts:.0f} boots_per_s_8_hosts={eight_hosts:.0f} throughput_kept={kept:.2f}"
        f" goal_met={'yes' if met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
