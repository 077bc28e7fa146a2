"""The cluster's API: the hosts of a cloud that spans machines, how they join, and the bus users
every controller's nats-server lists.

A host joins by invitation: the operator's ``invite`` makes a one-time bus user for it (allowed
to publish only to its own ``cluster.join.<host>``) and returns that user's password, which the
join token carries; ``ClusterJoin.join`` spends it (once, before it expires) and returns the
host's own bus users and, to a controller, the secrets every controller shares. Each host's
supervisor ``report``s its processes every few seconds (its liveness); each controller's
supervisor reads ``authorization`` and reloads its nats-server when it changes, so a removed
host's users stop working within seconds.

Version history: 1 - initial.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from msgspec import Meta

from api.fields import HostName
from bus.api import ServiceAPI, call

Role = Literal["controller", "compute"]
HostState = Literal["invited", "joined", "removed"]
Seconds = Annotated[float, Meta(gt=0, le=7 * 24 * 3600)]
Address = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[0-9A-Za-z.:-]+$")]
Secret = Annotated[str, Meta(min_length=16, max_length=255)]
INVITATION_TTL = 900.0
"""How long a join token works unless ``invite`` says otherwise: 15 minutes."""
REPORT_INTERVAL = 2.0
"""Seconds between a host supervisor's reports."""
ALIVE_WITHIN = 10.0
"""A host is alive while its last report is younger than this."""
NATS_PORT = 4222
"""Where each controller's nats-server serves clients (on its address)."""
ROUTE_PORT = 6222
"""Where each controller's nats-server takes routes from the others."""


def nats_url(address: str) -> str:
    """The client URL of the controller at ``address``."""
    return f"nats://{address}:{NATS_PORT}"


def route_url(address: str) -> str:
    """The route URL of the controller at ``address`` (what the other controllers dial)."""
    return f"nats-route://{address}:{ROUTE_PORT}"


class ClusterHost(TypedDict):
    name: str
    role: Role
    state: HostState
    address: str | None
    created_at: str
    joined_at: str | None
    last_seen: float | None
    alive: bool
    processes: dict[str, str]
    """Each process its supervisor runs, with its state (``running``, ``restarting``)."""


class Invitation(TypedDict):
    """What a join token carries besides the NATS servers and the CA: the one-time bus user."""

    name: str
    role: Role
    user: str
    password: str
    expires_at: float
    nats_urls: list[str]


class BusUser(TypedDict):
    """One user of nats-server's authorization block, its password as a bcrypt hash."""

    user: str
    password: str
    permissions: dict[str, Any]


class ControllerSecrets(TypedDict):
    """What every controller shares: the CA (its key signs each controller's nats-server
    certificate), identity's token keys, the database and the operator's bus user."""

    ca_certificate: str
    ca_key: str
    token_keys: dict[str, str]
    database: str
    admin_password: str
    routes: list[str]


class JoinGrant(TypedDict):
    name: str
    role: Role
    prefix: str
    nats_urls: list[str]
    users: dict[str, str]
    """The host's bus users and their passwords (sent once; the cluster keeps hashes)."""
    controller: ControllerSecrets | None
    authorization: list[BusUser]
    """Every bus user, for a controller's nats-server to start with (empty for a compute host)."""


class Reported(TypedDict):
    name: str
    last_seen: float


class Cluster(ServiceAPI, address="cluster"):
    """The operator's (``aiostack cluster``) and the controllers' supervisors'."""

    @call(idempotent=True)
    async def invite(self, *, name: HostName, role: Role, ttl: Seconds = INVITATION_TTL) -> Invitation:
        """A one-time bus user for host ``name`` to join as ``role``, valid for ``ttl`` seconds;
        inviting a pending or removed host again replaces its invitation (the same invite asked
        again, by its request id, gets the same one).

        :raises Conflict: a host of that name has joined (remove it first), or would take another
            host's bus user, or no controller has registered yet.
        """
        ...

    @call(idempotent=True)
    async def list_hosts(self) -> list[ClusterHost]:
        """Every host invited, joined or removed, by name."""
        ...

    @call(idempotent=True)
    async def remove(self, *, name: HostName) -> ClusterHost:
        """Revoke a host's bus users (and any invitation of it); it is shown as removed.

        :raises NotFound: no host of that name.
        """
        ...

    @call(idempotent=True)
    async def register(self, *, name: HostName, address: Address, users: list[BusUser]) -> ClusterHost:
        """The first controller, as it starts: itself and its bus users (hashed), replacing
        what it registered before."""
        ...

    @call(idempotent=True)
    async def authorization(self) -> list[BusUser]:
        """Every bus user of every joined host, and the pending invitations' join users."""
        ...


class ClusterJoin(ServiceAPI, address="cluster.join.{host}", caller="host"):
    """What a joining host calls, as its one-time user (allowed this subject only)."""

    @call(idempotent=True)
    async def join(self, *, secret: Secret, address: Address) -> JoinGrant:
        """Spend the invitation: the host's bus users (and a controller's shared secrets). The
        one-time user is dropped from every nats-server at once, so the token works once; the
        same join asked again before that (a lost reply) gets the same grant.

        :raises Forbidden: no invitation, a wrong secret, or expired.
        """
        ...


class ClusterHosts(ServiceAPI, address="cluster.host.{host}", caller="host"):
    """What each joined host's supervisor calls, as its own host."""

    @call(idempotent=True)
    async def report(self, *, processes: dict[str, str]) -> Reported:
        """The host is alive and runs these processes.

        :raises Forbidden: the host is not a joined member (never joined, or removed).
        """
        ...
