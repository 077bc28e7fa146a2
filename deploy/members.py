"""The hosts of a cloud that spans machines, as each runs: join tokens, what a joined host keeps
in its data directory, a controller's clustered nats-server, and the loop every host's
supervisor runs (liveness reports; on controllers, the bus users and the event stream's
replicas kept up with the cluster).

`aiostack up --cluster ADDRESS` starts a cluster on its first controller (``deploy.up``);
`aiostack cluster add NAME --role controller|compute` prints a join token; `aiostack join
TOKEN` on the new host (``deploy.join``) does the rest; `aiostack cluster list|remove`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from actors.cluster import hash_password
from api.cluster import (
    NATS_PORT,
    REPORT_INTERVAL,
    ROUTE_PORT,
    BusUser,
    Cluster,
    ClusterHosts,
    Role,
    nats_url,
    route_url,
)
from bus import AiostackError, Bus, EmbeddedNatsServer, NoResponders
from bus.server import cluster_config
from deploy.privacy import write_private
from deploy.tls import CertificateAuthority

log = logging.getLogger(__name__)

TOKEN_PREFIX = "aiostack-join-1."
MEMBERSHIP_FILE = "cluster.json"
DATABASE_FILE = "database"
AUTHORIZATION_CACHE = "authorization.json"
EVENT_REPLICAS = 3


class TokenError(ValueError):
    """A join token that cannot be read, or has expired."""


JOIN_TOKEN_VARIABLE = "AIOSTACK_JOIN_TOKEN"
"""Where `aiostack join` takes its token from when it is given no argument."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What `aiostack cluster add` prints: where the cluster is, whom to trust, the one-time user."""

    name: str
    role: Role
    prefix: str
    nats_urls: list[str]
    ca: str
    user: str
    password: str
    expires_at: float

    def encode(self) -> str:
        data = json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        """:raises TokenError: not a join token, or expired."""
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise TokenError(f"not an aiostack join token (it starts with {TOKEN_PREFIX!r})")
        body = text.removeprefix(TOKEN_PREFIX)
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            token = cls(**data)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise TokenError(f"the join token is damaged ({type(exc).__name__}); copy it again") from None
        if token.expires_at <= time.time():
            raise TokenError(f"the join token of {token.name} has expired; `aiostack cluster add` it again")
        return token


@dataclass(slots=True)
class Membership:
    """What a joined host keeps in ``<data>/cluster.json``: who it is and where the cluster is."""

    name: str
    role: Role
    address: str
    prefix: str
    nats_urls: list[str]
    routes: list[str]

    def save(self, data_dir: Path) -> None:
        write_private(data_dir / MEMBERSHIP_FILE, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, data_dir: Path) -> Membership | None:
        path = data_dir / MEMBERSHIP_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None

    @property
    def own_url(self) -> str:
        return nats_url(self.address)

    @property
    def own_route(self) -> str:
        return route_url(self.address)

    def client_urls(self) -> str:
        """The NATS servers this host's processes know, its own first on a controller."""
        urls = [self.own_url] if self.role == "controller" else []
        return ",".join(dict.fromkeys([*urls, *self.nats_urls]))


def address_towards(url: str) -> str:
    """This machine's address on the way to ``url``'s host (a UDP socket's, which sends nothing)."""
    target = urlsplit(url.split(",")[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target.hostname or "127.0.0.1", target.port or NATS_PORT))
        return str(probe.getsockname()[0])


def hashed_users(authorization: dict[str, Any]) -> list[BusUser]:
    """nats-server's authorization block (``deploy.credentials``) with bcrypt hashes for passwords."""
    return [
        {
            "user": user["user"],
            "password": hash_password(user["password"]),
            "permissions": user["permissions"],
        }
        for user in authorization["users"]
    ]


class ClusteredNats:
    """A controller's nats-server: TLS with the cluster's CA, routes to the other controllers,
    the cluster's users (from its last known authorization, cached 0600 in the data directory,
    so it serves every host again at once after a restart)."""

    def __init__(self, data_dir: Path, membership: Membership) -> None:
        self.data_dir = data_dir
        self.membership = membership
        ca = CertificateAuthority(data_dir / "ca")
        issued = ca.issue_server(membership.name, [membership.address], data_dir / "nats" / "tls")
        self.ca_file = ca.issued.certificate
        self.ca_pem = ca.pem
        self.certificate = issued
        self.cache = data_dir / "nats" / AUTHORIZATION_CACHE
        self.users: list[BusUser] = json.loads(self.cache.read_text()) if self.cache.exists() else []
        self.server = EmbeddedNatsServer(
            data_dir,
            host=membership.address,
            port=NATS_PORT,
            extra_config=self._config(),
            authorization={"users": self.users},
        )

    def _config(self) -> str:
        return cluster_config(
            server_name=self.membership.name,
            address=self.membership.address,
            route_port=ROUTE_PORT,
            routes=sorted({self.membership.own_route, *self.membership.routes}),
            certificate=self.certificate.certificate,
            key=self.certificate.key,
            ca=self.ca_file,
        )

    def merge(self, users: list[BusUser]) -> None:
        """Add (or replace) these users before the server starts: this host's own."""
        named = {user["user"]: user for user in self.users}
        named.update({user["user"]: user for user in users})
        self.users = sorted(named.values(), key=lambda user: user["user"])
        self.server.authorization = {"users": self.users}

    def refresh(self, users: list[BusUser], routes: list[str]) -> bool:
        """Serve exactly these users (and know these routes); reload only when something changed."""
        users = sorted(users, key=lambda user: user["user"])
        routes = sorted(set(routes) - {self.membership.own_route})
        if users == self.users and routes == sorted(self.membership.routes):
            return False
        self.users = users
        if routes != sorted(self.membership.routes):
            self.membership.routes = routes
            self.membership.save(self.data_dir)
            self.server.extra_config = self._config()
        write_private(self.cache, json.dumps(users))
        self.server.reload({"users": users})
        return True


async def widen_event_stream(bus: Bus, controllers: int) -> None:
    """Keep the event stream on min(3, controllers) servers (never fewer than it has)."""
    js = bus.nc.jetstream()
    info = await js.stream_info(bus.event_stream)
    wanted = min(EVENT_REPLICAS, controllers)
    if info.config.num_replicas is not None and info.config.num_replicas < wanted:
        info.config.num_replicas = wanted
        await js.update_stream(info.config)
        log.info("event stream %s now kept on %d servers", bus.event_stream, wanted)


async def keep_member(
    bus: Bus,
    membership: Membership,
    processes: Callable[[], dict[str, str]],
    nats: ClusteredNats | None,
    stop: asyncio.Event,
) -> None:
    """Every ``REPORT_INTERVAL`` s until ``stop`` is set: report this host's processes (its
    liveness); on a controller, bring its nats-server's users and routes and the event stream's
    replicas up to date with the cluster. A failed round is logged and tried again."""
    reporter = ClusterHosts.client(bus, host=membership.name, timeout=REPORT_INTERVAL * 2)
    cluster = Cluster.client(bus, timeout=REPORT_INTERVAL * 2)
    while not stop.is_set():
        try:
            await reporter.report(processes=processes())
            if nats is not None:
                hosts = await cluster.list_hosts()
                controllers = [h for h in hosts if h["role"] == "controller" and h["state"] == "joined"]
                routes = [route_url(h["address"]) for h in controllers if h["address"]]
                if nats.refresh(await cluster.authorization(), routes):
                    log.info("nats-server reloaded: %d bus users, %d routes", len(nats.users), len(routes))
                if len(controllers) > 1:
                    await widen_event_stream(bus, len(controllers))
        except Exception as exc:  # the next round tries again (a controller or the store away)
            log.warning("cluster membership round failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPORT_INTERVAL):
                await stop.wait()


async def manage(args: Any, nats_url: str, admin: Path) -> int:
    """`aiostack cluster add|list|remove`, as the operator (``admin``) on a controller."""
    from bus.bus import read_trust

    async with await Bus.connect(
        nats_url, prefix=args.prefix, name="aiostack-cluster", credentials=admin
    ) as bus:
        cluster = Cluster.client(bus, timeout=30)
        try:
            if args.action == "add":
                invitation = await cluster.invite(name=args.name, role=args.role, ttl=args.ttl)
                token = JoinToken(
                    invitation["name"],
                    invitation["role"],
                    bus.prefix,
                    invitation["nats_urls"],
                    read_trust(admin) or "",
                    invitation["user"],
                    invitation["password"],
                    invitation["expires_at"],
                )
                if args.json:
                    print(json.dumps({"name": args.name, "role": args.role, "token": token.encode()}))
                else:
                    expires = time.strftime("%H:%M:%S", time.localtime(invitation["expires_at"]))
                    print(f"On {args.name}, within {args.ttl:.0f} s (until {expires}), once:")
                    print(f"  AIOSTACK_JOIN_TOKEN={token.encode()} aiostack join")
            elif args.action == "remove":
                host = await cluster.remove(name=args.name)
                print(
                    json.dumps(host) if args.json else f"{host['name']}: removed; its bus users are revoked"
                )
            else:
                hosts = await cluster.list_hosts()
                if args.json:
                    print(json.dumps(hosts))
                else:
                    print(f"{'NAME':16} {'ROLE':10} {'STATE':8} {'ADDRESS':15} {'ALIVE':5} PROCESSES")
                    for host in hosts:
                        processes = ", ".join(f"{name}:{state}" for name, state in host["processes"].items())
                        alive = "yes" if host["alive"] else "no"
                        print(
                            f"{host['name']:16} {host['role']:10} {host['state']:8}"
                            f" {host['address'] or '-':15} {alive:5} {processes}"
                        )
        except NoResponders:
            print(
                f"aiostack cluster {args.action}: no cluster actor answers: this cloud was not started"
                " as a cluster (`aiostack up --cluster ADDRESS`)",
                file=sys.stderr,
            )
            return 1
        except AiostackError as exc:
            print(f"aiostack cluster {args.action}: {exc.code}: {exc}", file=sys.stderr)
            return 1
    return 0
