"""`aiostack server migrate SERVER [--wait]`: a cold migration (admins), then `aiostack server
resize confirm|revert SERVER` keeps or undoes it; `aiostack server migrate --live [--host H]
SERVER [--wait]`: a live migration."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aiostack.client import Client
from aiostack.sdk import OnEvent


def add_migrate_command(actions: Any) -> None:
    """The ``migrate`` subcommand of `aiostack server`."""
    migrate = actions.add_parser(
        "migrate",
        help="move a server to another host (admins): cold (VERIFY_RESIZE, then `resize confirm|revert`)"
        " or --live",
    )
    migrate.add_argument("server", help="name or id")
    migrate.add_argument("--live", action="store_true", help="keep it running while it moves")
    migrate.add_argument(
        "--host", help="with --live: the host to move it to (default: the scheduler's choice)"
    )
    migrate.add_argument(
        "--wait", action="store_true", help="return when it is VERIFY_RESIZE (--live: ACTIVE again)"
    )


async def run_migrate(client: Client, args: argparse.Namespace, on_event: OnEvent) -> int:
    """Migrate; prints the server's status and host after it (a live migration's states as they
    come, to ``on_event``)."""
    if args.live:
        moved = await client.servers.live_migrate(args.server, args.host, wait=args.wait, on_event=on_event)
    elif args.host:
        print(
            "aiostack: --host is for --live (a cold migration's host is the scheduler's choice)",
            file=sys.stderr,
        )
        return 2
    else:
        moved = await client.servers.migrate(args.server, wait=args.wait)
    print(f"{moved.name}: {moved.status} (host {moved.host or '-'})")
    return 0
