"""The services the gateway calls, through ``gateway.http.client``: its NATS permissions follow
from ``FACETS`` (deploy/credentials.py); tests/test_architecture.py checks it names every facet
the gateway's code makes a client of, and nothing else."""

from __future__ import annotations

from api.conductor import Compute
from api.identity import ApplicationCredentials, IdentityAdmin, Tokens, TokenValidation
from api.image import Images
from api.net import Net
from api.node import NodeConsole
from api.volume import Volumes

FACETS = (
    TokenValidation,
    Tokens,
    IdentityAdmin,
    ApplicationCredentials,
    Compute,
    Images,
    Net,
    Volumes,
    NodeConsole,
)
