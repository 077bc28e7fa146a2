"""aiostack: the async SDK (``aiostack.Client``) and the `aiostack` command."""

from typing import Any


def __getattr__(name: str) -> Any:
    """``aiostack.Client`` without importing aiohttp into every process that imports aiostack
    (actor processes refuse to load it: aiostack/child.py)."""
    if name == "Client":
        from aiostack.client import Client

        return Client
    raise AttributeError(f"module 'aiostack' has no attribute {name!r}")
