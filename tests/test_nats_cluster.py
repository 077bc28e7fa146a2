"""aiostack on a 3-server NATS cluster in the multi-host harness: TLS with the CA aiostack makes,
each process its own user and permissions, and a client that loses its server carries on.

A real scheduler process (`aiostack run scheduler`) runs on controller-2; a client on compute-1
knows all three servers. The probe, run inside compute-1, pings the scheduler, SIGKILLs the
nats-server it is connected to, and pings again until answered: it is, through another server
(no wall time is asserted). A client that does not trust the CA, and one with a wrong password,
are refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from deploy.credentials import Principal, prepare, trust
from deploy.hosts import build
from deploy.tls import CertificateAuthority

PREFIX = "aiostack"

PROBE = """
import asyncio, json, os, signal, sys, time
from bus import Bus
from bus.api import liveness

async def refused(credentials):
    try:
        async with asyncio.timeout(8):
            bus = await Bus.connect(urls, credentials=credentials, connect_timeout=2)
    except Exception as exc:
        return type(exc).__name__
    await bus.close()
    return None

async def main():
    report = {}
    bus = await Bus.connect(urls, credentials=admin, name="probe")
    async with asyncio.timeout(60):  # until the scheduler process is up
        while True:
            try:
                await liveness(bus, "scheduler", timeout=1).ping()
                break
            except Exception:
                await asyncio.sleep(0.2)
    first = bus.nc.connected_url.netloc
    os.kill(pids[first], signal.SIGKILL)
    began, failures = time.monotonic(), 0
    async with asyncio.timeout(60):
        while True:
            try:
                await liveness(bus, "scheduler", timeout=1).ping()
                break
            except Exception:
                failures += 1
                await asyncio.sleep(0.1)
    report |= {
        "killed": first,
        "now": bus.nc.connected_url.netloc,
        "recovered_s": round(time.monotonic() - began, 2),
        "failed_pings": failures,
    }
    await bus.close()
    report["untrusting"] = await refused(untrusting)
    report["wrong_password"] = await refused(wrong)
    print(json.dumps(report))

urls, admin, untrusting, wrong, pids = sys.argv[1:6]
pids = json.loads(pids)
asyncio.run(main())
"""


async def test_a_client_of_the_tls_cluster_survives_its_servers_death_and_strangers_are_refused(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "aiostack"
    credentials = prepare(data_dir, [Principal("scheduler", "scheduler")], PREFIX)
    ca = CertificateAuthority(tmp_path / "ca")
    trust(data_dir, ca.pem)
    for user in ("scheduler", "admin"):
        assert json.loads(credentials.file(user).read_text())["ca"] == ca.pem
    # a client without the CA, and one with a wrong password
    untrusting, wrong = tmp_path / "untrusting.json", tmp_path / "wrong.json"
    admin = json.loads(credentials.file("admin").read_text())
    untrusting.write_text(json.dumps({"user": "admin", "password": admin["password"]}))
    wrong.write_text(json.dumps({**admin, "password": "not-it"}))

    async with build(
        controllers=3, databases=0, computes=1, authorization=credentials.authorization, ca=tmp_path / "ca"
    ) as hosts:
        urls = ",".join(hosts.nats_urls)
        for host in hosts.role("controller"):  # TLS for clients and routes, with the CA's certificates
            config = (host.dir / "nats" / "nats-server.conf").read_text()
            assert config.count("tls {") == 2 and "verify: true" in config
        scheduler = hosts.hosts["controller-2"]
        await scheduler.start(
            "scheduler",
            [
                sys.executable, "-m", "aiostack.cli", "run", "scheduler", "--nats", urls,
                "--data-dir", str(data_dir), "--credentials", str(credentials.file("scheduler")),
            ],
        )  # fmt: skip
        pids = {
            f"{host.address}:4222": host.processes["nats-server"].pid for host in hosts.role("controller")
        }
        output = await hosts.hosts["compute-1"].run(
            sys.executable, "-c", PROBE, urls, str(credentials.file("admin")), str(untrusting), str(wrong),
            json.dumps(pids), timeout=180,
        )  # fmt: skip
        report = json.loads(output.strip().splitlines()[-1])
        assert report["killed"] != report["now"] and report["now"] in pids, report
        assert report["untrusting"] is not None and report["wrong_password"] is not None, report
        # the scheduler went on too: its log names no failure to reconnect for good
        log = (scheduler.dir / "logs" / "scheduler.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    shutil.rmtree(data_dir)


LEADER_LOSS = """
import asyncio, json, os, signal, sys
from bus import Bus

async def main():
    pids = json.loads(sys.argv[2])
    async with await Bus.connect(sys.argv[1], name="publisher") as bus:
        for _ in range(100):  # until the new cluster has a JetStream meta leader
            try:
                await bus.ensure_event_stream(replicas=3)
                break
            except Exception:
                await asyncio.sleep(0.2)
        leader = (await bus.nc.jetstream().stream_info(bus.event_stream)).cluster.leader
        os.kill(pids[leader], signal.SIGKILL)
        seqs = [await bus.publish_event(f"evt.test.p.e{n}", {"n": n}) for n in range(20)]
        info = await bus.nc.jetstream().stream_info(bus.event_stream)
        print(json.dumps({"killed": leader, "leader": info.cluster.leader, "seqs": seqs,
                          "stored": info.state.messages}))

asyncio.run(main())
"""


@pytest.mark.full_size
async def test_events_published_while_the_streams_leader_dies_are_kept_once() -> None:
    """The event stream (R3) loses its leader's server: each event is offered again until the new
    leader acknowledges it, and the stream keeps every one exactly once."""
    async with build(controllers=3, databases=0, computes=1) as hosts:
        pids = {host.name: host.processes["nats-server"].pid for host in hosts.role("controller")}
        output = await hosts.hosts["compute-1"].run(
            sys.executable, "-c", LEADER_LOSS, ",".join(hosts.nats_urls), json.dumps(pids), timeout=120
        )
        report = json.loads(output.strip().splitlines()[-1])
        assert report["leader"] != report["killed"], report
        assert report["seqs"] == list(range(1, 21)) and report["stored"] == 20, report
