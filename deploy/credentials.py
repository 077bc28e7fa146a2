"""Bus credentials: one NATS user per process, each allowed only the subjects its process uses.

`aiostack up` keeps them in ``<data_dir>/credentials/`` (directory 0700, files 0600), made
once and reused: ``<user>.json`` (``{"user", "password"}``, what ``aiostack run
--credentials`` and ``Bus.connect(credentials=...)`` read) for every process, ``admin.json``
for the operator's CLI and `up` itself, and ``authorization.conf``, the nats-server
authorization block listing them (the embedded server gets the same block; a NATS run
elsewhere can ``include`` the file).

The permissions come from ``KINDS``, one small description of what each kind of process
does on the bus, in terms of the typed APIs (``api/``): the facet it serves, the facets it
makes clients of (each service names them in one place: ``node.peers.FACETS``,
``actors.conductor.peers.FACETS``, ``actors.orphans.FACETS``, ``actors.placement.FACETS``,
``gateway.peers.FACETS``; every process also validates tokens), the event kinds it publishes and
the topics it publishes, hears (as its own hosts only: ``node.peers.TOPICS``) or listens to
(every process that serves answers the gateway's metrics collection, ``api.metrics.COLLECT``,
which the gateway publishes).
``permissions()`` turns that into nats-server's allow lists: a client may publish only to the
subjects of its facets' methods (``bus.api.subjects``).
A facet with a caller field (the node-facing ones: ``conductor.host.{host}``,
``image.host.{host}``, ``net.host.{host}``, ``volume.host.{host}``) is filled with the
process's own hosts: node-1 may publish to ``P.rpc.conductor.host.node-1.*`` and to no other
host's, so the callee, which reads the host from the subject, knows which node calls; likewise
its domain events (``P.evt.domain.<project>.<instance>.node-1``) and heartbeats. Every user may also
subscribe to its own inbox ``_INBOX_<user>.>`` (all of its replies, JetStream acks and consumer
deliveries come there) and to the revocations; a process that serves requests answers them
through ``allow_responses`` (one reply to each request it received, nothing else).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors import orphans, placement
from actors.conductor import peers as conductor_peers
from api.cluster import Cluster, ClusterHosts, ClusterJoin, Role
from api.conductor import Compute, ConductorForNodes
from api.identity import REVOKED, ServiceTokens, Tokens, TokenValidation
from api.image import ImageForNodes, ImageReader, Images
from api.metrics import COLLECT
from api.net import ROUTERS_CHANGED, SECURITY_CHANGED, Net, NetForNodes
from api.node import Node
from api.scheduler import HEARTBEAT, Scheduler
from api.volume import VolumeAttacher, Volumes, VolumeStorage
from bus.api import ServiceAPI, Topic, served_pattern, subjects
from bus.bus import event_stream_name, inbox_prefix_for, read_credentials
from bus.server import authorization_config
from deploy.privacy import write_private
from gateway import peers as gateway_peers
from node import peers as node_peers
from runtime.events import event_filter, host_event_filter

ADMIN = "admin"
CREDENTIALS_DIR = "credentials"
AUTHORIZATION_FILE = "authorization.conf"


@dataclass(frozen=True, slots=True)
class Kind:
    """What one kind of process does on the bus."""

    serves: tuple[type[ServiceAPI], ...] = ()
    """The facets it serves (the first names its address: the queue group of its subscriptions):
    it subscribes to ``P.rpc.<address>.*`` (``{host}``: each of the process's hosts), and for a
    facet with a caller field to ``P.rpc.<address>.<caller: any>.*`` too."""
    uses: tuple[type[ServiceAPI], ...] = ()
    """The facets it makes clients of: it may send to their methods' subjects and nothing else."""
    events: tuple[str, ...] = ()
    """The event kinds it publishes (``P.evt.<kind>.>``, stored in the event stream)."""
    host_events: tuple[str, ...] = ()
    """The event kinds it publishes as its hosts only (``P.evt.<kind>.*.*.<host>``)."""
    publishes: tuple[Topic[Any], ...] = ()
    """Topics it publishes to (``{host}``: each of its hosts; a process of no host, to any host)."""
    hears: tuple[Topic[Any], ...] = ()
    """Topics it subscribes to for its own hosts only (``{host}``: each of its hosts; a process of no
    host hears none): node-1 hears ``net.secgroups.node-1`` and no other host's."""
    listens: tuple[str, ...] = ()
    """Other subjects it subscribes to, under ``P.`` (``"<pattern> <queue group>"`` for a queue)."""
    reads_events: bool = False
    """Whether it reads the event stream through (ordered) JetStream consumers."""
    validates_tokens: bool = True
    """Whether it validates users' tokens (every process but the cluster's host agents and joining users)."""


KINDS: dict[str, Kind] = {
    "identity": Kind(serves=(Tokens, ServiceTokens), publishes=(REVOKED,), listens=(COLLECT.pattern,)),
    "conductor": Kind(
        serves=(Compute, ConductorForNodes),
        uses=conductor_peers.FACETS,
        events=("instance",),
        listens=(COLLECT.pattern,),
    ),
    "scheduler": Kind(
        serves=(Scheduler,),
        uses=orphans.FACETS,
        events=("node",),
        listens=(f"{HEARTBEAT.pattern} {Scheduler.address}", COLLECT.pattern),
    ),
    "image": Kind(
        serves=(Images, ImageForNodes), uses=placement.FACETS, events=("image",), listens=(COLLECT.pattern,)
    ),
    "net": Kind(
        serves=(Net, NetForNodes),
        uses=(*orphans.FACETS, *placement.FACETS),
        events=("port", "router", "security_group"),
        publishes=(SECURITY_CHANGED, ROUTERS_CHANGED),
        listens=(COLLECT.pattern,),
    ),
    "volume": Kind(
        serves=(Volumes, VolumeAttacher, VolumeStorage),
        uses=(*orphans.FACETS, *placement.FACETS, VolumeStorage, ImageReader),  # volumes from images
        events=("volume",),
        listens=(COLLECT.pattern,),
    ),
    "node": Kind(
        serves=(Node,),
        uses=node_peers.FACETS,
        host_events=("domain",),
        publishes=(HEARTBEAT,),
        hears=node_peers.TOPICS,
        listens=(COLLECT.pattern,),
    ),
    "gateway": Kind(
        uses=gateway_peers.FACETS, publishes=(COLLECT,), listens=(event_filter(),), reads_events=True
    ),
    "cluster": Kind(serves=(Cluster, ClusterJoin, ClusterHosts), listens=(COLLECT.pattern,)),
    "agent": Kind(uses=(ClusterHosts,), validates_tokens=False),
    "join": Kind(uses=(ClusterJoin,), validates_tokens=False),
}
"""Per kind of process. Every actor validates the tokens of user calls (runtime.auth), the identity
actor too, so each may call ``TokenValidation``'s methods."""


def calls(kind: Kind, hosts: tuple[str, ...] = ()) -> list[str]:
    """The subjects (under ``P.rpc.``) a process of a kind may send to: its facets' methods (a
    facet with a caller field: only as each of the process's ``hosts``)."""
    allowed: set[str] = set()
    for facet in (TokenValidation, *kind.uses) if kind.validates_tokens else kind.uses:
        if facet.caller is None:
            allowed.update(subjects(facet))
        else:
            for host in hosts:
                allowed.update(subjects(facet, **{facet.caller: host}))
    return sorted(allowed)


@dataclass(frozen=True, slots=True)
class Principal:
    """One NATS user: one process of one kind (a node process serves one or more hosts)."""

    user: str
    kind: str
    hosts: tuple[str, ...] = ()


def served_by(facet: type[ServiceAPI], main: type[ServiceAPI]) -> type[ServiceAPI]:
    """The facet whose address is the queue group ``facet`` arrives in, in a process whose first
    facet is ``main``: main's (its own address, or a caller facet under it), or, for a facet on an
    address of its own (a storage host's ``volume.storage.<host>``), itself: another actor serves it."""
    return main if facet.address == main.address or facet.caller is not None else facet


def permissions(principal: Principal, prefix: str) -> dict[str, Any]:
    """nats-server's permissions of one user, built from its kind's description."""
    if principal.kind == ADMIN:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    kind = KINDS[principal.kind]
    stream = event_stream_name(prefix)
    publish = [f"{prefix}.rpc.{subject}" for subject in calls(kind, principal.hosts)]
    publish += [f"{prefix}.{event_filter(event)}" for event in kind.events]
    publish += [
        f"{prefix}.{host_event_filter(event, host)}" for event in kind.host_events for host in principal.hosts
    ]
    hosts = principal.hosts or ("",)
    publish += [
        f"{prefix}.{topic.template.format(host=host) if host else topic.pattern}"
        for topic in kind.publishes
        for host in hosts
    ]
    if kind.events or kind.host_events or kind.reads_events:
        publish += [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}"]
    if kind.reads_events:
        publish += [
            "$JS.API.STREAM.NAMES",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    subscribe = [f"{inbox_prefix_for(principal.user)}.>"]
    if kind.validates_tokens:
        subscribe.append(f"{prefix}.{REVOKED.pattern}")
    for host in hosts if kind.serves else ():
        main = kind.serves[0]
        if not host and any("{" in facet.address for facet in kind.serves if facet.caller is None):
            raise ValueError(f"user {principal.user}: a {principal.kind} process serves a host's address")
        for pattern, queue in dict.fromkeys(
            (served_pattern(facet, host=host), served_pattern(served_by(facet, main), host=host))
            for facet in kind.serves
        ):
            subscribe.append(f"{prefix}.rpc.{pattern}.* {queue}")
    subscribe += [
        f"{prefix}.{topic.template.format(host=host)}" for topic in kind.hears for host in principal.hosts
    ]
    subscribe += [f"{prefix}.{subject}" for subject in kind.listens]
    result: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if kind.serves:
        result["allow_responses"] = True
    return result


def authorization(
    principals: Iterable[Principal], passwords: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """nats-server's authorization block: every principal and ``admin``, each with its password."""
    everyone = [*principals, Principal(ADMIN, ADMIN)]
    return {
        "users": [
            {"user": p.user, "password": passwords[p.user], "permissions": permissions(p, prefix)}
            for p in everyone
        ]
    }


CONTROLLER_PROCESSES = ("identity", "conductor", "scheduler", "image", "net", "volume", "gateway", "cluster")
"""What every controller of a cluster runs (each one's volume actor is a storage host too)."""


def member_user(process: str, host: str) -> str:
    """A bus user of a cluster's host: ``conductor@controller-2``; a compute host's node: the host."""
    return host if process == "node" else f"{process}@{host}"


def member_principals(host: str, role: Role) -> list[Principal]:
    """The bus users a host of a cluster gets when it joins as ``role``."""
    if role == "controller":
        return [
            Principal(member_user(process, host), process, (host,) if process == "volume" else ())
            for process in CONTROLLER_PROCESSES
        ]
    return [
        Principal(member_user("node", host), "node", (host,)),
        Principal(member_user("agent", host), "agent", (host,)),
    ]


def member_users(host: str, role: Role, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """``member_principals`` with their nats-server permissions (what the cluster actor hands out)."""
    return [(p.user, permissions(p, prefix)) for p in member_principals(host, role)]


def join_users(host: str, role: Role, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """The one-time user a host joins as: it may call its own ``cluster.join.<host>`` only."""
    principal = Principal(member_user("join", host), "join", (host,))
    return [(principal.user, permissions(principal, prefix))]


def credentials_dir(data_dir: Path) -> Path:
    return data_dir / CREDENTIALS_DIR


def credentials_file(data_dir: Path, user: str) -> Path:
    """``<data_dir>/credentials/<user>.json``."""
    return credentials_dir(data_dir) / f"{user}.json"


def ensure_credentials(data_dir: Path, users: Iterable[str]) -> dict[str, str]:
    """The password of each user (and ``admin``), made and stored on first use, read afterwards."""
    directory = credentials_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    passwords = {}
    for user in dict.fromkeys([*users, ADMIN]):
        if not user or any(c in user for c in " .*>\t\n"):
            raise ValueError(f"invalid NATS user name {user!r}: it becomes one subject token")
        path = credentials_file(data_dir, user)
        if not path.exists():
            write_credentials(path, user, secrets.token_urlsafe(24))
        path.chmod(0o600)
        passwords[user] = read_credentials(path)[1]
    return passwords


def write_credentials(path: Path, user: str, password: str, ca: str | None = None) -> None:
    """A credentials file (0600): the user, its password and, for TLS, the CA it trusts."""
    data = {"user": user, "password": password, **({"ca": ca} if ca else {})}
    write_private(path, json.dumps(data) + "\n")


def trust(data_dir: Path, ca_pem: str) -> None:
    """Make every credentials file of ``data_dir`` trust ``ca_pem`` (its ``"ca"``): their processes
    then connect to NATS over TLS, accepting only servers this CA signed."""
    for path in credentials_dir(data_dir).glob("*.json"):
        data = json.loads(path.read_text())
        if data.get("ca") != ca_pem:
            write_private(path, json.dumps({**data, "ca": ca_pem}) + "\n")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What `aiostack up` hands out: a file per user and the server's authorization block."""

    directory: Path
    authorization: dict[str, Any]

    def file(self, user: str) -> Path:
        return self.directory / f"{user}.json"

    @property
    def config_file(self) -> Path:
        """The authorization block as a nats-server config file (to ``include`` in one's own)."""
        return self.directory / AUTHORIZATION_FILE


def prepare(data_dir: Path, principals: Iterable[Principal], prefix: str) -> Credentials:
    """Credentials for these processes and ``admin``; the authorization block written beside them."""
    principals = list(principals)
    passwords = ensure_credentials(data_dir, [p.user for p in principals])
    credentials = Credentials(credentials_dir(data_dir), authorization(principals, passwords, prefix))
    write_private(credentials.config_file, authorization_config(credentials.authorization))
    return credentials
