"""The contract run: schemathesis against a real ``aiostack up``, every check, on ``/openapi.json``.

The driver shared by ``tests/gateway/test_contract.py`` (CI-sized) and ``bench/contract.py``
(bigger), as ``deploy.chaos`` is for the crash test and ``bench/chaos.py``. A cloud is started
(``deploy.launch.aiostack_up``, its actors checking their replies), an admin token taken, the
things requests may name collected (``references``: the image, a flavor, a key pair, the
default network; and what the run itself needs, which its requests must not delete: see
``contract_hooks``), then ``schemathesis run`` reads the document and tries every operation of
the route registry (every route the gateway serves) with all its checks; its JSON report gives
the numbers. Every check runs on every operation, but: ``use_after_free`` is replaced with
``contract_hooks.use_after_free_but_after_a_server_delete``, which leaves out only a read after
``DELETE /compute/v2.1/servers/{server_id}`` (see there); and two checks are told that the event
socket's success is its 101 (``CONFIG``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aiostack.client import password_auth
from deploy.launch import aiostack_up

ADMIN_PASSWORD = "contract-admin-secret"
REQUEST_TIMEOUT = 150.0
HOOKS = Path(__file__).with_name("contract_hooks.py")
CONFIG = """\
# A usage report's period must end after it starts (Nova's 400): two times, each valid, may not
# make one, which a schema cannot say. One filter, the operation's name (several ``include-*``
# keys select the operations any of them matches), and first: the first block that selects an
# operation sets its checks.
[[operations]]
include-name-regex = "^GET /compute/v2.1/os-simple-tenant-usage"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

# The event socket's success is a protocol switch: a schema-valid GET /ws is a WebSocket handshake
# (its headers are required parameters), answered 101 Switching Protocols. Schemathesis's checks
# count 1xx as neither a success nor a client error; these two are told 101 is this operation's
# success, and go on judging every other answer by their defaults.
[[operations]]
include-path = "/ws"
include-method = "GET"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "101"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "101",
]

# A hypervisor's uptime is not reported: its documented answer for a hypervisor that exists is
# Nova's 501 for a virt driver without it (the stateful phase reaches one through the detail list).
[[operations]]
include-path = "/compute/v2.1/os-hypervisors/{hypervisor_id}/uptime"
include-method = "GET"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""
"""Schemathesis's configuration (``schemathesis.toml``) of the run."""
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


WORKERS = 1
"""schemathesis's worker threads. One: with two, on this CPython (3.11.7), threads parsing source
at once (as Hypothesis does to describe a strategy's lambdas) failed with "AST constructor recursion
depth mismatch", which schemathesis reports as an error of whichever operation it was on (seen
three runs in a row under pytest; with one worker, none)."""


@dataclass
class ContractResult:
    """What one run did and found (from schemathesis's JSON report)."""

    exit_code: int
    operations: int
    selected: int
    test_cases: int
    failures: dict[str, int] = field(default_factory=dict)
    """Failures by check (``ST202 Schema-valid request rejected``...), counted as schemathesis does."""
    failed_operations: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def details(self) -> str:
        """Schemathesis's account of each error and failure."""
        starts = [self.output.find(title) for title in ("ERRORS", "FAILURES") if title in self.output]
        end = self.output.find("SUMMARY")
        return self.output[min(starts) : end if end > 0 else None] if starts else ""

    @property
    def clean(self) -> bool:
        return (
            self.exit_code == 0 and not self.failures and not self.errors and self.operations == self.selected
        )

    def summary(self) -> str:
        failures = ", ".join(f"{name}: {count}" for name, count in self.failures.items()) or "none"
        phases = ", ".join(f"{name} {status}" for name, status in self.phases.items())
        return (
            f"schemathesis: {self.operations} of {self.selected} operations tested,"
            f" {self.test_cases} test cases"
            f" ({phases}); failures: {failures}; errors: {len(self.errors)}"
        )


async def _login(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(
        f"{url}/identity/v3/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, "admin")
    ) as got:
        assert got.status == 201, await got.text()
        return got.headers["X-Subject-Token"]


async def _json(session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body, headers={"X-Auth-Token": token}) as got:
        assert got.status < 300, (method, url, got.status, await got.text())
        return await got.json()


async def references(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    """Things that exist, for the hooks to name: the default image, a flavor, a key pair, the
    default network, an external network (made here, for routers' gateways: the test driver's
    nodes plumb no router); and, for the hooks to keep, everything of the identity and network services
    there is before the run (the admin and demo users and projects, the default roles, the
    default network and its subnet) and the run's own token."""
    images = await _json(session, "GET", f"{url}/image/v2/images?name=aiostack-tiny", token)
    keypair = await _json(
        session, "POST", f"{url}/compute/v2.1/os-keypairs", token, {"keypair": {"name": "contract"}}
    )
    public = {"name": "contract-public", "router:external": True}
    external = await _json(session, "POST", f"{url}/network/v2.0/networks", token, {"network": public})
    subnet = {"network_id": external["network"]["id"], "cidr": "198.18.0.0/16", "ip_version": 4}
    await _json(session, "POST", f"{url}/network/v2.0/subnets", token, {"subnet": subnet})
    networks = (await _json(session, "GET", f"{url}/network/v2.0/networks", token))["networks"]
    subnets = (await _json(session, "GET", f"{url}/network/v2.0/subnets", token))["subnets"]
    kept: dict[str, list[str]] = {}
    for kind in ("users", "projects", "roles"):
        listed = (await _json(session, "GET", f"{url}/identity/v3/{kind}", token))[kind]
        kept[kind] = [item[key] for item in listed for key in ("id", "name")]
    kept["networks"] = [network["id"] for network in networks]
    kept["subnets"] = [subnet["id"] for subnet in subnets]
    return {
        "image": images["images"][0]["id"],
        "flavor": "1",
        "keypair": keypair["keypair"]["name"],
        "public_key": keypair["keypair"]["public_key"],
        "network": next(network["id"] for network in networks if network["name"] == "default"),
        "external_network": external["network"]["id"],
        "kept": kept,
        "token": token,
        "url": url,
    }


def _result(report: dict[str, Any], output: str) -> ContractResult:
    if not isinstance(report.get("operations"), dict):
        raise RuntimeError(f"schemathesis could not run:\n{output[-4000:]}")
    failures = {f"{f['code']} {f['title']}": f["count"] for f in report.get("failures", [])}
    return ContractResult(
        exit_code=report["exit_code"],
        operations=report["operations"]["tested"],
        selected=report["operations"]["selected"],
        test_cases=report["test_cases"]["generated"],
        failures=failures,
        failed_operations={f"{f['code']} {f['title']}": f["operations"] for f in report.get("failures", [])},
        errors=[json.dumps(error)[:2000] for error in report.get("errors", [])],
        phases={name: phase["status"] for name, phase in report.get("phases", {}).items()},
        output=output,
    )


async def run_schemathesis(
    url: str,
    token: str,
    refs: dict[str, Any],
    workdir: Path,
    *,
    max_examples: int,
    workers: int = WORKERS,
    seed: int | None = None,
    extra: Sequence[str] = (),
    timeout: float = 1800.0,
) -> ContractResult:
    """``schemathesis run`` on the gateway's document with every check; its report's numbers."""
    report = workdir / "schemathesis.json"
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"X-Auth-Token: {token}",
        "--checks",
        "all",
        # in their places: contract_hooks.use_after_free_but_after_a_server_delete, the same check
        # but for a read after DELETE /compute/v2.1/servers/{server_id} (Nova answers it before the
        # server is gone, and shows it deleting until then); and the two checks of an answer's
        # media type and body, but for an answer with no body where the document marks that it
        # may have none (x-aiostack-or-empty: Nova's server actions)
        "--exclude-checks",
        "use_after_free,content_type_conformance,response_schema_conformance",
        "--max-examples",
        str(max_examples),
        "--workers",
        str(workers),
        "--no-shrink",
        # a volume attach answers once the node has the disk (up to 120 s), a server create once
        # it is recorded (up to 10 s): slow under the run's load, and no contract failure
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *(["--seed", str(seed)] if seed is not None else []),
        *extra,
    ]
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": f"deploy.{HOOKS.stem}",
        "PYTHONPATH": os.pathsep.join([str(HOOKS.parent.parent), os.environ.get("PYTHONPATH", "")]),
        "AIOSTACK_CONTRACT_REFS": json.dumps(refs),
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {process.returncode}):\n{text[-4000:]}")
    return _result(json.loads(report.read_text()), text)


async def run_contract(
    data_dir: Path, *, max_examples: int, nodes: int = 2, workers: int = WORKERS, seed: int | None = None
) -> ContractResult:
    """Start a cloud in ``data_dir``, run the contract against it, stop it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "AIOSTACK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AIOSTACK_DEMO_PASSWORD": "contract-demo-secret",
        "AIOSTACK_CHECK_REPLIES": "1",
    }
    async with (
        aiostack_up(data_dir / "cloud", "--nodes", str(nodes), env=env) as cloud,
        aiohttp.ClientSession() as session,
    ):
        token = await _login(session, cloud.gateway_url)
        refs = await references(session, cloud.gateway_url, token)
        return await run_schemathesis(
            cloud.gateway_url, token, refs, data_dir, max_examples=max_examples, workers=workers, seed=seed
        )
