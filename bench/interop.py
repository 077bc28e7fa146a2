"""Interop: the "OpenStack Powered Compute" guideline's required Tempest tests against `aiostack up`.

Starts a fresh `aiostack up` in a temporary directory (known admin password), installs a pinned
Tempest in its own virtualenv (kept in ``~/.cache/aiostack/tempest-<version>``, made once),
writes ``tempest.conf`` from what the cloud serves (the identity endpoint, admin credentials, the
images, flavors and default network, the Neutron extensions, the external network ``public`` (made
with its subnet by the admin first, where external networks are built); feature flags from the routes in its
``/openapi.json``: what aiostack does not serve is switched off, so Tempest skips rather than
times out where it reads a flag), runs exactly the required tests of
``/work/shared/interop/os-powered-compute-required.tsv`` (matched by name, else by idempotent id
where Tempest renamed a class) with ``tempest run --load-list``, and reads the subunit stream into
one line per capability. Failures are grouped by the last HTTP error each test got (tempest.log)
or else by the line of its traceback that says why: what to build first.

A required test that never ran counts as its class's ``setUpClass`` did: failed (with that failure
as its reason) or skipped (a feature flag off). Skipped tests count against the goal as RefStack
counts them: the goal is at least 95% of the 214 required tests passed. Prints the table, the
most common failure causes, ``N passed, N failed, N skipped`` and one RESULT line last.

    python bench/interop.py [--guideline TSV] [--concurrency 2] [--keep DIR] [--filter REGEX]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import collections
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.launch import aiostack_up

TEMPEST_VERSION = "47.0.0"
# Tempest's release does not pin its requirements: bench/interop-constraints.txt does (the pip
# freeze of the virtualenv the baseline ran in), so a run a year on installs the same packages.
TEMPEST_EXTRA = ("python-subunit",)
CONSTRAINTS = Path(__file__).resolve().parent / "interop-constraints.txt"
PASSWORD = "interop-secret"
GOAL = 0.95
DEFAULT_GUIDELINE = "/work/shared/interop/os-powered-compute-required.tsv"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aiostack"

# Runs inside Tempest's virtualenv: the subunit v2 stream on stdin, one JSON line per test out.
SUBUNIT_READER = r"""
import json, sys
import subunit, testtools

def emit(test):
    details = test.get("details") or {}
    text = ""
    for name in ("traceback", "reason"):
        if name in details:
            text = details[name].as_text()
            break
    print(json.dumps({"id": test["id"], "status": test["status"], "details": text}))

stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
result = testtools.StreamToDict(emit)
result.startTestRun()
try:
    stream.run(result)
finally:
    result.stopTestRun()
"""


@dataclass(frozen=True)
class Required:
    capability: str
    test_id: str
    idempotent_id: str  # the uuid, without "id-"


def read_guideline(path: str) -> list[Required]:
    tests = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        capability, test_id, idempotent = line.split("\t")
        tests.append(Required(capability, test_id, idempotent.removeprefix("id-")))
    return tests


def tempest_venv(version: str) -> Path:
    """The virtualenv with ``tempest==version``, made the first time (a marker tells it is whole)."""
    venv = CACHE / f"tempest-{version}"
    marker = venv / ".aiostack-installed"
    if marker.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    print(f"installing tempest=={version} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = ["-c", str(CONSTRAINTS)] if version == TEMPEST_VERSION and CONSTRAINTS.exists() else []
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *constraints, f"tempest=={version}", *TEMPEST_EXTRA],
        check=True,
    )
    marker.write_text(version + "\n")
    return venv


# --- what the cloud serves -------------------------------------------------------------------


class Cloud:
    """A few plain HTTP calls with an admin token (no SDK: what Tempest sees is what we read)."""

    def __init__(self, gateway: str, password: str) -> None:
        self.gateway = gateway.rstrip("/")
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        request = urllib.request.Request(
            f"{self.gateway}/identity/v3/auth/tokens",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            self.token = answer.headers["X-Subject-Token"]
            token = json.load(answer)["token"]
        self.project_id = token["project"]["id"]
        self.catalog = {
            entry["type"]: next(e["url"] for e in entry["endpoints"] if e["interface"] == "public")
            for entry in token["catalog"]
        }

    def call(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        if not url.startswith("http"):
            url = self.gateway + url
        request = urllib.request.Request(
            url, data=body, method=method, headers={"X-Auth-Token": self.token, **(headers or {})}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = answer.read()
            kind = answer.headers.get("Content-Type", "")
        return json.loads(data) if data and "json" in kind else data

    def get(self, url: str):
        return self.call("GET", url)


def second_image(cloud: Cloud, image: dict) -> str:
    """An image like ``image`` (same bytes), for ``image_ref_alt``: aiostack starts with one."""
    name = f"{image['name']}-alt"
    for existing in cloud.get("/image/v2/images")["images"]:
        if existing["name"] == name:
            return existing["id"]
    data = cloud.get(f"/image/v2/images/{image['id']}/file")
    created = cloud.call(
        "POST",
        "/image/v2/images",
        json.dumps(
            {
                "name": name,
                "disk_format": image.get("disk_format") or "qcow2",
                "container_format": image.get("container_format") or "bare",
                "visibility": "public",
            }
        ).encode(),
        {"Content-Type": "application/json"},
    )
    cloud.call(
        "PUT", f"/image/v2/images/{created['id']}/file", data, {"Content-Type": "application/octet-stream"}
    )
    return created["id"]


PUBLIC_NETWORK = "public"
PUBLIC_CIDR = "203.0.113.0/24"
"""The external network Tempest's router and floating IP tests take gateways from (TEST-NET-3, a
documentation range: never routed anywhere)."""


def external_network(cloud: Cloud) -> dict:
    """The cloud's external network ``public`` with its subnet, made by the admin if it has none."""
    for network in cloud.get("/network/v2.0/networks?router:external=true")["networks"]:
        if network["name"] == PUBLIC_NETWORK:
            return network
    headers = {"Content-Type": "application/json"}
    asked = {"network": {"name": PUBLIC_NETWORK, "router:external": True}}
    network = cloud.call("POST", "/network/v2.0/networks", json.dumps(asked).encode(), headers)["network"]
    subnet = {"network_id": network["id"], "cidr": PUBLIC_CIDR, "enable_dhcp": False, "name": "public-subnet"}
    cloud.call("POST", "/network/v2.0/subnets", json.dumps({"subnet": subnet}).encode(), headers)
    return network


def microversion_range(document: dict) -> tuple[str, str]:
    version = document.get("version", document)
    return version.get("min_version") or "", version.get("version") or ""


def discover(cloud: Cloud) -> dict:
    """Everything tempest.conf is written from."""
    images = [i for i in cloud.get("/image/v2/images")["images"] if i.get("status") == "active"]
    if not images:
        raise RuntimeError("the cloud has no active image")
    image = next((i for i in images if i["name"] == "aiostack-tiny"), images[0])
    image_alt = next((i["id"] for i in images if i["id"] != image["id"]), None) or second_image(cloud, image)
    flavors = sorted(
        cloud.get("/compute/v2.1/flavors/detail")["flavors"], key=lambda f: (f["ram"], f["disk"])
    )
    networks = cloud.get("/network/v2.0/networks")["networks"]
    network = next((n for n in networks if n["name"] == "default"), None) or next(
        n for n in networks if n.get("shared")
    )
    extensions = sorted(e["alias"] for e in cloud.get("/network/v2.0/extensions")["extensions"])
    compute_min, compute_max = microversion_range(cloud.get("/compute/v2.1"))
    volume_min, volume_max = microversion_range(cloud.get("/volume/v3"))
    openapi = cloud.get("/openapi.json")
    paths = {path: {m.upper() for m in ops} for path, ops in openapi["paths"].items()}
    # The server actions aiostack takes: the members of POST /servers/{id}/action's body.
    action = openapi["paths"].get("/compute/v2.1/servers/{server_id}/action", {}).get("post", {})
    schema = action.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    server_actions = set(schema.get("properties", {}))
    volume_extensions = "/volume/v3/{project_id}/extensions"
    public = external_network(cloud) if "external-net" in extensions else None
    return {
        "public_network": public,
        "image": image["id"],
        "image_alt": image_alt,
        "flavor": flavors[0]["id"],
        "flavor_alt": flavors[1]["id"] if len(flavors) > 1 else flavors[0]["id"],
        "network": network["name"],
        "network_id": network["id"],
        "extensions": extensions,
        "compute_microversions": (compute_min, compute_max),
        "volume_microversions": (volume_min, volume_max),
        "paths": paths,
        "server_actions": server_actions,
        "volume_extensions": sorted(
            e["alias"] for e in cloud.get(volume_extensions.format(project_id=cloud.project_id))["extensions"]
        )
        if volume_extensions in paths
        else [],
        "volume_clones": takes_a_value(openapi, "VolumeCreate", "source_volid"),
    }


def takes_a_value(openapi: dict, component: str, member: str) -> bool:
    """Whether a request body's member may be other than null (a source the gateway builds from)."""
    properties = openapi["components"]["schemas"].get(component, {}).get("properties", {})
    return member in properties and properties[member].get("type") != "null"


def serves(paths: dict[str, set[str]], fragment: str) -> bool:
    return any(fragment in path for path in paths)


def tempest_conf(gateway: str, password: str, found: dict, log_file: str) -> str:
    paths = found["paths"]
    flag = {True: "True", False: "False"}
    compute_min, compute_max = found["compute_microversions"]
    volume_min, volume_max = found["volume_microversions"]
    actions = found["server_actions"]
    volume_snapshots = serves(paths, "/snapshots")
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"log_file": log_file, "debug": "True", "use_stderr": "False"},
        "oslo_concurrency": {"lock_path": str(Path(log_file).parent / "locks")},
        "auth": {
            "use_dynamic_credentials": "True",
            # tests use the shared network: a router per test project is what nothing here needs
            "create_isolated_networks": "False",
            "admin_username": "admin",
            "admin_password": password,
            "admin_project_name": "admin",
            "admin_domain_name": "Default",
            "default_credentials_domain_name": "Default",
            "tempest_roles": "member",
            "admin_role": "admin",
        },
        "identity": {
            "uri_v3": f"{gateway}/identity/v3",
            "auth_version": "v3",
            "region": "RegionOne",
            "v3_endpoint_type": "public",
            "disable_ssl_certificate_validation": "True",
        },
        "identity-feature-enabled": {
            "api_v2": "False",
            "api_v3": "True",
            "security_compliance": "False",
            "project_tags": "False",
            "application_credentials": flag[serves(paths, "/application_credentials")],
            "access_rules": "False",
            "trust": flag[serves(paths, "/OS-TRUST")],
        },
        "compute": {
            "image_ref": found["image"],
            "image_ref_alt": found["image_alt"],
            "flavor_ref": str(found["flavor"]),
            "flavor_ref_alt": str(found["flavor_alt"]),
            "fixed_network_name": found["network"],
            "build_timeout": "90",
            "build_interval": "1",
            "min_microversion": compute_min or "None",
            "max_microversion": compute_max or "None",
            "endpoint_type": "publicURL",
        },
        "compute-feature-enabled": {
            "api_extensions": "all",
            "change_password": flag["changePassword" in actions],
            "console_output": flag["os-getConsoleOutput" in actions],
            "resize": flag["resize" in actions],
            "pause": flag["pause" in actions],
            "suspend": flag["suspend" in actions],
            "shelve": flag["shelve" in actions],
            "shelve_migrate": "False",
            "rescue": flag["rescue" in actions],
            "snapshot": flag["createImage" in actions],
            "cold_migration": "False",
            "live_migration": "False",
            "metadata_service": "False",
            "config_drive": "False",
            "personality": "False",
            "interface_attach": flag[serves(paths, "/os-interface")],
            "vnc_console": "False",
            "spice_console": "False",
            "serial_console": "False",
            "attach_encrypted_volume": "False",
            "volume_multiattach": "False",
            "hostname_fqdn_sanitization": "False",
            "disk_config": "False",
        },
        "validation": {"run_validation": "False", "connect_method": "fixed", "auth_method": "keypair"},
        "image": {"build_timeout": "60", "build_interval": "1", "endpoint_type": "publicURL"},
        "image-feature-enabled": {
            "api_v2": "True",
            "api_v1": "False",
            "import_image": flag[serves(paths, "/import")],
            "os_glance_reserved": "False",
            "manage_locations": "False",
            "image_format_enforcement": "False",  # actors/image.py stores the bytes as sent
        },
        "network": {
            "project_network_cidr": "10.100.0.0/16",
            "project_network_mask_bits": "28",
            "public_network_id": found["public_network"]["id"] if found["public_network"] else "",
            "floating_network_name": found["public_network"]["name"] if found["public_network"] else "",
            "shared_physical_network": "False",
            "build_timeout": "60",
            "endpoint_type": "publicURL",
        },
        "network-feature-enabled": {
            "api_extensions": ",".join(found["extensions"]) or "None",
            "ipv6": "False",  # gateway/network.py: only IPv4 is built
            "ipv6_subnet_attributes": "False",
            "port_security": flag["port-security" in found["extensions"]],
            "floating_ips": flag[serves(paths, "/floatingips")],
        },
        "volume": {
            "catalog_type": "volumev3",
            "build_timeout": "60",
            "build_interval": "1",
            "min_microversion": volume_min or "None",
            "max_microversion": volume_max or "None",
            "endpoint_type": "publicURL",
            "volume_size": "1",
        },
        "volume-feature-enabled": {
            "api_v3": "True",
            "backup": flag[serves(paths, "/backups")],
            "snapshot": flag[volume_snapshots],
            "clone": flag[found["volume_clones"]],
            "manage_snapshot": "False",
            "manage_volume": "False",
            "extend_attached_volume": "False",
            # the extensions served (Tempest's "all" wants Cinder's whole list, os-hosts and all)
            "api_extensions": ",".join(found["volume_extensions"]) or "None",
        },
        "service_available": {
            "nova": "True",
            "glance": "True",
            "neutron": "True",
            "cinder": "True",
            "swift": "False",
            "heat": "False",
            "horizon": "False",
        },
        "object-storage-feature-enabled": {"discoverability": "False"},
    }
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


# --- running Tempest -------------------------------------------------------------------------


def tempest(venv: Path, workspace: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=workspace, env=env, **kwargs)


def run_required(venv: Path, workspace: Path, concurrency: int, timeout: float) -> bool:
    """``tempest run --load-list required.txt`` in a session of its own, output in run.out.

    False if it was stopped at ``timeout``: its whole process group is killed (stestr's workers too).
    """
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    command = [str(venv / "bin" / "tempest"), "run", "--load-list", "required.txt"]
    command += ["--concurrency", str(concurrency)]
    with open(workspace / "run.out", "w") as out:
        process = subprocess.Popen(
            command, cwd=workspace, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return False
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise


def select_tests(listed: list[str], required: list[Required], pattern: str | None) -> dict[str, Required]:
    """Full test ids (with their ``[id-...,tags]``) of the required tests: by name, else by idempotent id.

    An idempotent id is shared by a class's subclasses (ServersTestJSON's ServersTestManualDisk,
    ServersTestBootFromVolume...), which the guideline does not require: the name decides first.
    """
    wanted = [r for r in required if not pattern or re.search(pattern, r.test_id)]
    by_name = {test_id.split("[", 1)[0]: test_id for test_id in listed}
    by_uuid = collections.defaultdict(list)
    for test_id in listed:
        match = re.search(r"\[(?:[^\]]*,)?id-([0-9a-f-]{36})", test_id)
        if match:
            by_uuid[match.group(1)].append(test_id)
    chosen = {}
    for r in wanted:
        if r.test_id in by_name:
            chosen[by_name[r.test_id]] = r
        elif len(by_uuid.get(r.idempotent_id, ())) == 1:  # the class or module was renamed
            chosen[by_uuid[r.idempotent_id][0]] = r
    return chosen


def reason_of(details: str) -> str:
    """The line of a traceback that says what went wrong."""
    lines = [line.strip() for line in details.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if (
            re.match(
                r"^(tempest\.|testtools\.|[A-Za-z_.]*(Error|Exception|Failure|Timeout|Found|Conflict))", line
            )
            or "Details:" in line
        ):
            # Tempest puts the response body on the line after "Details:"
            index = lines.index(line)
            text = " ".join(lines[index : index + 2]) if line.endswith("Details:") else line
            # A body that Tempest's response schema refuses: which schema (which call) says it
            schemas = re.findall(r"validate_response\(\s*(?:schema\.|self\.schema\.)?(\w+)", details)
            if "response body is invalid" in text and schemas:
                text = f"schema {schemas[-1]}: {text.removeprefix('Details: ')}"
            return text[:300]
    return (lines[-1] if lines else "")[:300]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guideline", default=DEFAULT_GUIDELINE)
    parser.add_argument("--tempest-version", default=TEMPEST_VERSION)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole Tempest run")
    parser.add_argument("--keep", help="copy the workspace (tempest.conf, tempest.log, subunit) here")
    parser.add_argument("--filter", help="only the required tests whose id matches this regex")
    args = parser.parse_args()

    required = read_guideline(args.guideline)
    venv = tempest_venv(args.tempest_version)
    asyncio.run(run(args, required, venv))


async def run(args: argparse.Namespace, required: list[Required], venv: Path) -> None:
    started = time.perf_counter()
    env = {"AIOSTACK_ADMIN_PASSWORD": PASSWORD}
    with tempfile.TemporaryDirectory(prefix="aiostack-interop-") as tmp:
        data_dir = Path(tmp) / "cloud"
        workspace = Path(tmp) / "tempest"
        async with aiostack_up(data_dir, env=env, timeout=180) as cloud_process:
            gateway = cloud_process.gateway_url.rstrip("/")
            print(f"cloud: {gateway} (data in {data_dir})", flush=True)
            cloud = await asyncio.to_thread(Cloud, gateway, PASSWORD)
            found = await asyncio.to_thread(discover, cloud)
            # A workspace file of its own: ~/.tempest/workspace.yaml is neither read nor written.
            registry = str(Path(tmp) / "workspace.yaml")
            init = ("tempest", "init", "--workspace-path", registry, str(workspace))
            await asyncio.to_thread(tempest, venv, Path(tmp), *init, check=True, capture_output=True)
            conf = tempest_conf(gateway, PASSWORD, found, str(workspace / "tempest.log"))
            (workspace / "etc" / "tempest.conf").write_text(conf)
            print(
                f"tempest.conf: image {found['image']} alt {found['image_alt']}, flavors {found['flavor']}/"
                f"{found['flavor_alt']}, network {found['network']}, compute microversions "
                f"{'-'.join(found['compute_microversions'])},"
                f" neutron extensions {','.join(found['extensions'])}",
                flush=True,
            )
            listed = await asyncio.to_thread(
                tempest, venv, workspace, "tempest", "run", "--list-tests", capture_output=True, text=True
            )
            if listed.returncode:
                raise RuntimeError(
                    f"tempest run --list-tests failed:\n{listed.stdout[-3000:]}{listed.stderr[-3000:]}"
                )
            chosen = select_tests(listed.stdout.split(), required, args.filter)
            wanted = [r for r in required if not args.filter or re.search(args.filter, r.test_id)]
            missing = {r.idempotent_id for r in wanted} - {r.idempotent_id for r in chosen.values()}
            print(
                f"{len(chosen)} of {len(wanted)} required tests found in tempest {args.tempest_version}"
                + (f"; not found: {sorted(missing)}" if missing else ""),
                flush=True,
            )
            (workspace / "required.txt").write_text("\n".join(sorted(chosen)) + "\n")
            setup_s = time.perf_counter() - started
            run_started = time.perf_counter()
            finished = await asyncio.to_thread(run_required, venv, workspace, args.concurrency, args.timeout)
            if not finished:
                print(f"tempest run stopped after {args.timeout:.0f} s", flush=True)
            run_s = time.perf_counter() - run_started
            stream = await asyncio.to_thread(
                tempest, venv, workspace, "stestr", "last", "--subunit", capture_output=True
            )
            (workspace / "last.subunit").write_bytes(stream.stdout)
            parsed = await asyncio.to_thread(
                tempest,
                venv,
                workspace,
                "python",
                "-c",
                SUBUNIT_READER,
                input=stream.stdout,
                capture_output=True,
            )
            results = [
                json.loads(line) for line in parsed.stdout.decode().splitlines() if line.startswith("{")
            ]
            log = workspace / "tempest.log"
            requests = failed_requests(log.read_text(errors="replace") if log.exists() else "")
            if args.keep:
                shutil.copytree(
                    workspace, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks")
                )
                shutil.copytree(data_dir / "logs", Path(args.keep) / "cloud-logs", dirs_exist_ok=True)
    report(required, wanted, chosen, results, requests, setup_s, run_s, time.perf_counter() - started)


REQUEST_LOG = re.compile(r"Request \((\w+):(\w+)\): (\d{3}) ([A-Z]+) (\S+)")
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


def failed_requests(log: str) -> dict[tuple[str, str], list[str]]:
    """(class, test method or setUp/setUpClass) -> its answers >= 400 from tempest.log, in order,
    as "404 GET /compute/v2.1/os-availability-zone" (ids as {id}, query values dropped)."""
    found: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for match in REQUEST_LOG.finditer(log):
        class_name, method, status, verb, url = match.groups()
        if int(status) < 400:
            continue
        path, _, query = re.sub(r"^https?://[^/]+", "", url).partition("?")
        path = UUID.sub("{id}", path)
        keys = sorted({pair.split("=", 1)[0] for pair in query.split("&") if pair})
        found[(class_name, method)].append(f"{status} {verb} {path}" + (f"?{'&'.join(keys)}" if keys else ""))
    return found


def last_failed_request(requests: dict[tuple[str, str], list[str]], test_id: str, whole_class: bool) -> str:
    class_path, method = test_id.rsplit(".", 1)
    class_name = class_path.rsplit(".", 1)[1]
    places = [(class_name, "setUpClass")] if whole_class else [(class_name, "setUp"), (class_name, method)]
    answers = [answer for place in places for answer in requests.get(place, ())]
    return answers[-1] if answers else ""


def report(required, wanted, chosen, results, requests, setup_s, run_s, total_s) -> None:
    by_id = {result["id"]: result for result in results}
    class_outcomes = {}
    for result in results:
        # "setUpClass (tempest.api.compute.servers.test_x.Class)": a class skipped or broken whole
        owner = re.match(r"\w+ \(([\w.]+)\)$", result["id"])
        if owner and result["status"] in ("fail", "skip"):
            class_outcomes[owner.group(1)] = result
    full_id = {r.test_id: test_id for test_id, r in chosen.items()}
    outcome: dict[str, tuple[str, str]] = {}
    for r in wanted:
        result = by_id.get(full_id.get(r.test_id, ""))
        if result is None:
            whole = class_outcomes.get(r.test_id.rsplit(".", 1)[0])
            if whole is None:
                outcome[r.test_id] = ("failed", "not run" if r.test_id in full_id else "not in this Tempest")
            elif whole["status"] == "skip":
                outcome[r.test_id] = ("skipped", f"[class] {reason_of(whole['details'])}")
            else:
                outcome[r.test_id] = ("failed", f"[setUpClass] {reason_of(whole['details'])}")
        elif result["status"] in ("success", "xfail"):
            outcome[r.test_id] = ("passed", "")
        elif result["status"] == "skip":
            outcome[r.test_id] = ("skipped", reason_of(result["details"]))
        else:
            outcome[r.test_id] = ("failed", reason_of(result["details"]))

    per_capability: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in wanted:
        per_capability[r.capability][outcome[r.test_id][0]] += 1
    width = max(len(c) for c in per_capability)
    print()
    print(f"{'capability':<{width}}  tests passed failed skipped")
    for capability in sorted(per_capability):
        counts = per_capability[capability]
        total = sum(counts.values())
        mark = "ok" if counts["passed"] == total else ""
        numbers = f"{total:5} {counts['passed']:6} {counts['failed']:6} {counts['skipped']:7}"
        print(f"{capability:<{width}}  {numbers}  {mark}")

    # Grouped by the last answer >= 400 the test (or its class's setup) got, else by the reason.
    groups: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for test_id, (status, reason) in outcome.items():
        if status == "passed":
            continue
        answer = (
            ""
            if status == "skipped"
            else last_failed_request(requests, test_id, reason.startswith("[setUpClass]"))
        )
        key = (
            status,
            answer or re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}|0x[0-9a-f]+", "…", reason)[:140],
        )
        groups[key].append(test_id)
    print()
    print("why, most common first (count, outcome, the last HTTP error it got or its reason; one test, why):")
    for (status, key), tests in sorted(groups.items(), key=lambda item: -len(item[1]))[:40]:
        print(f"{len(tests):4} {status:7} {key}")
        print(f"             e.g. {tests[0].rsplit('.', 2)[-2]}.{tests[0].rsplit('.', 1)[-1]}")
        if outcome[tests[0]][1] and outcome[tests[0]][1] != key:
            print(f"             {outcome[tests[0]][1][:200]}")

    passed = sum(1 for s, _ in outcome.values() if s == "passed")
    failed = sum(1 for s, _ in outcome.values() if s == "failed")
    skipped = sum(1 for s, _ in outcome.values() if s == "skipped")
    total = len(wanted)
    rate = passed / total if total else 0.0
    print()
    print(f"setup {setup_s:.0f} s, tempest run {run_s:.0f} s, all {total_s:.0f} s")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    print(
        f"RESULT passed={passed} failed={failed} skipped={skipped} total={total}"
        f" pass_rate={rate:.3f} goal_met={'yes' if rate >= GOAL and total == len(required) else 'no'}"
    )


if __name__ == "__main__":
    main()
