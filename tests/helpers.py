"""Test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import aiohttp

from aiostack.client import password_auth

DEMO_PASSWORD = "demo-secret"


class Api:
    """An HTTP client for the gateway under test; ``login()`` sets X-Auth-Token."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers: dict[str, str] = {}
        self.project_id: str | None = None

    async def login(
        self, user: str = "demo", password: str = DEMO_PASSWORD, project: str | None = None
    ) -> str:
        body = password_auth(user, password, project or user)
        async with self.session.post(f"{self.base_url}/identity/v3/auth/tokens", json=body) as response:
            assert response.status == 201, await response.text()
            token = response.headers["X-Subject-Token"]
            self.project_id = (await response.json())["token"]["project"]["id"]
        self.headers = {"X-Auth-Token": token}
        return token

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.session.request(method, self.base_url + path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.read()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=body, **kwargs)

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, json=body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kwargs)

    async def boot_tiny(self, name: str) -> str:
        """Ask for a server of the tiny image and flavor 1; its id (it is being built)."""
        image = (await self.get("/image/v2/images?name=aiostack-tiny"))[1]["images"][0]["id"]
        status, created = await self.post(
            "/compute/v2.1/servers", {"server": {"name": name, "imageRef": image, "flavorRef": "1"}}
        )
        assert status == 202, created
        return str(created["server"]["id"])


async def aiostack_audit(data_dir: str | os.PathLike[str]) -> tuple[int, str]:
    """Run ``aiostack audit`` on a running cloud's data directory: its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", "audit", "--data-dir", str(data_dir), "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def aiostack_cli(url: str, command: str, *args: str) -> str:
    """``aiostack COMMAND ARGS`` as the demo user; its output (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", command, "--url", url, "--username", "demo",
        "--password", DEMO_PASSWORD, "--project", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output
    return output.decode()
