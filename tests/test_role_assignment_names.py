"""``openstack role assignment list --names``, the real CLI, against a real `aiostack up`: each
assignment's role, user or group and project by name, with their domain, as Keystone answers
``include_names``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from deploy.launch import RunningCloud, aiostack_up

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-pw-names", "AIOSTACK_DEMO_PASSWORD": "demo-pw-names"}
OPENSTACK = str(Path(sys.executable).with_name("openstack"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[RunningCloud]:
    async with aiostack_up(tmp_path_factory.mktemp("names"), env=PASSWORDS) as running:
        yield running


def openstack_cli(cloud: RunningCloud, *args: str) -> str:
    """``openstack ARGS`` as the admin, with the clouds.yaml `aiostack up` wrote."""
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(cloud.data_dir / "clouds.yaml"),
        "OS_CLOUD": "aiostack-admin",
    }
    done = subprocess.run([OPENSTACK, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"openstack {' '.join(args)} -> {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def assignments(cloud: RunningCloud, *args: str) -> set[tuple[str, str, str, str]]:
    """``openstack role assignment list ARGS -f json`` as (role, user, group, project) rows."""
    rows = json.loads(openstack_cli(cloud, "role", "assignment", "list", *args, "-f", "json"))
    return {(row["Role"], row["User"], row["Group"], row["Project"]) for row in rows}


def test_role_assignment_list_with_names(cloud: RunningCloud) -> None:
    openstack_cli(cloud, "project", "create", "lab")
    openstack_cli(cloud, "group", "create", "devs")
    openstack_cli(cloud, "group", "add", "user", "devs", "demo")
    openstack_cli(cloud, "role", "add", "--group", "devs", "--project", "lab", "reader")
    named = assignments(cloud, "--names")
    assert {
        ("admin", "admin@Default", "", "admin@Default"),
        ("member", "demo@Default", "", "demo@Default"),
        ("reader", "", "devs@Default", "lab@Default"),
    } <= named
    assert ("reader", "demo@Default", "", "lab@Default") in assignments(
        cloud, "--names", "--effective", "--user", "demo"
    )
    by_id = assignments(cloud, "--project", "lab")
    ((role, user, group, project),) = by_id
    assert user == "" and len(role) == len(group) == len(project) == 32  # ids without --names
