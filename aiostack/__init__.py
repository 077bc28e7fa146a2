"""aiostack: the async SDK (``aiostack.Client``) and the `aiostack` command.

The SDK and the CLI stand alone: nothing here imports the server (bus, actors, gateway, ...),
so ``pip install aiostack`` gives them without the server's dependencies.
"""

from aiostack.client import Client, password_auth
from aiostack.sdk import (
    ApiError,
    BadRequest,
    BuildFailed,
    Conflict,
    Event,
    EventsExpired,
    Flavor,
    Forbidden,
    Image,
    InterfaceAttachment,
    Keypair,
    Network,
    NotFound,
    ResourceFailed,
    Server,
    Unauthorized,
    Volume,
    VolumeAttachment,
)

__all__ = [
    "ApiError",
    "BadRequest",
    "BuildFailed",
    "Client",
    "Conflict",
    "Event",
    "EventsExpired",
    "Flavor",
    "Forbidden",
    "Image",
    "InterfaceAttachment",
    "Keypair",
    "Network",
    "NotFound",
    "ResourceFailed",
    "Server",
    "Unauthorized",
    "Volume",
    "VolumeAttachment",
    "password_auth",
]
