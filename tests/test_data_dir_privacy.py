"""The data directory `aiostack up` keeps is its owner's alone: folders 0700, files 0600.

It holds password hashes, token keys, bus credentials, volume and image bytes and logs: any
local user could read them when it was 0755 with 0644 files.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp

from deploy.launch import aiostack_up
from deploy.privacy import make_private
from tests.helpers import Api

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-secret", "AIOSTACK_DEMO_PASSWORD": "demo-secret"}


def readable_by_others(data_dir: Path) -> list[str]:
    """Every folder or regular file under ``data_dir`` whose mode lets group or others in."""
    found = []
    for folder, folders, files in os.walk(data_dir):
        for path in [Path(folder)] + [Path(folder, name) for name in files + folders]:
            mode = path.lstat().st_mode
            if (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and stat.S_IMODE(mode) & 0o077:
                found.append(f"{path.relative_to(data_dir)} {stat.S_IMODE(mode):o}")
    return found


async def test_up_makes_an_open_data_dir_private_says_so_and_keeps_what_it_writes_private(tmp_path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "logs").mkdir(parents=True)
    data_dir.chmod(0o755)
    (data_dir / "logs").chmod(0o755)
    leftover = data_dir / "logs" / "old.log"
    leftover.write_text("from an older run\n")
    leftover.chmod(0o644)

    async with aiostack_up(data_dir, "--nodes", "1", env=PASSWORDS) as cloud:
        assert "3 files and folders" in cloud.banner and "made them owner-only" in cloud.banner
        async with aiohttp.ClientSession() as session:
            api = Api(session, cloud.gateway_url)
            await api.login("demo", "demo-secret")
            status, body = await api.post(f"/volume/v3/{api.project_id}/volumes", {"volume": {"size": 1}})
            assert status == 202, body
            volume_id = body["volume"]["id"]
            async with asyncio.timeout(30):
                while (await api.get(f"/volume/v3/{api.project_id}/volumes/{volume_id}"))[1]["volume"][
                    "status"
                ] != "available":
                    await asyncio.sleep(0.1)
        assert readable_by_others(data_dir) == []
        assert any(data_dir.rglob("*.sqlite")) and any((data_dir / "volumes").iterdir())


def test_make_private_leaves_links_and_says_what_it_fixed(tmp_path) -> None:
    (tmp_path / "keys").mkdir(mode=0o755)
    (tmp_path / "keys" / "0").write_text("key")
    (tmp_path / "keys" / "0").chmod(0o640)
    (tmp_path / "ok").write_text("fine")
    (tmp_path / "ok").chmod(0o600)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (tmp_path / "link").symlink_to(outside)
    tmp_path.chmod(0o700)
    assert make_private(tmp_path) == [tmp_path / "keys", tmp_path / "keys" / "0"]
    assert readable_by_others(tmp_path) == []
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert make_private(tmp_path) == []
