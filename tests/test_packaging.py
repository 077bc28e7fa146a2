"""`pip install aiostack` gives the SDK and the CLI, without a compiler and without the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = ("nats", "msgpack", "msgspec", "asyncpg", "libvirt", "cryptography", "uvloop")


def run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, env=env, timeout=600
    )


def test_the_sdk_and_the_cli_install_alone_without_a_compiler(tmp_path: Path) -> None:
    source = tmp_path / "source"  # setuptools builds inside the source tree: not in the checkout
    tracked = run("git", "-C", ROOT, "ls-files").stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
        tmp_path / "dist", source,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("aiostack-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    dashboard = {f"gateway/dashboard/static/{name}" for name in ("index.html", "app.js", "style.css")}
    assert dashboard <= packaged, "the wheel lacks the dashboard's assets"
    assert run(sys.executable, "-m", "venv", tmp_path / "venv").returncode == 0
    python = tmp_path / "venv" / "bin" / "python"
    no_compiler = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false"}
    installed = run(python, "-m", "pip", "install", "-q", "--only-binary", ":all:", wheel, env=no_compiler)
    assert installed.returncode == 0, installed.stderr

    present = f"import importlib.util; print([m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)])"
    absent = run(python, "-c", present)
    assert absent.stdout.strip() == "[]", "the SDK install pulled in server packages: " + absent.stdout

    sdk = run(python, "-c", "from aiostack import Client, sdk; print(Client.__doc__, sdk.Server)")
    assert sdk.returncode == 0 and sdk.stdout.strip(), sdk.stderr

    cli = tmp_path / "venv" / "bin" / "aiostack"
    listed = run(cli, "server", "--help")
    assert listed.returncode == 0 and "create" in listed.stdout, listed.stderr
    completion = run(cli, "completion", "bash")
    assert completion.returncode == 0, completion.stderr
    assert "_shtab_aiostack_server_subparsers" in completion.stdout  # shtab came with the CLI
    refused = run(cli, "up")
    assert refused.returncode == 2
    assert "pip install 'aiostack[server,node]'" in refused.stderr
