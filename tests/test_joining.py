"""Joining a cluster, on the multi-host harness: `aiostack cluster list` shows every host that
joined with its role, liveness and processes; a join token works once and not after it expires;
`aiostack cluster remove` revokes a host's bus users (its processes are cut off and cannot log in
again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.cluster import HarnessCloud, cloud_on_hosts, data_dir_of
from deploy.credentials import CONTROLLER_PROCESSES
from deploy.hosts import HarnessError
from deploy.members import JOIN_TOKEN_VARIABLE, TOKEN_PREFIX
from tests.test_aiostack_up import aiostack_up

AIOSTACK = [sys.executable, "-m", "aiostack.cli"]

LOGS_IN = """
import asyncio, sys
from bus import Bus
from bus.bus import BusAuthFailed

async def main():
    try:
        async with await Bus.connect(sys.argv[1], credentials=sys.argv[2]):
            print("logged-in")
    except BusAuthFailed:
        print("refused")

asyncio.run(main())
"""


async def members(cloud: HarnessCloud) -> dict[str, dict[str, Any]]:
    hosts = json.loads((await cloud.cli("cluster", "list", "--json")).splitlines()[-1])
    return {host["name"]: host for host in hosts}


async def logs_in(cloud: HarnessCloud, host: str, credentials: str) -> bool:
    output = await cloud.hosts.hosts[host].run(
        sys.executable, "-c", LOGS_IN, cloud.nats, credentials, timeout=60
    )
    return output.strip().splitlines()[-1] == "logged-in"


@pytest.mark.full_size
@pytest.mark.timeout(600)
async def test_hosts_join_once_per_token_and_removal_revokes_them() -> None:
    async with cloud_on_hosts(computes=2, clients=1) as cloud:
        listed = await members(cloud)
        assert {name: (host["role"], host["state"], host["alive"]) for name, host in listed.items()} == {
            "controller-1": ("controller", "joined", True),
            "controller-2": ("controller", "joined", True),
            "controller-3": ("controller", "joined", True),
            "compute-1": ("compute", "joined", True),
            "compute-2": ("compute", "joined", True),
        }
        assert set(listed["controller-2"]["processes"]) == {
            f"{process}@controller-2" for process in CONTROLLER_PROCESSES
        }
        assert "volume" in CONTROLLER_PROCESSES  # every controller a storage host
        assert listed["compute-1"]["processes"] == {"compute-1": "running"}
        assert not [
            line for line in command_lines() if TOKEN_PREFIX in line
        ]  # the harness's tokens: in the environment

        spare = cloud.hosts.hosts[cloud.clients[0]]
        token = json.loads(
            (await cloud.cli("cluster", "add", spare.name, "--role", "compute", "--json")).splitlines()[-1]
        )["token"]
        await spare.start(
            "aiostack-join",
            [*AIOSTACK, "join", "-", "--data-dir", str(data_dir_of(spare))],
            env={**os.environ, JOIN_TOKEN_VARIABLE: token},
        )
        await cloud.controller.run(
            sys.executable, "-m", "deploy.cluster", "wait-for-members", "--data-dir", str(cloud.data_dir),
            spare.name, timeout=120,
        )  # fmt: skip
        with pytest.raises(HarnessError, match="refused"):  # spent: its one-time user is gone
            await spare.run(*AIOSTACK, "join", token, "--data-dir", str(spare.dir / "again"), timeout=120)
        assert not (spare.dir / "again" / "cluster.json").exists()

        late = json.loads(
            (
                await cloud.cli("cluster", "add", "compute-9", "--role", "compute", "--ttl", "1", "--json")
            ).splitlines()[-1]
        )["token"]
        await asyncio.sleep(1.5)
        with pytest.raises(HarnessError, match="expired"):
            await spare.run(*AIOSTACK, "join", late, "--data-dir", str(spare.dir / "late"), timeout=60)
        assert (await members(cloud))["compute-9"]["state"] == "invited"
        other = json.loads(
            (await cloud.cli("cluster", "add", "compute-8", "--role", "compute", "--json")).splitlines()[-1]
        )["token"]
        with pytest.raises(HarnessError, match="already host compute-3's"):
            await spare.run(*AIOSTACK, "join", other, "--data-dir", str(data_dir_of(spare)), timeout=60)
        assert (await members(cloud))["compute-8"]["state"] == "invited"

        node_credentials = str(data_dir_of(cloud.hosts.hosts["compute-2"]) / "credentials" / "compute-2.json")
        assert await logs_in(cloud, "compute-2", node_credentials)
        assert "removed" in await cloud.cli("cluster", "remove", "compute-2")
        async with asyncio.timeout(60):  # every controller's nats-server reloads its users
            while await logs_in(cloud, "compute-2", node_credentials):
                await asyncio.sleep(1)
        await asyncio.sleep(12)  # past ALIVE_WITHIN: its supervisor's reports are refused
        removed = (await members(cloud))["compute-2"]
        assert (removed["state"], removed["alive"]) == ("removed", False)
        log = (data_dir_of(cloud.hosts.hosts["compute-2"]) / "logs" / "compute-2.log").read_text()
        assert "Authorization Violation" in log or "refused the credentials" in log


def command_lines() -> list[str]:
    """Every process's command line, as any user reads them (``ps``)."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


async def aiostack(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *AIOSTACK, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    output, _ = await process.communicate(stdin)
    return process.returncode or 0, output.decode()


async def test_the_join_token_comes_from_standard_input_or_the_environment_as_from_the_argument(
    tmp_path: Path,
) -> None:
    code, output = await aiostack("join", "-", "--data-dir", str(tmp_path / "a"), stdin=b"hello\n")
    assert code == 2 and "not an aiostack join token" in output
    environment = {**os.environ, JOIN_TOKEN_VARIABLE: f"{TOKEN_PREFIX}bm90LWpzb24"}
    code, output = await aiostack("join", "--data-dir", str(tmp_path / "b"), env=environment)
    assert code == 2 and "damaged" in output
    code, output = await aiostack("join", "-", "--data-dir", str(tmp_path / "c"), stdin=b"")
    assert code == 2 and "belongs to no cluster" in output


async def test_bad_tokens_and_options_are_refused_before_anything_starts(tmp_path) -> None:
    code, output = await aiostack("join", "aiostack-join-1.bm90LWpzb24", "--data-dir", str(tmp_path / "a"))
    assert code == 2 and "damaged" in output
    code, output = await aiostack("join", "hello", "--data-dir", str(tmp_path / "b"))
    assert code == 2 and "not an aiostack join token" in output
    code, output = await aiostack("join", "--data-dir", str(tmp_path / "c"))
    assert code == 2 and "belongs to no cluster" in output
    code, output = await aiostack("up", "--cluster", "127.0.0.1", "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "--cluster needs --database" in output
    assert not (tmp_path / "d").exists() and not (tmp_path / "a" / "cluster.json").exists()


async def test_cluster_commands_say_when_the_cloud_is_no_cluster(tmp_path) -> None:
    async with aiostack_up(tmp_path, "--nodes", "0"):
        code, output = await aiostack("cluster", "list", "--data-dir", str(tmp_path))
    assert code == 1 and "not started as a cluster" in output
