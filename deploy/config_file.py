"""`aiostack up`'s settings in a TOML file: every flag, written on first start, flags over it.

``<data-dir>/aiostack.toml`` is written at a data directory's first start with every setting
`up` ran with, each under its flag's help (unset ones as a comment saying so), mode 0600; later
starts read it. ``--config FILE`` names another file, which must exist. A flag given on the
command line wins over the file; the file wins over the built-in defaults. Keys are the flags'
names without their dashes (``nodes``, ``libvirt``, ``log-level``; ``_`` for ``-`` works too).
An unknown key, or a value of the wrong type or not among a flag's choices, stops `up` with a
message naming the file, the key and what it takes. ``data-dir`` is not a setting of the file:
the file is found through it.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from deploy.privacy import write_private

CONFIG_NAME = "aiostack.toml"
NOT_SETTINGS = frozenset({"help", "data_dir", "config"})


class ConfigError(ValueError):
    """The file cannot be used: its message names the file and what is wrong."""


def settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags a file may set, by their key (the long flag without dashes)."""
    known = {}
    for action in parser._actions:
        if action.dest in NOT_SETTINGS or not action.option_strings:
            continue
        long = max(action.option_strings, key=len)
        known[long.lstrip("-")] = action
    return known


def given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the flags ``argv`` names (``--flag value`` or ``--flag=value``)."""
    named = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
    return {action.dest for action in parser._actions if named & set(action.option_strings)}


def _value(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    """A file's value as the flag would have parsed it."""
    many = isinstance(action, argparse._AppendAction)
    values = value if many and isinstance(value, list) else [value]
    parsed = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            wanted = "a list of values" if many else "a value"
            raise ConfigError(f"{path}: {key} takes {wanted}, not {item!r}")
        convert = action.type if callable(action.type) else str
        if convert is int and not isinstance(item, int):
            raise ConfigError(f"{path}: {key} takes a whole number, not {item!r}")
        try:
            converted = convert(item if convert is not str else str(item))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {key}: {item!r} is not valid ({exc})") from None
        if action.choices is not None and converted not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{path}: {key} is one of {choices}, not {item!r}")
        parsed.append(converted)
    return parsed if many else parsed[0]


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings by destination.

    :raises ConfigError: not TOML, an unknown key, a bad value.
    """
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    known = settings(parser)
    found = {}
    for key, value in table.items():
        action = known.get(key.replace("_", "-"))
        if action is None:
            names = ", ".join(sorted(known))
            raise ConfigError(f"{path}: unknown setting {key!r}; the settings are: {names}")
        found[action.dest] = _value(path, key, action, value)
    return found


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every setting ``args`` holds, each under its flag's help, to a new file (0600)."""
    lines = [f"# aiostack up's settings (written at the first start of {args.data_dir}).",
             "# A flag given on the command line wins over what is here.", ""]  # fmt: skip
    for key, action in sorted(settings(parser).items()):
        value = getattr(args, action.dest)
        if action.help:
            lines.append(f"# {action.help}")
        if value is None or value == []:
            lines.append(f"# {key}: not set")
        else:
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    write_private(path, "\n".join(lines))


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> Path:
    """Fill ``args`` from the config file where ``argv`` gave no flag. The file's path (which
    ``save_first_config`` writes on a first start).

    :raises ConfigError: ``--config`` names no file, or the file cannot be used.
    """
    path: Path = args.config or args.data_dir / CONFIG_NAME
    if not path.exists():
        if args.config is not None:
            raise ConfigError(f"{path}: no such file")
        return path
    given = given_on_command_line(parser, argv)
    for dest, value in read_config(path, parser).items():
        if dest not in given:
            setattr(args, dest, value)
    return path


def save_first_config(path: Path, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Write the settings `up` starts with, where no file is yet (its data directory's first start)."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_config(path, parser, args)
