"""`aiostack server resize SERVER --flavor F [--wait]` and `aiostack server resize confirm|revert SERVER`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aiostack.client import Client

DECISIONS = ("confirm", "revert")


def add_resize_command(actions: Any) -> None:
    """The ``resize`` subcommand of `aiostack server`."""
    resize = actions.add_parser(
        "resize",
        help="resize a server to another flavor (VERIFY_RESIZE), then confirm or revert it",
        usage="aiostack server resize SERVER --flavor FLAVOR [--wait] | resize {confirm,revert} SERVER",
    )
    resize.add_argument("target", nargs="+", metavar="[confirm|revert] SERVER", help="name or id")
    resize.add_argument("--flavor", help="the new flavor, by name or id")
    resize.add_argument("--wait", action="store_true", help="return when the server is VERIFY_RESIZE")


def resize_request(args: argparse.Namespace) -> tuple[str, str]:
    """(``resize``, ``confirm`` or ``revert``; the server) the arguments ask for.

    :raises ValueError: they ask for none of them, or for a resize without ``--flavor``.
    """
    match args.target:
        case [decision, server] if decision in DECISIONS:
            return decision, server
        case [server] if args.flavor:
            return "resize", server
        case [_]:
            raise ValueError("a resize needs --flavor")
    raise ValueError("expected SERVER --flavor FLAVOR, or confirm SERVER, or revert SERVER")


async def run_resize(client: Client, args: argparse.Namespace) -> int:
    """Resize, confirm or revert; prints the server's status after it."""
    try:
        what, server = resize_request(args)
    except ValueError as exc:
        print(f"aiostack: {exc}", file=sys.stderr)
        return 2
    servers = client.servers
    if what == "confirm":
        resized = await servers.confirm_resize(server)
    elif what == "revert":
        resized = await servers.revert_resize(server, wait=args.wait)
    else:
        resized = await servers.resize(server, args.flavor, wait=args.wait)
    print(f"{resized.name}: {resized.status} (flavor {resized.flavor_id})")
    return 0
