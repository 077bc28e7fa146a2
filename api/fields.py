"""Field types shared by the API modules: the bounds dispatch checks before a handler runs."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

MAX_AMOUNT = 2**31 - 1

Name = Annotated[str, Meta(min_length=1, max_length=255)]
"""A non-empty name of at most 255 characters."""
Id = Annotated[str, Meta(min_length=1, max_length=255)]
"""The id of a resource (its owner says what it looks like; a lookup of a wrong one is NotFound)."""
HostName = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^ .*>\t\n]+$")]
"""A compute host: one token of a subject."""
Amount = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
"""A resource total or usage: 0 to 2**31 - 1."""
PositiveAmount = Annotated[int, Meta(ge=1, le=MAX_AMOUNT)]
