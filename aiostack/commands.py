"""`aiostack server ...` and `aiostack events`: drive and watch a running cloud through the gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiostack.client import Client
from aiostack.clouds import CloudAuth, CloudNotFound, find_cloud, gateway_of
from aiostack.interface_command import NIC_KINDS, run_interface_change
from aiostack.live_resources_command import add_set_resources_command, run_set_resources
from aiostack.migrate_command import add_migrate_command, run_migrate
from aiostack.output import UnknownColumn, add_output_options, print_listing, print_resource
from aiostack.resize_command import add_resize_command, run_resize
from aiostack.resource_commands import RESOURCES, add_resource_commands, run_resource_command
from aiostack.sdk import ApiError, Event, SerialConsole
from aiostack.shelve_command import HELP as SHELVE_ACTIONS
from aiostack.shelve_command import add_shelve_commands, run_shelve

ESCAPE = b"\x1d"
"""Ctrl-]: leaves an attached console, as in telnet and ``virsh console``."""


def _gateway_options(data_dir_default: Path) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url", help="gateway URL (default: $AIOSTACK_URL, $OS_AUTH_URL or <data-dir>/gateway.url)"
    )
    options.add_argument("--data-dir", type=Path, default=data_dir_default)
    options.add_argument(
        "--os-cloud",
        default=os.environ.get("OS_CLOUD"),
        help="a cloud of clouds.yaml (default: $OS_CLOUD); flags and OS_* variables override its values",
    )
    options.add_argument(
        "--username", default=os.environ.get("OS_USERNAME"), help="default: $OS_USERNAME, admin"
    )
    options.add_argument("--password", default=os.environ.get("OS_PASSWORD"))
    options.add_argument(
        "--os-cacert", default=os.environ.get("OS_CACERT"), help="CA (PEM) of an HTTPS gateway ($OS_CACERT)"
    )
    options.add_argument("--project", default=os.environ.get("OS_PROJECT_NAME"))
    return options


def add_client_commands(commands: Any, data_dir_default: Path) -> None:
    """`aiostack server ...` and `aiostack events ...`."""
    options = _gateway_options(data_dir_default)
    add_resource_commands(commands, options)
    events = commands.add_parser("events", parents=[options], help="print events, one line each")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument(
        "--kind", action="append", default=[], help="instance, domain, volume, port, image, node"
    )
    events.add_argument("--id", action="append", default=[], help="only this resource (repeatable)")
    events.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")
    events.add_argument("--since", help="the last sequence seen (default: all kept, or now with --follow)")
    server = commands.add_parser(
        "server",
        parents=[options],
        help="create, list, show, describe, stop, start, reboot, delete servers; read a console log;"
        " trigger a crash dump",
    )
    actions = server.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="boot a server")
    create.add_argument("name")
    root = create.add_mutually_exclusive_group()
    root.add_argument("--image", default="aiostack-tiny", help="image name or id")
    root.add_argument("--volume", help="boot from this bootable volume (name or id) instead of an image")
    create.add_argument("--flavor", default="m1.tiny", help="flavor name or id")
    create.add_argument("--network", help="network name or id (default: auto)")
    create.add_argument("--key-name", help="the key pair root logs in with")
    create.add_argument(
        "--security-group",
        action="append",
        dest="security_groups",
        help="a security group (name or id) its ports join (repeatable; default: default)",
    )
    create.add_argument(
        "--user-data", type=Path, help="a file the guest runs at first boot (script, cloud-config)"
    )
    create.add_argument("--description", help="what the server is for (up to 255 characters)")
    create.add_argument(
        "--wait",
        action="store_true",
        help="return when the server is ACTIVE (or ERROR), printing each state it goes through on stderr",
    )
    add_output_options(create)
    add_output_options(actions.add_parser("list", help="list servers"))
    show = actions.add_parser("show", help="show one server")
    show.add_argument("server", help="name or id")
    add_output_options(show)
    console = actions.add_parser("console", help="print a server's serial console log, or attach to it")
    console.add_argument("server", help="name or id")
    console.add_argument("--lines", type=int, help="only the last N lines")
    console.add_argument(
        "--attach", action="store_true", help="a live terminal on the serial console (Ctrl-] leaves)"
    )
    for action, preposition in (("add", "to"), ("remove", "from")):
        change = actions.add_parser(action, help=f"{action} a volume or a NIC {preposition} a server")
        change.add_argument("kind", choices=["volume", *NIC_KINDS])
        change.add_argument("server", help="name or id")
        change.add_argument("target", metavar="volume|port|network", help="name or id (a port: its id)")
        if action == "add":
            change.add_argument("--device", help="e.g. /dev/vdb (default: the next free one)")
            change.add_argument("--fixed-ip", help="with a network: the address the new port holds")
    for action in ("delete", "stop", "start", "reboot"):
        parser = actions.add_parser(action, help=f"{action} a server")
        parser.add_argument("server", help="name or id")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="return when the change is done, printing each state it goes through on stderr",
        )
        if action == "reboot":
            parser.add_argument("--hard", action="store_true", help="destroy and start again")
    describe = actions.add_parser("set", help="change a server's description")
    describe.add_argument("server", help="name or id")
    describe.add_argument("--description", required=True, help="what it is for (up to 255 characters)")
    dump = actions.add_parser("dump", help="trigger a crash dump in a server (an NMI to its guest)")
    dump.add_argument("server", help="name or id")
    add_resize_command(actions)
    add_set_resources_command(actions)
    add_migrate_command(actions)
    add_shelve_commands(actions)
    evacuate = actions.add_parser(
        "evacuate", help="build a server whose host is down again on another host (admins)"
    )
    evacuate.add_argument("server", help="name or id")
    evacuate.add_argument("--host", help="the host to build it on (default: the scheduler's choice)")
    evacuate.add_argument(
        "--wait",
        action="store_true",
        help="return when it is ACTIVE (or SHUTOFF) there, printing each state it goes through on stderr",
    )


def login_of(args: argparse.Namespace) -> CloudAuth:
    """Whom to log in as where: the command line and ``OS_*`` variables first, then the cloud of
    ``--os-cloud``, then the gateway `aiostack up` wrote in the data directory and the admin user.

    :raises CloudNotFound: ``--os-cloud`` names a cloud no clouds.yaml has.
    """
    cloud = (
        find_cloud(args.os_cloud, Path(args.data_dir)) if args.os_cloud else CloudAuth(None, None, None, None)
    )
    url = args.url or os.environ.get("AIOSTACK_URL")
    if not url and os.environ.get("OS_AUTH_URL"):
        url = gateway_of(os.environ["OS_AUTH_URL"])
    url = url or cloud.url
    url_file = Path(args.data_dir) / "gateway.url"
    if not url and url_file.exists():
        url = url_file.read_text().strip()
    if not url:
        raise SystemExit("aiostack: no gateway URL: pass --url, set AIOSTACK_URL, or run `aiostack up` first")
    return CloudAuth(
        url=url,
        username=args.username or cloud.username or "admin",
        password=args.password or cloud.password,
        project=args.project or cloud.project,
        cacert=args.os_cacert or cloud.cacert,
    )


def listing_printer(args: argparse.Namespace) -> Callable[[list[dict[str, Any]], list[str]], None]:
    """Prints rows under columns as the command's ``-f`` and ``-c`` ask."""

    def print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
        print_listing(rows, columns, format=args.format, only=args.column)

    return print_rows


def _networks(server: dict[str, Any]) -> str:
    return "; ".join(
        f"{net}={', '.join(a['addr'] for a in addrs)}" for net, addrs in server["addresses"].items()
    )


def event_line(event: Any) -> str:
    """One readable line: sequence, time, kind, type, id, and what changed."""
    state = event.state
    if event.kind == "instance":
        detail = f"status={state.get('status')} task={state.get('task_state')} host={state.get('host')}"
    elif event.kind == "domain":
        detail = f"{state.get('event')} detail={state.get('detail')} host={state.get('host')}"
    elif event.kind == "port":
        detail = "ips=" + ",".join(ip["ip_address"] for ip in state.get("fixed_ips", []))
    elif event.kind == "node":
        detail = f"alive={state.get('alive')}"
    else:
        detail = f"status={state.get('status')}"
    when = datetime.fromtimestamp(event.ts, UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{event.seq:>8} {when} {event.kind:<8} {event.type:<24} {event.id} {detail}"


class Progress:
    """Prints a server's state on stderr each time its status or task changes (``BUILD scheduling``,
    ``BUILD spawning``, ``ACTIVE``), as its events arrive: stdout keeps only the command's output."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, event: Event) -> None:
        if event.kind != "instance":
            return
        shown = (event.state.get("status"), event.state.get("task_state"))
        line = " ".join(str(part) for part in shown if part)
        if line and line != self.last:
            self.last = line
            print(line, file=sys.stderr, flush=True)


async def run_client_command(args: argparse.Namespace) -> int:
    try:
        login = login_of(args)
    except CloudNotFound as exc:
        print(f"aiostack: {exc}", file=sys.stderr)
        return 2
    if not login.password:
        print("aiostack: a password is needed: --password, $OS_PASSWORD or --os-cloud", file=sys.stderr)
        return 2
    assert login.url is not None and login.username is not None
    async with Client(login.url, ca_file=login.cacert) as client:
        try:
            await client.login(login.username, login.password, login.project)
            if args.command == "events":
                since = args.since or ("now" if args.follow else "0")
                async for event in client.events(
                    tuple(args.kind),
                    ids=tuple(args.id),
                    types=tuple(args.type),
                    since=since,
                    until_caught_up=not args.follow,
                ):
                    print(event_line(event), flush=True)
                return 0
            if args.command in RESOURCES:
                return await run_resource_command(client, args, listing_printer(args))
            if args.action == "create":
                server = await client.create_server(
                    args.name,
                    image=None if args.volume else args.image,
                    volume=args.volume,
                    flavor=args.flavor,
                    network=args.network,
                    key_name=args.key_name,
                    user_data=args.user_data.read_bytes() if args.user_data else None,
                    security_groups=args.security_groups,
                    description=args.description,
                    wait=args.wait,
                    on_event=Progress(),
                )
                print_resource(server, format=args.format, only=args.column)
                return 1 if server.get("status") == "ERROR" else 0
            if args.action == "list":
                rows = [
                    {"ID": s["id"], "Name": s["name"], "Status": s["status"], "Networks": _networks(s)}
                    for s in await client.servers()
                ]
                listing_printer(args)(rows, ["ID", "Name", "Status", "Networks"])
                return 0
            if args.action == "show":
                print_resource(await client.server(args.server), format=args.format, only=args.column)
                return 0
            if args.action in ("add", "remove") and args.kind in NIC_KINDS:
                return await run_interface_change(client, args)
            if args.action == "add":
                await client.servers.attach_volume(args.server, args.target, args.device)
                return 0
            if args.action == "remove":
                await client.servers.detach_volume(args.server, args.target)
                return 0
            if args.action == "resize":
                return await run_resize(client, args)
            if args.action == "set-resources":
                return await run_set_resources(client, args)
            if args.action == "set":
                described = await client.servers.set_description(args.server, args.description)
                print(f"{described.name}: {described.description}")
                return 0
            if args.action == "dump":
                await client.servers.trigger_crash_dump(args.server)
                return 0
            if args.action == "migrate":
                return await run_migrate(client, args, Progress())
            if args.action in SHELVE_ACTIONS:
                return await run_shelve(client, args, Progress())
            if args.action == "evacuate":
                moved = await client.servers.evacuate(
                    args.server, args.host, wait=args.wait, on_event=Progress()
                )
                print(f"{moved.name}: {moved.status} (host {moved.host or '-'})")
                return 0
            if args.action == "console" and args.attach:
                return await attach_console(client, args.server)
            if args.action == "console":
                print(await client.console_output(args.server, args.lines), end="")
                return 0
            action = "reboot-hard" if args.action == "reboot" and args.hard else args.action
            await client.server_action(args.server, action, wait=args.wait, on_event=Progress())
            return 0
        except ApiError as exc:
            print(f"aiostack: {exc}", file=sys.stderr)
            return 1
        except UnknownColumn as exc:
            print(f"aiostack: {exc}", file=sys.stderr)
            return 2


async def attach_console(client: Client, server: str) -> int:
    """Join the terminal to the server's serial console until Ctrl-] (or the console or stdin ends);
    a terminal is raw meanwhile (keys go to the guest as typed) and restored after."""
    async with client.servers.serial_console(server) as console:
        with _raw_terminal(sys.stdin):  # raw before the word goes out: keys typed after it go as typed
            leave = f"Connected to the serial console of {server}; Ctrl-] leaves."
            print(leave, end="\r\n", file=sys.stderr, flush=True)
            await _relay_terminal(console, sys.stdin.fileno(), sys.stdout.buffer)
    print("\r\nLeft the console.", file=sys.stderr, flush=True)
    return 0


@contextlib.contextmanager
def _raw_terminal(stream: IO[str]) -> Iterator[None]:
    """The terminal in raw mode for the block (nothing when ``stream`` is no terminal)."""
    if not stream.isatty():
        yield
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _relay_terminal(console: SerialConsole, stdin_fd: int, stdout: IO[bytes]) -> None:
    """Keys to the console, its output to ``stdout``, until either ends."""
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_reader(stdin_fd, lambda: keys.put_nowait(_read_keys(stdin_fd)))
    tasks = [
        asyncio.create_task(_print_console(console, stdout)),
        asyncio.create_task(_send_keys(console, keys)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        loop.remove_reader(stdin_fd)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _read_keys(fd: int) -> bytes:
    """What stdin has now; ``b""`` at its end (or when its terminal is gone)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


async def _print_console(console: SerialConsole, stdout: IO[bytes]) -> None:
    while data := await console.read():
        stdout.write(data)
        stdout.flush()


async def _send_keys(console: SerialConsole, keys: asyncio.Queue[bytes]) -> None:
    """Send keys until stdin ends or Ctrl-] (what comes before it in the same read is sent)."""
    while data := await keys.get():
        before, escape, _ = data.partition(ESCAPE)
        if before:
            await console.write(before)
        if escape:
            return
