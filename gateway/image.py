"""image routes (being built)."""

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """No image routes yet."""
