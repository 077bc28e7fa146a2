"""aiostack: the async SDK and the `aiostack` command."""
