"""`aiostack up`'s settings file: written at the first start with every flag, read after, flags over it."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from deploy.cli import up
from deploy.config_file import CONFIG_NAME, ConfigError, apply_config, save_first_config


def up_parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(prog="aiostack").add_subparsers(dest="command")
    up(commands)
    parser: argparse.ArgumentParser = commands.choices["up"]
    return parser


def started(data_dir: Path, *flags: str) -> argparse.Namespace:
    """The settings `up` would run with, given ``flags`` (the file applied, or written)."""
    parser = up_parser()
    argv = ["--data-dir", str(data_dir), *flags]
    args = parser.parse_args(argv)
    save_first_config(apply_config(parser, args, argv), parser, args)
    return args


def test_the_first_start_writes_every_setting_and_the_next_start_reads_them(tmp_path: Path) -> None:
    first = started(tmp_path, "--nodes", "3", "--remote-node", "edge-1", "--log-format", "json")
    written = tmp_path / CONFIG_NAME
    assert written.stat().st_mode & 0o777 == 0o600
    text = written.read_text()
    settings = tomllib.loads(text)
    assert (settings["nodes"], settings["remote-node"], settings["log-format"]) == (3, ["edge-1"], "json")
    assert settings["listen"] == "127.0.0.1:8774" and "data-dir" not in settings
    assert "# how many compute nodes to run\nnodes = 3\n" in text
    assert "# nats: not set" in text
    again = started(tmp_path)
    assert vars(again) == vars(first)


def test_a_flag_on_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text('nodes = 4\nlibvirt = "qemu:///system"\ntask_timeout = 90\n')
    args = started(tmp_path, "--nodes=2")
    assert (args.nodes, args.libvirt, args.task_timeout) == (2, "qemu:///system", 90.0)


def test_a_named_config_file_is_read_and_must_exist(tmp_path: Path) -> None:
    named = tmp_path / "lab.toml"
    named.write_text('listen = "127.0.0.1:9000"\n')
    assert started(tmp_path / "data", "--config", str(named)).listen == "127.0.0.1:9000"
    with pytest.raises(ConfigError, match=r"missing\.toml: no such file"):
        started(tmp_path / "data", "--config", str(tmp_path / "missing.toml"))
    assert not (tmp_path / "data" / CONFIG_NAME).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("nodez = 2\n", "unknown setting 'nodez'; the settings are: .*nodes"),
        ('nodes = "many"\n', "nodes takes a whole number, not 'many'"),
        ("nodes = 2.5\n", "nodes takes a whole number, not 2.5"),
        ('virt-type = "xen"\n', "virt-type is one of auto, kvm, qemu, not 'xen'"),
        ("nodes = [1, 2]\n", r"nodes takes a value, not \[1, 2\]"),
        ("nodes = \n", "not TOML"),
    ],
)
def test_a_bad_file_stops_up_with_a_message_naming_the_file_and_the_key(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / CONFIG_NAME).write_text(content)
    with pytest.raises(ConfigError, match=f"{CONFIG_NAME}: {message}"):
        started(tmp_path)
