"""Configuration shared by every aiostack process: a frozen dataclass passed in, never a global."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bus.bus import DEFAULT_PREFIX

DATABASE_VARIABLE = "AIOSTACK_DATABASE"
"""The environment variable that may name the PostgreSQL DSN (``Config.database``)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(os.environ.get("AIOSTACK_DATA_DIR") or os.path.join(base, "aiostack"))


@dataclass(frozen=True, slots=True)
class Config:
    """Where a process finds the bus and keeps its files."""

    data_dir: Path
    nats_url: str
    prefix: str = DEFAULT_PREFIX
    database: str | None = field(default=None, repr=False)
    """A PostgreSQL DSN the stateful actors share (a cluster); None: a sqlite file each. Not in the
    repr: it holds the database password."""

    def store_path(self, name: str) -> Path:
        """The sqlite file of one actor (``<data_dir>/<name>.sqlite``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir / f"{name}.sqlite"
