"""The multi-host harness (``deploy/hosts.py``): three controllers, a database host and compute
hosts, each a network namespace on one bridge of its own, with a real 3-server NATS cluster
(JetStream replicated across it) and a real PostgreSQL; torn down, it leaves nothing.

No traffic leaves the harness's namespaces: every probe runs inside a host.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy.hosts import HarnessError, Hosts, build, harness_dirs, harness_namespaces
from deploy.postgres import POSTGRES_BIN

NATS_PROBE = """
import asyncio, json, sys
import nats

async def main(subscribe_at, publish_at, stream_at):
    listener = await nats.connect(subscribe_at)
    got = asyncio.get_running_loop().create_future()

    async def heard(msg):
        if not got.done():
            got.set_result(msg.data)

    await listener.subscribe("probe.hello", cb=heard)
    await listener.flush()
    talker = await nats.connect(publish_at)
    for _ in range(100):  # until the routes carry the subscription over
        await talker.publish("probe.hello", b"across the routes")
        try:
            data = await asyncio.wait_for(asyncio.shield(got), 0.2)
            break
        except TimeoutError:
            pass
    else:
        sys.exit("nothing crossed the cluster")
    js = (await nats.connect(stream_at)).jetstream()
    for _ in range(100):  # until the cluster has a JetStream meta leader
        try:
            await js.add_stream(name="PROBE", subjects=["kept.>"], num_replicas=3)
            break
        except Exception:
            await asyncio.sleep(0.2)
    await js.publish("kept.one", b"x")
    info = await js.stream_info("PROBE")
    print(json.dumps({
        "data": data.decode(),
        "leader": info.cluster.leader,
        "replicas": sorted(peer.name for peer in info.cluster.replicas or []),
        "messages": info.state.messages,
    }))

asyncio.run(main(*sys.argv[1:]))
"""


def links_and_addresses() -> tuple[str, str]:
    """This machine's own interfaces and addresses (the root namespace)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    addresses = subprocess.run(
        ["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return " ".join(
        sorted(line.split(":")[1].split("@")[0].strip() for line in links.splitlines())
    ), addresses


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_three_controllers_a_database_and_two_computes_reach_each_other_and_leave_nothing() -> None:
    machine_before = links_and_addresses()
    async with build(controllers=3, computes=2) as hosts:
        tag, root = hosts.tag, hosts.root
        assert [(h.name, h.role) for h in hosts.hosts.values()] == [
            ("controller-1", "controller"),
            ("controller-2", "controller"),
            ("controller-3", "controller"),
            ("database", "database"),
            ("compute-1", "compute"),
            ("compute-2", "compute"),
        ]
        assert len({h.address for h in hosts.hosts.values()}) == 6
        assert sorted(harness_namespaces(tag)) == sorted(
            [h.namespace for h in hosts.hosts.values()] + [hosts.fabric]
        )
        # nothing of it in the machine's own network
        assert links_and_addresses() == machine_before
        assert "10.240." not in machine_before[1]

        # a compute host: subscribes on controller-1, publishes on controller-3, a stream of three
        # replicas made through controller-2
        compute = hosts.hosts["compute-1"]
        urls = hosts.nats_urls
        report = json.loads(
            (await compute.run(sys.executable, "-c", NATS_PROBE, urls[0], urls[2], urls[1])).strip()
        )
        assert report["data"] == "across the routes" and report["messages"] == 1
        assert sorted([report["leader"], *report["replicas"]]) == [
            "controller-1",
            "controller-2",
            "controller-3",
        ]

        # PostgreSQL on the database host, reached from a controller with its password, not without
        database = hosts.databases["database"]
        psql = [str(POSTGRES_BIN / "psql"), "-h", database.host, "-U", "aiostack", "-d", "aiostack", "-tA"]
        controller = hosts.hosts["controller-2"]
        answer = await controller.run(
            *psql, "-c", "SELECT current_user || ' ' || host(inet_server_addr())",
            env={**os.environ, "PGPASSWORD": database.password},
        )  # fmt: skip
        assert answer.strip() == f"aiostack {database.host}"
        with pytest.raises(HarnessError, match="password authentication failed"):
            await controller.run(*psql, "-c", "SELECT 1", env={**os.environ, "PGPASSWORD": "wrong"})
        database_dir = hosts.hosts["database"].dir
        assert database_dir.owner() == "postgres" and (database_dir.stat().st_mode & 0o077) == 0

        pids = [pid for host in hosts.hosts.values() for pid in _pids_in(host.namespace)]
        assert len(pids) >= 4  # three nats-servers and PostgreSQL's processes
    assert harness_namespaces(tag) == []
    assert not any(alive(pid) for pid in pids)
    assert not root.exists()
    assert links_and_addresses() == machine_before


def _pids_in(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True)
    return [int(pid) for pid in done.stdout.split()]


async def test_what_a_crashed_harness_left_is_removed_by_clean() -> None:
    hosts = Hosts(Path(tempfile.mkdtemp(prefix="aiostack-hosts-")))
    await hosts.open()
    host = hosts.add("compute-1", "compute")
    sleeper = await host.start("sleeper", ["sleep", "3600"])
    assert harness_dirs(hosts.tag) == [hosts.root]
    # the harness's process dies without closing it: its namespaces, process and directory stay
    clean = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.hosts", "clean", "--tag", hosts.tag, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await clean.communicate()
    assert clean.returncode == 0
    assert "removed 2 namespaces and 1 directories" in output.decode()
    assert harness_namespaces(hosts.tag) == [] and not hosts.root.exists()
    assert await sleeper.wait() != 0


async def test_a_host_name_is_taken_once() -> None:
    async with build(controllers=0, databases=0, computes=1) as hosts:
        with pytest.raises(HarnessError, match="exists already"):
            hosts.add("compute-1", "compute")
