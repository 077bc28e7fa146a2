"""The data directory is its owner's alone: folders 0700, files 0600.

It holds password hashes (identity.sqlite), token keys, bus credentials, volume and image
bytes, guests' consoles and the logs. Every aiostack process runs with umask 077, so what it
makes is owner-only; ``make_private`` checks the whole tree at start and fixes what another
tool (or an older aiostack) left readable, and says what it fixed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner may read (0600 from its creation), replacing it atomically."""
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    partial.replace(path)


def restrict_new_files() -> None:
    """What this process (and every process it starts) makes is readable by its owner only."""
    os.umask(UMASK)


def make_private(data_dir: Path) -> list[Path]:
    """Make ``data_dir`` (made if missing) and everything in it owner-only; the paths that were not.

    Symbolic links are neither followed nor changed; sockets and other special files keep their
    modes (their folders are 0700).
    """
    data_dir.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    fixed = []
    for folder, folders, files in os.walk(data_dir):
        for path in [Path(folder)] + [Path(folder, name) for name in files + folders]:
            mode = path.lstat()
            if stat.S_ISLNK(mode.st_mode) or not (stat.S_ISDIR(mode.st_mode) or stat.S_ISREG(mode.st_mode)):
                continue
            wanted = FOLDER_MODE if stat.S_ISDIR(mode.st_mode) else FILE_MODE
            if stat.S_IMODE(mode.st_mode) & ~wanted:
                path.chmod(stat.S_IMODE(mode.st_mode) & wanted)
                fixed.append(path)
    return sorted(set(fixed))
