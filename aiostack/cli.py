"""The `aiostack` command: the cloud's resources through its gateway, and the server's own commands.

`server`, `image`, `network`, `volume`, `keypair`, `flavor` and `events` are clients of the REST API
(``aiostack.commands``); `completion bash|zsh` prints a shell completion script made from this
parser (every command, subcommand and option: ``shtab``). `up`, `run`, `audit`, `ping`, `join`,
`cluster` and `token` belong to the server and come from the ``aiostack.commands`` entry points it installs
(``deploy/cli.py``): this module imports nothing of it, so the SDK and CLI work without the
server installed, and say what to install when one of its commands is asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import shtab

from aiostack.commands import add_client_commands, run_client_command

Runner = Callable[[argparse.Namespace], int]
COMMAND_GROUP = "aiostack.commands"
COMPLETION_SHELLS = ("bash", "zsh")


def default_data_dir() -> Path:
    """Where `aiostack up` keeps everything: ``$AIOSTACK_DATA_DIR``, else ``$XDG_DATA_HOME/aiostack``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(os.environ.get("AIOSTACK_DATA_DIR") or os.path.join(base, "aiostack"))


def _unavailable(name: str, reason: Exception) -> Callable[[Any], Runner]:
    """A stand-in for a server command whose code cannot be loaded here."""

    def add(commands: Any) -> Runner:
        commands.add_parser(name, help=f"(needs the aiostack server: {reason})", add_help=False)

        def refuse(_args: argparse.Namespace) -> int:
            print(
                f"aiostack {name}: the server part of aiostack is not installed here ({reason}); "
                "install it with: pip install 'aiostack[server,node]'",
                file=sys.stderr,
            )
            return 2

        return refuse

    return add


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    parser = argparse.ArgumentParser(prog="aiostack", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, Runner] = {}
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            add = entry.load()
        except ImportError as exc:
            add = _unavailable(entry.name, exc)
        runners[entry.name] = add(commands)
    add_client_commands(commands, default_data_dir())
    completion = commands.add_parser(
        "completion",
        help='print a shell completion script: eval "$(aiostack completion bash)" (in ~/.bashrc)',
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    return parser, runners


def main(argv: list[str] | None = None) -> None:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "WARNING")).upper(), logging.INFO),
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    if args.command in runners:
        raise SystemExit(runners[args.command](args))
    if args.command == "completion":
        print(shtab.complete(parser, shell=args.shell))
        return
    try:
        raise SystemExit(asyncio.run(run_client_command(args)))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
