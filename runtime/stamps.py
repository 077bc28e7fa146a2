"""The ids and timestamps new records get."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_uuid() -> str:
    return str(uuid.uuid4())


def utcnow() -> str:
    """ISO 8601 UTC timestamp with a ``Z``, as OpenStack APIs show them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
