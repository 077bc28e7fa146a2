"""Bus credentials: one NATS user per process, each allowed only the subjects its process uses.

`aiostack up` keeps them in ``<data_dir>/credentials/`` (directory 0700, files 0600), made
once and reused: ``<user>.json`` (``{"user", "password"}``, what ``aiostack run
--credentials`` and ``Bus.connect(credentials=...)`` read) for every process, ``admin.json``
for the operator's CLI and `up` itself, and ``authorization.conf``, the nats-server
authorization block listing them (the embedded server gets the same block; a NATS run
elsewhere can ``include`` the file).

The permissions come from ``KINDS``, one small description of what each kind of process
does on the bus; ``permissions()`` turns it into nats-server's allow and deny lists. Subjects
are relative to the prefix P: ``calls`` under ``P.rpc.``, ``events`` are kinds under
``P.evt.``, ``publishes`` and ``listens`` under ``P.``. Every user may also subscribe to its
own inbox ``_INBOX_<user>.>`` (all of its replies, JetStream acks and consumer deliveries
come there) and to ``P.auth.revoked``; a process that serves requests answers them through
``allow_responses`` (one reply to each request it received, nothing else).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.bus import event_stream_name, inbox_prefix_for, read_credentials
from bus.server import authorization_config

ADMIN = "admin"
CREDENTIALS_DIR = "credentials"
AUTHORIZATION_FILE = "authorization.conf"
VALIDATE_TOKEN = "token.validate"


@dataclass(frozen=True, slots=True)
class Kind:
    """What one kind of process does on the bus (subjects relative to the prefix)."""

    serves: str | None = None
    """The address it serves (``P.rpc.<address>.>``, queue group = address); ``{host}`` per node host."""
    calls: tuple[str, ...] = ()
    """What it may call or cast, under ``P.rpc.``."""
    never_calls: tuple[str, ...] = ()
    """Exceptions to ``calls``, under ``P.rpc.``."""
    events: tuple[str, ...] = ()
    """The event kinds it publishes (``P.evt.<kind>.>``, stored in the event stream)."""
    publishes: tuple[str, ...] = ()
    """Other core subjects it publishes, under ``P.`` (``{host}``: each of its hosts)."""
    listens: tuple[str, ...] = ()
    """Other subjects it subscribes to, under ``P.``."""
    reads_events: bool = False
    """Whether it reads the event stream through (ordered) JetStream consumers."""


LIVE_INSTANCES = "conductor.live_instances"  # owners ask which instances are gone (their orphan sweeps)
KINDS: dict[str, Kind] = {
    "token": Kind(serves="token", calls=(VALIDATE_TOKEN,), publishes=("auth.revoked",)),
    "conductor": Kind(
        serves="conductor",
        calls=("scheduler.>", "image.>", "net.>", "volume.>", "node.>", VALIDATE_TOKEN),
        events=("instance",),
    ),
    "scheduler": Kind(
        serves="scheduler",
        calls=(VALIDATE_TOKEN, LIVE_INSTANCES),
        events=("node",),
        listens=("hb.* scheduler",),
    ),
    "image": Kind(serves="image", calls=(VALIDATE_TOKEN,), events=("image",)),
    "net": Kind(serves="net", calls=(VALIDATE_TOKEN, LIVE_INSTANCES), events=("port",)),
    "volume": Kind(serves="volume", calls=(VALIDATE_TOKEN, LIVE_INSTANCES), events=("volume",)),
    "node": Kind(
        serves="node.{host}",
        calls=(
            "conductor.get_build_request",
            "conductor.instance_spawning",
            "conductor.build_failed",
            "conductor.domain_event",
            "conductor.task_done",
            "conductor.sync_power_state",
            "conductor.domain_gone",
            "conductor.list_host_instances",
            "conductor.task_progress",
            "conductor.ping",
            VALIDATE_TOKEN,
            "image.get",
            "image.read_chunk",
            "net.allocate_for_instance",
            "net.deallocate_for_instance",
            "net.get_network",
            "net.get_subnet",
            "net.set_port_binding",
            "volume.reserve",
            "volume.attach_complete",
            "volume.detach_all",
        ),
        events=("domain",),
        publishes=("hb.{host}",),
    ),
    "gateway": Kind(calls=(">",), never_calls=("node.>",), listens=("evt.>", "auth.>"), reads_events=True),
}
"""Per kind of process. Every actor validates the tokens of user calls (actors.auth), the token
actor too, so each may call ``token.validate``."""


@dataclass(frozen=True, slots=True)
class Principal:
    """One NATS user: one process of one kind (a node process serves one or more hosts)."""

    user: str
    kind: str
    hosts: tuple[str, ...] = ()


def permissions(principal: Principal, prefix: str) -> dict[str, Any]:
    """nats-server's permissions of one user, built from its kind's description."""
    if principal.kind == ADMIN:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    kind = KINDS[principal.kind]
    stream = event_stream_name(prefix)
    publish = [f"{prefix}.rpc.{subject}" for subject in kind.calls]
    publish += [f"{prefix}.evt.{event}.>" for event in kind.events]
    hosts = principal.hosts or ("",)
    publish += [f"{prefix}.{subject.format(host=host)}" for subject in kind.publishes for host in hosts]
    if kind.events or kind.reads_events:
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
    subscribe = [f"{inbox_prefix_for(principal.user)}.>", f"{prefix}.auth.revoked"]
    if kind.serves is not None:
        addresses = [kind.serves.format(host=host) for host in hosts]
        subscribe += [f"{prefix}.rpc.{address}.> {address}" for address in addresses]
    subscribe += [f"{prefix}.{subject}" for subject in kind.listens]
    result: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if kind.never_calls:
        result["publish"]["deny"] = [f"{prefix}.rpc.{subject}" for subject in kind.never_calls]
    if kind.serves is not None:
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


def credentials_dir(data_dir: Path) -> Path:
    return data_dir / CREDENTIALS_DIR


def credentials_file(data_dir: Path, user: str) -> Path:
    """``<data_dir>/credentials/<user>.json``."""
    return credentials_dir(data_dir) / f"{user}.json"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600), replacing it atomically."""
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    partial.replace(path)


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
            _write_private(path, json.dumps({"user": user, "password": secrets.token_urlsafe(24)}) + "\n")
        path.chmod(0o600)
        passwords[user] = read_credentials(path)[1]
    return passwords


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
    _write_private(credentials.config_file, authorization_config(credentials.authorization))
    return credentials
