"""`aiostack completion bash|zsh`: a completion script made from the CLI's parser, loaded in real bash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASH = shutil.which("bash") or "/bin/bash"
DRIVE = """
source "$1"
shift
function=$(complete -p aiostack | sed -E 's/.* -F ([^ ]+) .*/\\1/')
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
previous=""
(( COMP_CWORD > 0 )) && previous="${COMP_WORDS[COMP_CWORD - 1]}"
"$function" aiostack "${COMP_WORDS[COMP_CWORD]}" "$previous"
printf '%s\\n' "${COMPREPLY[@]}"
"""
"""Loads the script, then calls the function it registered for ``aiostack`` as bash's
programmable completion does when TAB is pressed after the words given, and prints its
candidates one a line."""


def completion_script(shell: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aiostack.cli", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("completion") / "aiostack.bash"
    script.write_text(completion_script("bash"))
    return script


def tab(script: Path, *words: str) -> list[str]:
    """What bash offers when TAB is pressed at the end of ``aiostack WORDS``."""
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", DRIVE, "drive", str(script), "aiostack", *words],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_subcommands_and_options(bash_script: Path) -> None:
    assert tab(bash_script, "ser") == ["server"]
    assert tab(bash_script, "server", "cr") == ["create"]
    assert set(tab(bash_script, "server", "")) >= {"create", "list", "show", "stop", "start", "delete"}
    assert tab(bash_script, "server", "create", "--wa") == ["--wait"]
    assert tab(bash_script, "server", "list", "--for") == ["--format"]
    assert tab(bash_script, "image", "up") == ["upload"]
    assert tab(bash_script, "completion", "") == ["bash", "zsh"]
    assert tab(bash_script, "nothing-like-it") == []


def test_the_zsh_script_is_a_compdef_of_the_same_commands() -> None:
    script = completion_script("zsh")
    assert script.startswith("#compdef aiostack")
    assert "server" in script and "create" in script and "--wait" in script


def test_an_unknown_shell_is_refused_naming_the_known_ones() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiostack.cli", "completion", "fish"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "invalid choice: 'fish' (choose from 'bash', 'zsh')" in done.stderr
