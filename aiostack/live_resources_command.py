"""`aiostack server set-resources SERVER [--vcpus N] [--ram MB] [--wait]`: a running server's vCPUs
and RAM changed live, within its flavor's maxima (``aiostack:max_vcpus``, ``aiostack:max_ram_mb``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aiostack.client import Client


def add_set_resources_command(actions: Any) -> None:
    """The ``set-resources`` subcommand of `aiostack server`."""
    command = actions.add_parser(
        "set-resources",
        help="change a running server's vCPUs and RAM live, within its flavor's maxima",
        usage="aiostack server set-resources SERVER [--vcpus N] [--ram MB] [--wait]",
    )
    command.add_argument("server", help="name or id")
    command.add_argument("--vcpus", type=int, help="the vCPUs it should have (default: as it has)")
    command.add_argument("--ram", type=int, help="the RAM in MB it should have (default: as it has)")
    command.add_argument("--wait", action="store_true", help="return when the guest has the new size")


async def run_set_resources(client: Client, args: argparse.Namespace) -> int:
    """Change the size; prints the server's status and size after it."""
    if args.vcpus is None and args.ram is None:
        print("aiostack: set-resources needs --vcpus, --ram or both", file=sys.stderr)
        return 2
    server = await client.servers.set_resources(args.server, vcpus=args.vcpus, ram=args.ram, wait=args.wait)
    print(f"{server.name}: {server.status} ({server.vcpus} vCPUs, {server.ram} MB)")
    return 0
