"""The `openstack` CLI, unmodified, on identity's system scope and self-service against a real
`aiostack up`: a system-scoped admin administers identity and nothing else, roles on the system,
role rename and delete, a user's own projects, password change and domain.

Commands run as subprocesses with the ``OS_*`` variables the CLI documents (``OS_SYSTEM_SCOPE=all``
instead of a project), each one's exit status and output checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from deploy.launch import RunningCloud, aiostack_up

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-pw-system", "AIOSTACK_DEMO_PASSWORD": "demo-pw-system"}
OPENSTACK = str(Path(sys.executable).with_name("openstack"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cloud(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningCloud]:
    async with aiostack_up(tmp_path_factory.mktemp("system-scope"), env=PASSWORDS) as running:
        yield running


def run(
    cloud: RunningCloud, *args: str, user: str, scope: dict[str, str], password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``openstack ARGS`` as ``user`` (admin or demo), with its first password unless another is
    given, in ``scope``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OS_")}
    env |= {
        "OS_AUTH_URL": f"{cloud.gateway_url}/identity/v3",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": user,
        "OS_PASSWORD": password or PASSWORDS[f"AIOSTACK_{user.upper()}_PASSWORD"],
        "OS_USER_DOMAIN_NAME": "Default",
        **scope,
    }
    return subprocess.run([OPENSTACK, *args], env=env, capture_output=True, text=True, timeout=120)


def as_system(cloud: RunningCloud, *args: str) -> str:
    """``openstack ARGS`` as the admin, scoped to the system; its output."""
    done = run(cloud, *args, user="admin", scope={"OS_SYSTEM_SCOPE": "all"})
    assert done.returncode == 0, f"openstack {' '.join(args)} -> {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def system_json(cloud: RunningCloud, *args: str) -> Any:
    return json.loads(as_system(cloud, *args, "-f", "json"))


def as_demo(cloud: RunningCloud, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    scope = {"OS_PROJECT_NAME": "demo", "OS_PROJECT_DOMAIN_NAME": "Default"}
    return run(cloud, *args, user="demo", scope=scope, password=password)


def test_a_system_scoped_admin_administers_identity_and_nothing_else(cloud: RunningCloud) -> None:
    token = system_json(cloud, "token", "issue")
    assert token["system"] == "all" and "project_id" not in token
    assert {user["Name"] for user in system_json(cloud, "user", "list")} == {
        "admin",
        "aiostack-service",
        "demo",
    }
    assert [p["Name"] for p in system_json(cloud, "project", "list", "--user", "demo")] == ["demo"]
    services = {entry["Type"] for entry in system_json(cloud, "catalog", "list")}
    assert "identity" in services and "volumev3" not in services  # no project to put in its URL

    as_system(cloud, "role", "add", "--system", "all", "--user", "demo", "reader")
    listed = system_json(cloud, "role", "assignment", "list", "--system", "all", "--names")
    assert {(a["Role"], a["User"]) for a in listed} == {
        ("admin", "admin@Default"),
        ("reader", "demo@Default"),
    }
    as_system(cloud, "role", "remove", "--system", "all", "--user", "demo", "reader")

    refused = run(cloud, "server", "list", user="admin", scope={"OS_SYSTEM_SCOPE": "all"})
    assert refused.returncode != 0 and "403" in refused.stderr  # compute wants a project-scoped token
    refused = run(cloud, "token", "issue", user="demo", scope={"OS_SYSTEM_SCOPE": "all"})
    assert refused.returncode != 0 and "401" in refused.stderr  # no role on the system


def test_roles_are_renamed_and_deleted(cloud: RunningCloud) -> None:
    as_system(cloud, "role", "create", "watcher")
    as_system(cloud, "role", "add", "--project", "demo", "--user", "demo", "watcher")
    as_system(cloud, "role", "set", "--name", "observer", "watcher")
    assert system_json(cloud, "role", "show", "observer")["name"] == "observer"
    as_system(cloud, "role", "delete", "observer")
    assert "observer" not in {role["Name"] for role in system_json(cloud, "role", "list")}
    assignments = system_json(cloud, "role", "assignment", "list", "--user", "demo", "--names")
    assert {a["Role"] for a in assignments} == {"member"}


def test_a_member_sees_its_projects_and_domain_and_changes_its_password(cloud: RunningCloud) -> None:
    done = as_demo(cloud, "project", "list", "--user", "demo", "-f", "json")
    assert done.returncode == 0 and [p["Name"] for p in json.loads(done.stdout)] == ["demo"], done.stderr
    done = as_demo(cloud, "project", "list", "--user", "admin")
    assert done.returncode != 0 and "403" in done.stderr
    done = as_demo(cloud, "domain", "show", "default", "-f", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["name"] == "Default", done.stderr

    done = as_demo(cloud, "user", "password", "set", "--original-password", "wrong", "--password", "new-pw")
    assert done.returncode != 0 and "401" in done.stderr
    new, old = "demo-pw-changed", PASSWORDS["AIOSTACK_DEMO_PASSWORD"]
    done = as_demo(cloud, "user", "password", "set", "--original-password", old, "--password", new)
    assert done.returncode == 0, done.stderr
    assert as_demo(cloud, "token", "issue").returncode != 0  # the old password is refused
    assert as_demo(cloud, "token", "issue", password=new).returncode == 0
