"""Boots in lanes through one gateway, every request and event recorded: the client side of the
cluster's failure test and bench (run on a client host of the harness).

Each lane POSTs a server, then waits for its ``instance.active`` event on the client's websocket
before the next; the lanes stop once ``--boots`` were accepted. Requests are plain HTTP with no
retry of their own: a request the stack does not carry through a failure counts as failed.
``--progress`` is rewritten with the number of requests answered so far, for whoever times the
failures. Then every instance accepted must be ACTIVE (its event seen within ``--settle``
seconds, or else the API asked), is deleted, and must be gone. The report is one JSON line:

* ``requests``, ``failed`` (with ``failures``: status, when answered and body of each), ``slow``
  (answered after more than a second; ``slow_at``: when, and how long each took), ``accepted``;
* ``events_lost``: instances ACTIVE by the API whose ``instance.active`` never came;
* ``not_active``: instances not ACTIVE in the end (with their statuses);
* ``deleted``, ``left``: instances deleted, and still listed after the deletes.

    ADMIN_PASSWORD=... python -m deploy.boot_load URL --boots 300 --lanes 16 --progress FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from aiostack.client import password_auth

SLOW = 1.0


class Lanes:
    """One session and one websocket; the lanes' outcomes."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.headers: dict[str, str] = {}
        self.active: dict[str, asyncio.Event] = {}
        self.outcomes: list[dict[str, Any]] = []
        self.accepted: list[str] = []

    async def login(self, password: str) -> None:
        body = password_auth("admin", password, "admin")
        async with self.session.post(f"{self.url}/identity/v3/auth/tokens", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"login: {response.status} {await response.text()}")
            self.headers = {"X-Auth-Token": response.headers["X-Subject-Token"]}
        async with self.session.get(
            f"{self.url}/image/v2/images?name=aiostack-tiny", headers=self.headers
        ) as r:
            self.image = (await r.json())["images"][0]["id"]

    async def read_events(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") == "event" and frame["event"]["type"] == "instance.active":
                self.active.setdefault(frame["event"]["id"], asyncio.Event()).set()

    async def lane(self, number: int, boots: int, progress: Path | None) -> None:
        count = 0
        while len(self.accepted) < boots:
            body = {"server": {"name": f"lane-{number}-{count}", "imageRef": self.image, "flavorRef": "1"}}
            sent = time.monotonic()
            try:
                async with self.session.post(
                    f"{self.url}/compute/v2.1/servers", json=body, headers=self.headers
                ) as response:
                    status, text = response.status, await response.text()
            except aiohttp.ClientError as exc:
                status, text = 0, repr(exc)
            took = time.monotonic() - sent
            self.outcomes.append(
                {"status": status, "at": time.time(), "took": took, "body": text if status != 202 else ""}
            )
            if progress is not None:
                progress.write_text(f"{len(self.outcomes)}\n")
            count += 1
            if status != 202:
                await asyncio.sleep(0.1)
                continue
            server_id = json.loads(text)["server"]["id"]
            self.accepted.append(server_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    await self.active.setdefault(server_id, asyncio.Event()).wait()

    async def status(self, server_id: str) -> str:
        """The server's status, and its fault's message if it has one."""
        async with self.session.get(
            f"{self.url}/compute/v2.1/servers/{server_id}", headers=self.headers
        ) as r:
            if r.status != 200:
                return f"HTTP {r.status}"
            server = (await r.json())["server"]
        fault = server.get("fault", {}).get("message")
        return f"{server['status']}: {fault}" if fault else str(server["status"])

    async def settle(self, timeout: float) -> tuple[int, dict[str, str]]:
        """Events lost, and the instances not ACTIVE with their statuses."""
        end = time.monotonic() + timeout
        lost, not_active = 0, {}
        for server_id in self.accepted:
            event = self.active.setdefault(server_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, end - time.monotonic())):
                    await event.wait()
            if event.is_set():
                continue
            status = await self.status(server_id)
            if status == "ACTIVE":
                lost += 1
            else:
                not_active[server_id] = status
        return lost, not_active

    async def delete_all(self, timeout: float) -> tuple[int, int]:
        """Delete every instance accepted; how many, and how many are still listed at the end."""
        for server_id in self.accepted:
            async with self.session.delete(
                f"{self.url}/compute/v2.1/servers/{server_id}", headers=self.headers
            ) as response:
                if response.status not in (204, 404):
                    raise RuntimeError(f"delete {server_id}: {response.status} {await response.text()}")
        left: list[Any] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    async with self.session.get(
                        f"{self.url}/compute/v2.1/servers", headers=self.headers
                    ) as r:
                        left = (await r.json())["servers"]
                    if not left:
                        break
                    await asyncio.sleep(0.5)
        return len(self.accepted), len(left)


async def run(url: str, boots: int, lanes: int, progress: Path | None, settle: float) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=lanes + 8)) as session:
        load = Lanes(url, session)
        await load.login(os.environ["ADMIN_PASSWORD"])
        async with session.ws_connect(f"{url}/ws?kinds=instance", headers=load.headers) as ws:
            reader = asyncio.create_task(load.read_events(ws))
            await asyncio.gather(*(load.lane(number, boots, progress) for number in range(lanes)))
            events_lost, not_active = await load.settle(settle)
            reader.cancel()
        deleted, left = await load.delete_all(settle)
    failures = [outcome for outcome in load.outcomes if outcome["status"] != 202]
    return {
        "requests": len(load.outcomes),
        "failed": len(failures),
        "failures": [{"status": f["status"], "at": f["at"], "body": f["body"][:300]} for f in failures],
        "slow": sum(outcome["took"] > SLOW for outcome in load.outcomes),
        "slow_at": [[o["at"], round(o["took"], 2)] for o in load.outcomes if o["took"] > SLOW],
        "slowest_s": max((outcome["took"] for outcome in load.outcomes), default=0.0),
        "accepted": len(load.accepted),
        "events_lost": events_lost,
        "not_active": len(not_active),
        "not_active_statuses": sorted(set(not_active.values())),
        "deleted": deleted,
        "left": left,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.boot_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--boots", type=int, default=300)
    parser.add_argument("--lanes", type=int, default=16)
    parser.add_argument("--progress", type=Path)
    parser.add_argument("--settle", type=float, default=90.0, help="seconds the instances get to be ACTIVE")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.url, args.boots, args.lanes, args.progress, args.settle))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
