"""`aiostack up` as an operator runs it: real processes, stopped with Ctrl-C (SIGINT), started again."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus import Bus
from deploy.launch import aiostack_up as launched
from tests.helpers import Api


def aiostack_up(data_dir: Path, *args: str):
    return launched(
        data_dir,
        *args,
        env={"AIOSTACK_ADMIN_PASSWORD": "admin-secret", "AIOSTACK_DEMO_PASSWORD": "demo-secret"},
    )


async def wait_until_settled(api: Api, expected: dict[str, str]) -> None:
    """Poll until every server shows its expected status (and none is transitional)."""
    async with asyncio.timeout(60):
        while True:
            _, body = await api.get("/compute/v2.1/servers/detail")
            statuses = {s["id"]: s["status"] for s in body["servers"]}
            if statuses == expected:
                return
            await asyncio.sleep(0.1)


async def test_up_starts_everything_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    async with aiostack_up(tmp_path, "--nodes", "2") as cloud:
        nats_pid = int(re.search(r"nats-server pid (\d+)", cloud.banner).group(1))
        children = psutil.Process(cloud.process.pid).children()
        assert len(children) == 10  # nats-server, six actors, the gateway, two nodes
        assert "admin: admin-secret" in cloud.banner
        credentials = tmp_path / "credentials"
        assert credentials.stat().st_mode & 0o777 == 0o700
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in credentials.iterdir())
        assert (credentials / "node-2.json").exists() and (credentials / "gateway.json").exists()
        on_uvloop = {}
        async with await Bus.connect(cloud.nats_url, credentials=credentials / "admin.json") as bus:
            for actor in ("identity", "scheduler", "conductor", "image", "net", "volume", "node.node-2"):
                pid = (await bus.call(f"{actor}.ping", timeout=20))["pid"]
                assert pid in {c.pid for c in children}
                on_uvloop[actor] = "uvloop" in Path(f"/proc/{pid}/maps").read_text()
        # the volume actor starts a daemon (qemu-storage-daemon): asyncio's loop (deploy.run.starts_daemons)
        assert on_uvloop == {actor: actor != "volume" for actor in on_uvloop}
        cloud.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert await cloud.process.wait() == 0
    assert not psutil.pid_exists(nats_pid)
    assert not any(psutil.pid_exists(child.pid) for child in children)


async def test_restart_on_the_same_data_dir_keeps_everything_and_reconciles(tmp_path) -> None:
    async with aiostack_up(tmp_path, "--nodes", "2") as cloud, aiohttp.ClientSession() as session:
        api = Api(session, cloud.gateway_url)
        await api.login()
        _, images = await api.get("/image/v2/images?name=aiostack-tiny")
        image_id = images["images"][0]["id"]
        servers = []
        for name in ("keep-running-1", "keep-running-2", "keep-stopped"):
            status, body = await api.post(
                "/compute/v2.1/servers", {"server": {"name": name, "imageRef": image_id, "flavorRef": "1"}}
            )
            assert status == 202, body
            servers.append(body["server"]["id"])
        await wait_until_settled(api, dict.fromkeys(servers, "ACTIVE"))
        assert (await api.post(f"/compute/v2.1/servers/{servers[2]}/action", {"os-stop": None}))[0] == 202
        expected = {servers[0]: "ACTIVE", servers[1]: "ACTIVE", servers[2]: "SHUTOFF"}
        await wait_until_settled(api, expected)
        status, network = await api.post("/network/v2.0/networks", {"network": {"name": "kept"}})
        assert status == 201
        network_id = network["network"]["id"]
        assert (
            await api.post(
                "/network/v2.0/subnets",
                {"subnet": {"network_id": network_id, "cidr": "192.168.77.0/24", "ip_version": 4}},
            )
        )[0] == 201
        status, port = await api.post("/network/v2.0/ports", {"port": {"network_id": network_id}})
        assert status == 201
        status, volume = await api.post(f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1}})
        assert status == 202
        _, addresses_before = await api.get("/compute/v2.1/servers/detail")

    async with aiostack_up(tmp_path, "--nodes", "2") as cloud, aiohttp.ClientSession() as session:
        assert "first start" not in cloud.banner
        api = Api(session, cloud.gateway_url)
        await api.login()
        await wait_until_settled(api, expected)
        _, addresses_after = await api.get("/compute/v2.1/servers/detail")
        assert {s["id"]: s["addresses"] for s in addresses_after["servers"]} == {
            s["id"]: s["addresses"] for s in addresses_before["servers"]
        }
        assert (await api.get(f"/image/v2/images/{image_id}"))[0] == 200
        assert (await api.get(f"/network/v2.0/networks/{network_id}"))[0] == 200
        assert (await api.get(f"/network/v2.0/ports/{port['port']['id']}"))[0] == 200
        status, kept = await api.get(f"/volume/v3/{api.project_id}/volumes/{volume['volume']['id']}")
        assert status == 200 and kept["volume"]["status"] == "available"
        async with await Bus.connect(
            cloud.nats_url, credentials=tmp_path / "credentials" / "admin.json"
        ) as bus:
            wanted = {servers[0]: True, servers[1]: True, servers[2]: False}
            running: dict[str, bool] = {}
            async with asyncio.timeout(30):  # the nodes re-define their domains once the conductor answers
                while running != wanted:
                    running = {}
                    for host in ("node-1", "node-2"):
                        for domain in await bus.call(f"node.{host}.list_domains", timeout=20):
                            running[domain["uuid"]] = domain["state"] == 1
                    await asyncio.sleep(0.1)
        assert running == wanted


async def as_demo(data_dir: Path, command: str, *args: str) -> tuple[int, str]:
    """``aiostack COMMAND ARGS`` as the demo user; its exit status and output (stdout and stderr)."""
    code, output, _ = await as_demo_apart(data_dir, command, *args, merged=True)
    return code, output


async def as_demo_apart(
    data_dir: Path, command: str, *args: str, merged: bool = False
) -> tuple[int, str, str]:
    """``aiostack COMMAND ARGS`` as the demo user; its exit status, stdout and stderr (``merged``:
    stderr goes to stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiostack.cli",
        command,
        "--data-dir",
        str(data_dir),
        "--username",
        "demo",
        "--password",
        "demo-secret",
        "--project",
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merged else asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode(), (errors or b"").decode()


async def aiostack_with(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``aiostack ARGS`` with no credentials on its command line and no ``OS_*`` variables but ``env``."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("OS_", "AIOSTACK_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", *args, env=clean | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def aiostack_cli(data_dir: Path, *args: str) -> tuple[int, str]:
    return await as_demo(data_dir, "server", *args)


async def test_server_commands_drive_the_cloud_from_the_shell(tmp_path) -> None:
    async with aiostack_up(tmp_path) as cloud:
        code, output, progress = await as_demo_apart(
            tmp_path, "server", "create", "shell-vm", "--flavor", "m1.tiny", "--description", "web", "--wait"
        )
        assert code == 0, output + progress
        assert re.search(r"^\| status +\| ACTIVE +\|$", output, re.M), output
        assert re.search(r"^\| description +\| web +\|$", output, re.M), output
        assert progress.splitlines() == ["BUILD scheduling", "BUILD spawning", "ACTIVE"]  # as they happen
        code, output = await aiostack_cli(tmp_path, "set", "shell-vm", "--description", "db")
        assert (code, output) == (0, "shell-vm: db\n")
        assert await aiostack_cli(tmp_path, "dump", "shell-vm") == (0, "")  # the guest got an NMI
        code, output = await aiostack_cli(tmp_path, "list")
        assert code == 0 and "shell-vm" in output and "ACTIVE" in output and "default=10.20." in output
        code, output = await aiostack_cli(tmp_path, "list", "-f", "json")
        [listed] = json.loads(output)
        assert (listed["Name"], listed["Status"]) == ("shell-vm", "ACTIVE")
        code, output = await aiostack_cli(tmp_path, "list", "-f", "value", "-c", "Name", "-c", "Status")
        assert (code, output) == (0, "shell-vm ACTIVE\n")
        code, output = await aiostack_cli(tmp_path, "list", "-c", "Flavour")
        assert code == 2 and "no column 'Flavour'; the columns are: ID, Name, Status, Networks" in output
        code, output, progress = await as_demo_apart(tmp_path, "server", "stop", "shell-vm", "--wait")
        assert (code, output, progress.splitlines()) == (0, "", ["ACTIVE powering-off", "SHUTOFF"])
        code, output = await aiostack_cli(tmp_path, "show", "shell-vm", "-f", "json")
        assert code == 0 and json.loads(output)["status"] == "SHUTOFF"
        for command in (["start", "shell-vm", "--wait"], ["reboot", "shell-vm", "--hard", "--wait"]):
            code, output = await aiostack_cli(tmp_path, *command)
            assert code == 0, output
        code, output = await aiostack_cli(
            tmp_path, "show", "shell-vm", "-f", "yaml", "-c", "status", "-c", "name"
        )
        assert output == "status: ACTIVE\nname: shell-vm\n"
        code, output = await aiostack_cli(tmp_path, "stop", "no-such-vm")
        assert code == 1 and "no server named 'no-such-vm'" in output
        code, output, progress = await as_demo_apart(tmp_path, "server", "delete", "shell-vm", "--wait")
        assert (code, progress.splitlines()[-1]) == (0, "DELETED"), output + progress
        code, output = await aiostack_cli(tmp_path, "list")
        assert "shell-vm" not in output
        code, output = await as_demo(tmp_path, "events", "--kind", "instance")
        assert code == 0, output
        lines = output.splitlines()
        assert [line.split()[3] for line in lines][:5] == [
            "instance.building",
            "instance.spawning",
            "instance.active",
            "instance.updated",  # its description
            "instance.powering-off",
        ]
        assert lines[-1].split()[3] == "instance.deleted" and "status=DELETED" in lines[-1]
        seqs = [int(line.split()[0]) for line in lines]
        assert seqs == sorted(seqs)
        follower = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiostack.cli",
            "events",
            "--data-dir",
            str(tmp_path),
            "--username",
            "demo",
            "--password",
            "demo-secret",
            "--project",
            "demo",
            "--follow",
            "--since",
            str(seqs[-1]),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            code, output, progress = await as_demo_apart(
                tmp_path, "server", "create", "followed", "--wait", "-f", "json"
            )
            assert code == 0 and json.loads(output)["status"] == "ACTIVE", output  # stdout: JSON only
            assert progress.splitlines()[-1] == "ACTIVE"
            async with asyncio.timeout(30):
                followed = ""
                while "instance.active" not in followed:
                    followed += (await follower.stdout.readline()).decode()
        finally:
            follower.kill()
            await follower.wait()
        assert "instance.building" in followed and "domain.lifecycle" in followed
        await every_process_is_measured_on_the_gateway(cloud.gateway_url)


async def every_process_is_measured_on_the_gateway(gateway_url: str) -> None:
    """The gateway's /metrics (no token) holds every process's metrics, gathered over the bus: the
    CLI's requests by route template, each actor's load in its own process, the nodes' bus calls by
    address template, the one ACTIVE server, the one host up, the event hub's lag; and no id."""
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def values(name: str, **labels: str) -> list[float]:
        return [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]

    processes = {"gateway", "identity", "scheduler", "conductor", "image", "net", "volume", "node"}
    assert {s.labels["process"] for s in samples if s.name == "process_resident_memory_bytes"} == processes
    assert values("aiostack_metrics_processes", process="gateway") == [len(processes)]
    inflight = [s for s in samples if s.name == "aiostack_actor_inflight"]
    served_in = {(s.labels["actor"], s.labels["process"]) for s in inflight}
    assert served_in >= {
        ("identity", "identity"),
        ("conductor", "conductor"),
        ("scheduler", "scheduler"),
        ("volume", "volume"),
        ("node", "node"),
    }
    assert sum(values("aiostack_http_requests_total", method="POST", route="/compute/v2.1/servers")) >= 2
    assert values("aiostack_instances", vm_state="active", process="conductor") == [1]
    assert values("aiostack_hosts", state="up", process="scheduler") == [1]
    assert sum(values("aiostack_event_lag_seconds_count", process="gateway")) > 0
    node = "node"
    assert sum(values("aiostack_bus_call_seconds_count", target="conductor.host.{host}", process=node)) > 0
    assert sum(values("aiostack_actor_messages_total", actor="node", process=node, outcome="ok")) > 0
    uuid = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
    assert not [value for s in samples for value in s.labels.values() if uuid.search(value)]
    assert not [value for s in samples for value in s.labels.values() if "node-1" in value]  # no host


async def test_several_test_driver_nodes_can_share_one_process(tmp_path) -> None:
    # 40 hosts: a process named after all of them would have a credentials file name past 255 bytes
    hosts = [f"node-{n}" for n in range(1, 41)]
    async with aiostack_up(tmp_path, "--nodes", "40", "--nodes-per-process", "40") as cloud:
        assert "processes: identity, scheduler, conductor, image, net, volume, gateway, node-1+39" in (
            cloud.banner
        )
        async with await Bus.connect(
            cloud.nats_url, credentials=tmp_path / "credentials" / "admin.json"
        ) as bus:
            pids = {(await bus.call(f"node.{host}.ping", timeout=20))["pid"] for host in hosts}
            async with asyncio.timeout(30):  # each node's first heartbeat may still be on its way
                while len(known := {h["host"] for h in await bus.call("scheduler.list_hosts")}) < len(hosts):
                    await asyncio.sleep(0.1)
        assert len(pids) == 1
        assert known == set(hosts)


@pytest.mark.full_size
async def test_image_network_volume_and_flavor_commands_print_tables(tmp_path) -> None:
    image_file = tmp_path / "disk.raw"
    image_file.write_bytes(b"\0" * (3 << 20))
    async with aiostack_up(tmp_path / "data"):
        data_dir = tmp_path / "data"
        code, output = await as_demo(data_dir, "image", "upload", "shell-image", str(image_file))
        assert code == 0 and "uploading" in output and "100.0%" in output and "active" in output, output
        code, output = await as_demo(data_dir, "image", "list")
        assert code == 0 and "shell-image" in output and "aiostack-tiny" in output and "| Status" in output
        code, output = await as_demo(data_dir, "network", "create", "shell-net", "--cidr", "10.80.0.0/24")
        assert code == 0 and "shell-net" in output and "10.80.0.0/24" in output, output
        code, output = await as_demo(data_dir, "volume", "create", "shell-vol", "--size", "1")
        assert code == 0 and "shell-vol" in output, output
        code, output = await as_demo(
            data_dir, "volume", "create", "shell-root", "--size", "1", "--image", "aiostack-tiny"
        )
        assert code == 0 and "shell-root" in output, output
        code, output = await as_demo(
            data_dir, "server", "create", "shell-bfv", "--volume", "shell-root", "--wait"
        )
        assert code == 0 and re.search(r"^\| status +\| ACTIVE +\|$", output, re.M), output
        assert re.search(r"^\| image +\| +\|$", output, re.M), output
        key = tmp_path / "shell-key"
        code, output = await as_demo(data_dir, "keypair", "create", "shell-key", "--private-key", str(key))
        assert code == 0 and re.search(r"^\| fingerprint +\| [0-9a-f:]{47} +\|$", output, re.M), output
        assert key.read_text().startswith("-----BEGIN") and key.stat().st_mode & 0o777 == 0o600
        code, output = await as_demo(data_dir, "keypair", "create", "again", "--private-key", str(key))
        assert code == 2 and f"{key} exists" in output
        assert (await as_demo(data_dir, "keypair", "list", "-f", "value", "-c", "Name"))[1] == "shell-key\n"
        script = tmp_path / "user-data"
        script.write_text("#!/bin/sh\necho hello\n")
        code, output, progress = await as_demo_apart(
            data_dir, "server", "create", "shell-keyed", "--key-name", "shell-key",
            "--user-data", str(script), "--wait", "-f", "value", "-c", "key_name", "-c", "status",
        )  # fmt: skip
        assert (code, output) == (0, "shell-key\nACTIVE\n"), output + progress
        assert progress.splitlines()[-1] == "ACTIVE", progress  # the progress goes to stderr
        assert (await as_demo(data_dir, "server", "add", "volume", "shell-keyed", "shell-vol"))[0] == 0
        code, output = await as_demo(data_dir, "volume", "list", "-f", "json")
        [attached] = [volume for volume in json.loads(output) if volume["Name"] == "shell-vol"]
        assert attached["Status"] == "in-use" and "on /dev/vdb" in attached["Attached to"], attached
        assert (await as_demo(data_dir, "server", "remove", "volume", "shell-keyed", "shell-vol"))[0] == 0
        code, output = await as_demo(data_dir, "volume", "list", "-f", "json")
        [detached] = [volume for volume in json.loads(output) if volume["Name"] == "shell-vol"]
        assert detached["Status"] == "available" and detached["Attached to"] == "", detached
        assert (await aiostack_cli(data_dir, "delete", "shell-keyed", "--wait"))[0] == 0
        assert (await as_demo(data_dir, "keypair", "delete", "shell-key"))[0] == 0
        code, output = await as_demo(data_dir, "keypair", "show", "shell-key")
        assert code == 1 and "shell-key" in output, output
        code, output = await aiostack_cli(data_dir, "create", "x", "--volume", "v", "--image", "i")
        assert code == 2 and "not allowed with argument" in output, output
        assert (await aiostack_cli(data_dir, "delete", "shell-bfv", "--wait"))[0] == 0
        code, output = await as_demo(data_dir, "flavor", "list")
        assert code == 0 and "m1.tiny" in output and "512" in output
        code, output = await as_demo(data_dir, "image", "delete", "no-such-image")
        assert code == 1 and "no image named 'no-such-image'" in output
        code, output = await as_demo(data_dir, "image", "delete", "shell-image")
        assert code == 0
        assert "shell-image" not in (await as_demo(data_dir, "image", "list"))[1]

        # OS_CLOUD alone, as with OpenStack's clients: the user, password and gateway from clouds.yaml
        by_cloud = {"OS_CLOUD": "aiostack-demo", "OS_CLIENT_CONFIG_FILE": str(data_dir / "clouds.yaml")}
        code, output = await aiostack_with(by_cloud, "flavor", "list", "-f", "value", "-c", "Name")
        assert code == 0 and "m1.tiny\n" in output, output
        code, output = await aiostack_with(by_cloud | {"OS_CLOUD": "nowhere"}, "flavor", "list")
        assert code == 2 and "no cloud named 'nowhere' in " + str(data_dir / "clouds.yaml") in output


def json_lines(path: Path) -> list[dict]:
    """A log file's lines, each one JSON object (any other line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_every_process_logs_json_lines_that_carry_the_request_id_across_processes(tmp_path) -> None:
    async with (
        aiostack_up(tmp_path, "--log-format", "json", "--log-level", "INFO") as cloud,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, cloud.gateway_url)
        token = await api.login()
        status, _ = await api.get("/compute/v2.1/servers/6b1a4c8e-0000-4000-8000-000000000000")
        assert status == 404
        async with session.ws_connect(f"{cloud.gateway_url}/ws?token={token}&kinds=instance") as ws:
            await ws.close()
    logs = tmp_path / "logs"
    gateway, conductor = json_lines(logs / "gateway.log"), json_lines(logs / "conductor.log")
    named = {"identity": "identity", "scheduler": "scheduler", "net": "net", "image": "image"}
    named |= {"volume": "volume:local", "node-1": "node:node-1"}
    for log_name, process in named.items():
        assert {line["process"] for line in json_lines(logs / f"{log_name}.log")} == {process}
    [missing] = [line for line in gateway if line.get("path", "").startswith("/compute/v2.1/servers/6b1a")]
    assert (missing["logger"], missing["method"], missing["status"]) == ("aiostack.access", "GET", 404)
    assert missing["process"] == "gateway" and missing["request_id"].startswith("req-")
    refused = [line for line in conductor if line["request_id"] == missing["request_id"]]
    assert refused and "not_found" in refused[0]["message"], conductor[-5:]
    [socket] = [line for line in gateway if line.get("path", "").startswith("/ws")]
    assert socket["path"] == "/ws?token=***&kinds=instance"
    assert token not in (logs / "gateway.log").read_text()
