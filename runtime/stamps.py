"""The ids and timestamps new records get."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""The stamps' form (``datetime.strptime`` reads one back)."""


def new_uuid() -> str:
    return str(uuid.uuid4())


def utcnow() -> str:
    """ISO 8601 UTC timestamp with a ``Z``, as OpenStack APIs show them."""
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """An aware time as the stamps ``utcnow`` writes (UTC, seconds, ``Z``)."""
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)
