"""`aiostack server shelve|unshelve|shelve-offload SERVER [--wait]`."""

from __future__ import annotations

import argparse
from typing import Any

from aiostack.client import Client
from aiostack.sdk import OnEvent

HELP = {
    "shelve": "shelve a server: its disk saved as an image, then (as the cloud says) offloaded",
    "unshelve": "bring a shelved server back (on any host once offloaded)",
    "shelve-offload": "free a shelved server's host: its domain removed, its claim given back (admins)",
}
DONE = {"shelve": "SHELVED or SHELVED_OFFLOADED", "unshelve": "ACTIVE", "shelve-offload": "SHELVED_OFFLOADED"}


def add_shelve_commands(actions: Any) -> None:
    """The ``shelve``, ``unshelve`` and ``shelve-offload`` subcommands of `aiostack server`."""
    for action, text in HELP.items():
        parser = actions.add_parser(action, help=text)
        parser.add_argument("server", help="name or id")
        parser.add_argument(
            "--wait",
            action="store_true",
            help=f"return when it is {DONE[action]}, printing each state it goes through on stderr",
        )


async def run_shelve(client: Client, args: argparse.Namespace, on_event: OnEvent) -> int:
    """Shelve, unshelve or offload; prints the server's status and host after it."""
    servers = client.servers
    if args.action == "shelve":
        server = await servers.shelve(args.server, wait=args.wait, on_event=on_event)
    elif args.action == "unshelve":
        server = await servers.unshelve(args.server, wait=args.wait, on_event=on_event)
    else:
        server = await servers.shelve_offload(args.server, wait=args.wait, on_event=on_event)
    print(f"{server.name}: {server.status} (host {server.host or '-'})")
    return 0
