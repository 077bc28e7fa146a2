"""`aiostack image|network|volume|flavor ...`: the other resources, as readable tables, through the
SDK's managers (``client.images`` ...).

Uploads show their progress (bytes, percent, MB/s) on stderr while they run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiostack.output import add_output_options, print_resource

RESOURCES = ("image", "network", "volume", "flavor", "keypair")
PrintRows = Callable[[list[dict[str, Any]], list[str]], None]
"""Prints rows under columns, as the command's ``-f`` and ``-c`` ask."""


def add_resource_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    image = commands.add_parser("image", parents=[options], help="list, upload, delete images")
    images = image.add_subparsers(dest="action", required=True)
    add_output_options(images.add_parser("list", help="list images"))
    upload = images.add_parser("upload", help="create an image from a file, showing progress")
    add_output_options(upload)
    upload.add_argument("name")
    upload.add_argument("file", type=Path)
    upload.add_argument("--disk-format", default="raw", help="raw, qcow2, aki, ari, ami, ...")
    upload.add_argument("--container-format", default="bare")
    upload.add_argument("--property", action="append", default=[], help="KEY=VALUE (repeatable)")
    images.add_parser("delete", help="delete an image").add_argument("image", help="name or id")
    network = commands.add_parser("network", parents=[options], help="list, create networks")
    networks = network.add_subparsers(dest="action", required=True)
    add_output_options(networks.add_parser("list", help="list networks with their subnets"))
    create = networks.add_parser("create", help="create a network with one IPv4 subnet")
    add_output_options(create)
    create.add_argument("name")
    create.add_argument("--cidr", required=True, help="the subnet, e.g. 10.30.0.0/24")
    volume = commands.add_parser("volume", parents=[options], help="list, create, delete volumes")
    volumes = volume.add_subparsers(dest="action", required=True)
    add_output_options(volumes.add_parser("list", help="list volumes"))
    create = volumes.add_parser("create", help="create a volume")
    add_output_options(create)
    create.add_argument("name")
    create.add_argument("--size", type=int, required=True, help="GiB")
    create.add_argument("--image", help="a bootable copy of this image (name or id)")
    delete = volumes.add_parser("delete", help="delete a volume")
    delete.add_argument("volume", help="name or id")
    add_output_options(delete)
    keypair = commands.add_parser("keypair", parents=[options], help="create, list, show, delete key pairs")
    keypairs = keypair.add_subparsers(dest="action", required=True)
    create = keypairs.add_parser("create", help="generate a key pair, or import a public key")
    create.add_argument("name")
    create.add_argument("--public-key", type=Path, help="import this OpenSSH public key file")
    create.add_argument(
        "--private-key", type=Path, help="write the generated private key to this new file (mode 0600)"
    )
    add_output_options(create)
    add_output_options(keypairs.add_parser("list", help="list key pairs"))
    show = keypairs.add_parser("show", help="show a key pair")
    show.add_argument("name")
    add_output_options(show)
    keypairs.add_parser("delete", help="delete a key pair").add_argument("name")
    flavor = commands.add_parser("flavor", parents=[options], help="list flavors")
    flavors = flavor.add_subparsers(dest="action", required=True)
    add_output_options(flavors.add_parser("list", help="list flavors"))


def _progress_printer(size: int) -> Callable[[int], None]:
    """Prints ``sent/size (percent, MB/s)`` on stderr, on one line, as an upload goes."""
    started = time.monotonic()

    def show(sent: int) -> None:
        rate = sent / max(time.monotonic() - started, 1e-6) / 1e6
        percent = 100 * sent / size if size else 100
        print(f"\r  uploading {sent / 1e6:8.1f} / {size / 1e6:.1f} MB {percent:5.1f}% {rate:6.1f} MB/s",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    return show


async def run_resource_command(client: Any, args: argparse.Namespace, print_rows: PrintRows) -> int:
    if args.command == "flavor":
        rows = [
            {"ID": f.id, "Name": f.name, "vCPUs": f.vcpus, "RAM MB": f.ram, "Disk GB": f.disk}
            for f in await client.flavors.list()
        ]
        print_rows(rows, ["ID", "Name", "vCPUs", "RAM MB", "Disk GB"])
        return 0
    if args.command == "image":
        return await _image(client, args, print_rows)
    if args.command == "keypair":
        return await _keypair(client, args, print_rows)
    if args.command == "network":
        return await _network(client, args, print_rows)
    return await _volume(client, args, print_rows)


async def _image(client: Any, args: argparse.Namespace, print_rows: PrintRows) -> int:
    if args.action == "list":
        images = await client.images.list()
        rows = [{"ID": i.id, "Name": i.name, "Status": i.status, "Format": i.disk_format,
                 "Size": i.size or "", "Visibility": i.visibility} for i in images]  # fmt: skip
        print_rows(rows, ["ID", "Name", "Status", "Format", "Size", "Visibility"])
        return 0
    if args.action == "delete":
        await client.images.delete(args.image)
        return 0
    image = await client.images.upload(
        args.name,
        args.file,
        disk_format=args.disk_format,
        container_format=args.container_format,
        properties=dict(item.split("=", 1) for item in args.property),
        progress=_progress_printer(os.path.getsize(args.file)),
    )
    print(file=sys.stderr)
    print_rows([{"ID": image.id, "Name": image.name, "Status": image.status, "Size": image.size,
                  "Checksum": image.checksum}], ["ID", "Name", "Status", "Size", "Checksum"])  # fmt: skip
    return 0


async def _network(client: Any, args: argparse.Namespace, print_rows: PrintRows) -> int:
    if args.action == "create":
        await client.networks.create(args.name, cidr=args.cidr)
    networks = (await client.request("GET", "/network/v2.0/networks"))["networks"]
    subnets = {s["id"]: s["cidr"] for s in (await client.request("GET", "/network/v2.0/subnets"))["subnets"]}
    rows = [{"ID": n["id"], "Name": n["name"], "Subnets": ", ".join(subnets.get(s, s) for s in n["subnets"]),
             "Shared": n["shared"]} for n in networks]  # fmt: skip
    print_rows(rows, ["ID", "Name", "Subnets", "Shared"])
    return 0


async def _volume(client: Any, args: argparse.Namespace, print_rows: PrintRows) -> int:
    if args.action == "create":
        await client.volumes.create(args.size, args.name, image=args.image, wait=False)
    elif args.action == "delete":
        await client.volumes.delete(args.volume, wait=False)
    rows = [{"ID": v.id, "Name": v.name, "Status": v.status, "Size GB": v.size,
             "Attached to": ", ".join(f"{a.server_id} on {a.device}" for a in v.attachments)}
            for v in await client.volumes.list()]  # fmt: skip
    print_rows(rows, ["ID", "Name", "Status", "Size GB", "Attached to"])
    return 0


async def _keypair(client: Any, args: argparse.Namespace, print_rows: PrintRows) -> int:
    columns = ["Name", "Type", "Fingerprint"]
    if args.action == "list":
        keypairs = await client.keypairs.list()
        print_rows(
            [{"Name": k.name, "Type": k.type, "Fingerprint": k.fingerprint} for k in keypairs], columns
        )
        return 0
    if args.action == "delete":
        await client.keypairs.delete(args.name)
        return 0
    if args.action == "show":
        keypair = await client.keypairs.get(args.name)
    else:
        if args.private_key is not None and (args.public_key is not None or args.private_key.exists()):
            why = "a public key is imported" if args.public_key else f"{args.private_key} exists"
            print(f"aiostack: no private key to write: {why}", file=sys.stderr)
            return 2
        public_key = args.public_key.read_text().strip() if args.public_key else None
        keypair = await client.keypairs.create(args.name, public_key=public_key)
        if keypair.private_key and args.private_key is not None:
            descriptor = os.open(args.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as private:
                private.write(keypair.private_key)
        elif keypair.private_key:
            print(keypair.private_key, end="")
            return 0
    print_resource(
        {
            "name": keypair.name,
            "type": keypair.type,
            "fingerprint": keypair.fingerprint,
            "public_key": keypair.public_key,
        },
        format=args.format,
        only=args.column,
    )
    return 0
