"""`aiostack server ...`: drive a running cloud from the shell through the gateway.

The HTTP client is imported only when a command runs, so `aiostack run` processes never load aiohttp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_server_commands(commands: Any, data_dir_default: Path) -> None:
    server = commands.add_parser("server", help="create, list, show, stop, start, reboot, delete servers")
    server.add_argument(
        "--url", help="gateway URL (default: $AIOSTACK_URL, $OS_AUTH_URL or <data-dir>/gateway.url)"
    )
    server.add_argument("--data-dir", type=Path, default=data_dir_default)
    server.add_argument("--username", default=os.environ.get("OS_USERNAME", "admin"))
    server.add_argument("--password", default=os.environ.get("OS_PASSWORD"))
    server.add_argument("--project", default=os.environ.get("OS_PROJECT_NAME"))
    actions = server.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="boot a server")
    create.add_argument("name")
    create.add_argument("--image", default="aiostack-tiny", help="image name or id")
    create.add_argument("--flavor", default="m1.tiny", help="flavor name or id")
    create.add_argument("--network", help="network name or id (default: auto)")
    create.add_argument("--wait", action="store_true", help="return when the server is ACTIVE (or ERROR)")
    actions.add_parser("list", help="list servers")
    show = actions.add_parser("show", help="show one server")
    show.add_argument("server", help="name or id")
    for action in ("delete", "stop", "start", "reboot"):
        parser = actions.add_parser(action, help=f"{action} a server")
        parser.add_argument("server", help="name or id")
        parser.add_argument("--wait", action="store_true", help="return when the change is done")
        if action == "reboot":
            parser.add_argument("--hard", action="store_true", help="destroy and start again")


def gateway_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    if os.environ.get("AIOSTACK_URL"):
        return os.environ["AIOSTACK_URL"]
    if os.environ.get("OS_AUTH_URL"):
        return os.environ["OS_AUTH_URL"].split("/identity")[0]
    url_file = args.data_dir / "gateway.url"
    if url_file.exists():
        return url_file.read_text().strip()
    raise SystemExit("aiostack: no gateway URL: pass --url, set AIOSTACK_URL, or run `aiostack up` first")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(row.get(c, ""))) for row in rows]) for c in columns}
    line = "+" + "+".join("-" * (widths[c] + 2) for c in columns) + "+"
    print(line)
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print(line)
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns) + " |")
    print(line)


def _networks(server: dict[str, Any]) -> str:
    return "; ".join(
        f"{net}={', '.join(a['addr'] for a in addrs)}" for net, addrs in server["addresses"].items()
    )


async def run_server_command(args: argparse.Namespace) -> int:
    from aiostack.client import ApiError, Client

    if not args.password:
        print("aiostack: a password is needed: --password or $OS_PASSWORD", file=sys.stderr)
        return 2
    async with Client(gateway_url(args)) as client:
        try:
            await client.login(args.username, args.password, args.project)
            if args.action == "create":
                server = await client.create_server(
                    args.name, image=args.image, flavor=args.flavor, network=args.network, wait=args.wait
                )
                print(json.dumps(server, indent=2, sort_keys=True))
                return 1 if server.get("status") == "ERROR" else 0
            if args.action == "list":
                rows = [
                    {"ID": s["id"], "Name": s["name"], "Status": s["status"], "Networks": _networks(s)}
                    for s in await client.servers()
                ]
                print_table(rows, ["ID", "Name", "Status", "Networks"])
                return 0
            if args.action == "show":
                print(json.dumps(await client.server(args.server), indent=2, sort_keys=True))
                return 0
            action = "reboot-hard" if args.action == "reboot" and args.hard else args.action
            await client.server_action(args.server, action, wait=args.wait)
            return 0
        except ApiError as exc:
            print(f"aiostack: {exc}", file=sys.stderr)
            return 1
