"""`aiostack image|network|volume|flavor ...`: the other resources, as readable tables.

Uploads show their progress (bytes, percent, MB/s) on stderr while they run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

RESOURCES = ("image", "network", "volume", "flavor")


def add_resource_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    image = commands.add_parser("image", parents=[options], help="list, upload, delete images")
    images = image.add_subparsers(dest="action", required=True)
    images.add_parser("list", help="list images")
    upload = images.add_parser("upload", help="create an image from a file, showing progress")
    upload.add_argument("name")
    upload.add_argument("file", type=Path)
    upload.add_argument("--disk-format", default="raw", help="raw, qcow2, aki, ari, ami, ...")
    upload.add_argument("--container-format", default="bare")
    upload.add_argument("--property", action="append", default=[], help="KEY=VALUE (repeatable)")
    images.add_parser("delete", help="delete an image").add_argument("image", help="name or id")
    network = commands.add_parser("network", parents=[options], help="list, create networks")
    networks = network.add_subparsers(dest="action", required=True)
    networks.add_parser("list", help="list networks with their subnets")
    create = networks.add_parser("create", help="create a network with one IPv4 subnet")
    create.add_argument("name")
    create.add_argument("--cidr", required=True, help="the subnet, e.g. 10.30.0.0/24")
    volume = commands.add_parser("volume", parents=[options], help="list, create, delete volumes")
    volumes = volume.add_subparsers(dest="action", required=True)
    volumes.add_parser("list", help="list volumes")
    create = volumes.add_parser("create", help="create a volume")
    create.add_argument("name")
    create.add_argument("--size", type=int, required=True, help="GiB")
    volumes.add_parser("delete", help="delete a volume").add_argument("volume", help="name or id")
    flavor = commands.add_parser("flavor", parents=[options], help="list flavors")
    flavor.add_subparsers(dest="action", required=True).add_parser("list", help="list flavors")


def _find(items: list[dict[str, Any]], name_or_id: str, kind: str) -> dict[str, Any]:
    for item in items:
        if name_or_id in (item["id"], item.get("name")):
            return item
    raise LookupError(f"no {kind} named {name_or_id!r}")


async def _chunks_with_progress(path: Path, size: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """The file's data, printing ``sent/size (percent, MB/s)`` on stderr as it goes."""
    started, sent = time.monotonic(), 0
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while data := await asyncio.to_thread(file.read, chunk):
            sent += len(data)
            rate = sent / max(time.monotonic() - started, 1e-6) / 1e6
            percent = 100 * sent / size if size else 100
            print(f"\r  uploading {sent / 1e6:8.1f} / {size / 1e6:.1f} MB {percent:5.1f}% {rate:6.1f} MB/s",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
            yield data
    finally:
        file.close()
        print(file=sys.stderr)


async def run_resource_command(client: Any, args: argparse.Namespace, print_table: Any) -> int:
    if args.command == "flavor":
        flavors = (await client.request("GET", "/compute/v2.1/flavors/detail"))["flavors"]
        rows = [
            {"ID": f["id"], "Name": f["name"], "vCPUs": f["vcpus"], "RAM MB": f["ram"], "Disk GB": f["disk"]}
            for f in flavors
        ]
        print_table(rows, ["ID", "Name", "vCPUs", "RAM MB", "Disk GB"])
        return 0
    if args.command == "image":
        return await _image(client, args, print_table)
    if args.command == "network":
        return await _network(client, args, print_table)
    return await _volume(client, args, print_table)


async def _image(client: Any, args: argparse.Namespace, print_table: Any) -> int:
    images = (await client.request("GET", "/image/v2/images?limit=1000"))["images"]
    if args.action == "list":
        rows = [{"ID": i["id"], "Name": i["name"], "Status": i["status"], "Format": i["disk_format"],
                 "Size": i["size"] or "", "Visibility": i["visibility"]} for i in images]  # fmt: skip
        print_table(rows, ["ID", "Name", "Status", "Format", "Size", "Visibility"])
        return 0
    if args.action == "delete":
        await client.request("DELETE", f"/image/v2/images/{_find(images, args.image, 'image')['id']}")
        return 0
    import aiohttp

    properties = dict(item.split("=", 1) for item in args.property)
    body = {"name": args.name, "disk_format": args.disk_format, "container_format": args.container_format}
    image = await client.request("POST", "/image/v2/images", {**body, **properties})
    size = os.path.getsize(args.file)
    headers = {"X-Auth-Token": client.token, "Content-Type": "application/octet-stream"}
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{client.url}/image/v2/images/{image['id']}/file",
            data=_chunks_with_progress(args.file, size),
            headers=headers,
        ) as response,
    ):
        if response.status >= 400:
            print(
                f"aiostack: upload failed: HTTP {response.status}: {await response.text()}", file=sys.stderr
            )
            return 1
    image = await client.request("GET", f"/image/v2/images/{image['id']}")
    print_table([{"ID": image["id"], "Name": image["name"], "Status": image["status"], "Size": image["size"],
                  "Checksum": image["checksum"]}], ["ID", "Name", "Status", "Size", "Checksum"])  # fmt: skip
    return 0


async def _network(client: Any, args: argparse.Namespace, print_table: Any) -> int:
    if args.action == "create":
        network = await client.request("POST", "/network/v2.0/networks", {"network": {"name": args.name}})
        subnet = {
            "network_id": network["network"]["id"],
            "cidr": args.cidr,
            "ip_version": 4,
            "name": f"{args.name}-subnet",
        }
        await client.request("POST", "/network/v2.0/subnets", {"subnet": subnet})
    networks = (await client.request("GET", "/network/v2.0/networks"))["networks"]
    subnets = {s["id"]: s["cidr"] for s in (await client.request("GET", "/network/v2.0/subnets"))["subnets"]}
    rows = [{"ID": n["id"], "Name": n["name"], "Subnets": ", ".join(subnets.get(s, s) for s in n["subnets"]),
             "Shared": n["shared"]} for n in networks]  # fmt: skip
    print_table(rows, ["ID", "Name", "Subnets", "Shared"])
    return 0


async def _volume(client: Any, args: argparse.Namespace, print_table: Any) -> int:
    base = f"/volume/v3/{client.project_id}/volumes"
    if args.action == "create":
        await client.request("POST", base, {"volume": {"name": args.name, "size": args.size}})
    elif args.action == "delete":
        volumes = (await client.request("GET", f"{base}/detail"))["volumes"]
        await client.request("DELETE", f"{base}/{_find(volumes, args.volume, 'volume')['id']}")
    volumes = (await client.request("GET", f"{base}/detail"))["volumes"]
    rows = [{"ID": v["id"], "Name": v["name"], "Status": v["status"], "Size GB": v["size"],
             "Attached to": ", ".join(f"{a['server_id']} on {a['device']}" for a in v["attachments"])}
            for v in volumes]  # fmt: skip
    print_table(rows, ["ID", "Name", "Status", "Size GB", "Attached to"])
    return 0
