"""The metadata service at 169.254.169.254: what a guest learns of itself over HTTP, as Nova's
metadata API (behind Neutron's metadata proxy) tells it, so cloud-init images configure
themselves.

On every guest network this node has a bridge for (``node.networks``), the bridge holds
``METADATA_ADDRESS/32`` and a listener bound to it and to that bridge alone
(``SO_BINDTODEVICE``), so each listener knows the network its requests come from; guests reach
it through the host's DHCP port's address on the bridge (the subnet's DHCP hands them a route to
it: ``node.networks``; Neutron's isolated-metadata route). On an overlay network
(``node.overlay``) the address and listener are in the network's DHCP namespace instead, on the
DHCP port's end there: a thread enters the namespace to make the listening socket, and the
node's event loop serves it as any other. A
request's guest is the instance whose port on that network holds the request's source address
(``NetForNodes.instance_ports_at``, as Neutron's metadata agent finds it), and what it is told is
the conductor's word on that instance (``ConductorForNodes.get_instance_metadata``): both only
answer for instances on this node's host. Any other source is answered 404: a guest is never
told of another. Nothing here serves the administrator password.

Paths: OpenStack's ``/openstack/<version>/`` (``meta_data.json``, built by
``node.configdrive.meta_data`` as the config drive's is, ``network_data.json``, ``user_data``,
``vendor_data.json``, ``vendor_data2.json``) and EC2's ``/<version>/meta-data/...`` and
``/<version>/user-data``, for the versions Nova lists. The EC2 ``instance-id`` is the
instance's uuid (there is no EC2 id here).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from api.conductor import ConductorForNodes, InstanceMetadata
from api.net import NetForNodes, Port
from bus import AiostackError, NotFound
from node import netns
from node.configdrive import hostname_of, meta_data, network_data

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
CACHE_TTL = 5.0
"""How long a guest's answers are kept (a boot's cloud-init asks dozens of paths at once)."""
CACHE_SIZE = 1024
OPENSTACK_VERSIONS = (
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
    "2017-02-22", "2018-08-27", "2020-10-14", "latest",
)  # fmt: skip
EC2_VERSIONS = (
    "1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
    "2008-09-01", "2009-04-04", "latest",
)  # fmt: skip
JSON = "application/json"
TEXT = "text/plain"
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 10.0
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Guest:
    """What the metadata service tells one guest of itself."""

    metadata: InstanceMetadata
    ports: list[Port]
    """The instance's ports, the one the request came from first."""
    address: str
    """The fixed IP the request came from."""

    @property
    def user_data(self) -> bytes | None:
        encoded = self.metadata["user_data"]
        return base64.b64decode(encoded) if encoded else None


Answer = tuple[bytes, str]
"""A body and its content type."""
Lookup = Callable[[str, str], Awaitable["Guest | None"]]
"""``(network id, source address)`` -> the guest there, or None."""


def _lines(names: list[str] | tuple[str, ...]) -> Answer:
    return "\n".join(names).encode(), TEXT


def _json(value: Any) -> Answer:
    return json.dumps(value).encode(), JSON


def _openstack_files(version: str, guest: Guest) -> dict[str, Callable[[], Answer]]:
    """The files of ``/openstack/<version>/`` (each as of the version Nova added it)."""
    instance, keys = guest.metadata["instance"], guest.metadata["public_keys"]
    files: dict[str, tuple[str, Callable[[], Answer]]] = {
        "meta_data.json": ("2012-08-10", lambda: _json(meta_data(instance, keys))),
        "vendor_data.json": ("2013-10-17", lambda: _json({})),
        "network_data.json": ("2015-10-15", lambda: _json(network_data(guest.ports, {}))),
        "vendor_data2.json": ("2016-10-06", lambda: _json({})),
    }
    user_data = guest.user_data
    if user_data is not None:
        files["user_data"] = ("2012-08-10", lambda: (user_data, "application/octet-stream"))
    return {name: make for name, (since, make) in files.items() if version == "latest" or version >= since}


def _openstack(segments: list[str], guest: Guest) -> Answer | None:
    if not segments:
        return _lines(OPENSTACK_VERSIONS)
    version, rest = segments[0], segments[1:]
    if version not in OPENSTACK_VERSIONS:
        return None
    files = _openstack_files(version, guest)
    if not rest:
        return _lines(sorted(files))
    if len(rest) == 1 and rest[0] in files:
        return files[rest[0]]()
    return None


def ec2_meta_data(guest: Guest) -> dict[str, Any]:
    """EC2's ``meta-data`` tree: a dict is a folder (listed as ``_name`` where it has one)."""
    instance = guest.metadata["instance"]
    hostname = hostname_of(instance["name"])
    tree: dict[str, Any] = {
        "ami-launch-index": "0",
        "hostname": hostname,
        "instance-id": instance["id"],
        "instance-type": instance["flavor"]["name"],
        "local-hostname": hostname,
        "local-ipv4": guest.address,
        "placement": {"availability-zone": "nova"},
        "public-hostname": hostname,
    }
    keys = sorted(guest.metadata["public_keys"].items())
    if keys:
        tree["public-keys"] = {
            str(index): {"_name": f"{index}={name}", "openssh-key": key}
            for index, (name, key) in enumerate(keys)
        }
    return tree


def _listing(folder: dict[str, Any]) -> Answer:
    names = [
        (value.get("_name", f"{name}/") if isinstance(value, dict) else name)
        for name, value in folder.items()
        if not name.startswith("_")
    ]
    return _lines(names)


def _ec2(segments: list[str], guest: Guest) -> Answer | None:
    version, rest = segments[0], segments[1:]
    if version not in EC2_VERSIONS:
        return None
    user_data = guest.user_data
    if not rest:
        return _lines(["meta-data/", *(["user-data"] if user_data is not None else [])])
    if rest == ["user-data"]:
        return None if user_data is None else (user_data, "application/octet-stream")
    if rest[0] != "meta-data":
        return None
    node: Any = ec2_meta_data(guest)
    for name in rest[1:]:
        if not isinstance(node, dict) or name.startswith("_") or name not in node:
            return None
        node = node[name]
    return _listing(node) if isinstance(node, dict) else (str(node).encode(), TEXT)


def answer(path: str, guest: Guest) -> Answer | None:
    """What ``path`` holds for ``guest``; None: nothing (404)."""
    segments = [segment for segment in path.split("/") if segment]
    if not segments:
        return _lines(EC2_VERSIONS)
    if segments[0] == "openstack":
        return _openstack(segments[1:], guest)
    return _ec2(segments, guest)


class MetadataHandler:
    """One network's HTTP side: each connection's one GET answered for the guest it comes from,
    then closed. A small HTTP/1.1 server of its own: node processes run without aiohttp
    (``deploy/child.py``), and the requests are a few short GETs."""

    def __init__(self, network_id: str, lookup: Lookup) -> None:
        self.network_id = network_id
        self.lookup = lookup

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                peer = writer.get_extra_info("peername")
                method, status, body, content_type = await self.respond(head, peer[0] if peer else None)
                writer.write(response_head(status, len(body), content_type))
                if method != "HEAD":
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def respond(self, head: bytes, source: str | None) -> tuple[str, int, bytes, str]:
        """The request's method, and the status, body and content type of its answer."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
            return "", 400, b"400: Bad Request", TEXT
        method, target = request_line[0], request_line[1]
        if method not in ("GET", "HEAD"):
            return method, 405, b"405: Method Not Allowed", TEXT
        try:
            guest = await self.lookup(self.network_id, source) if source else None
        except AiostackError as exc:
            log.warning("metadata on network %s: %s unanswered: %s", self.network_id, source, exc)
            return method, 503, b"503: Service Unavailable", TEXT
        found = answer(unquote(urlsplit(target).path), guest) if guest is not None else None
        if found is None:
            return method, 404, b"404: Not Found", TEXT
        return method, 200, *found


def response_head(status: int, length: int, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


async def start_server(network_id: str, lookup: Lookup, sock: socket.socket) -> asyncio.Server:
    """Serve a network's guests on a listening socket."""
    return await asyncio.start_server(MetadataHandler(network_id, lookup), sock=sock, limit=MAX_REQUEST_HEAD)


class GuestLookup(Protocol):
    """How the service finds a request's guest (``GuestFinder``), and forgets what it kept of a network."""

    async def __call__(self, network_id: str, address: str) -> Guest | None: ...

    def forget(self, network_id: str) -> None: ...


class GuestFinder:
    """The guest a request comes from: its port on the network holding the source address (net),
    then its instance (conductor), each asked as this node's host; answers kept ``CACHE_TTL``."""

    def __init__(self, net: NetForNodes, conductor: ConductorForNodes, ttl: float = CACHE_TTL) -> None:
        self.net = net
        self.conductor = conductor
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Guest | None]] = {}

    async def __call__(self, network_id: str, address: str) -> Guest | None:
        """:raises AiostackError: net or the conductor did not answer (nothing is kept)."""
        key = (network_id, address)
        kept = self._cache.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        guest = await self._find(network_id, address)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.ttl, guest)
        return guest

    async def _find(self, network_id: str, address: str) -> Guest | None:
        try:
            ports = await self.net.instance_ports_at(network_id=network_id, ip_address=address)
            metadata = await self.conductor.get_instance_metadata(instance_uuid=ports[0]["device_id"])
        except NotFound:
            return None
        return Guest(metadata, ports, address)

    def forget(self, network_id: str) -> None:
        """Drop what is kept of a network's addresses (a port came or went: an address may be reused)."""
        for key in [key for key in self._cache if key[0] == network_id]:
            del self._cache[key]


@dataclass(frozen=True, slots=True)
class Listener:
    device: str
    """The bridge, or (in a namespace) the DHCP port's end there."""
    identity: int
    """The bridge's ifindex, or the namespace's inode: one made anew is served anew."""
    server: asyncio.Server
    namespace: str | None = None


async def _ip(*argv: str) -> None:
    """Run ``ip ARGV``. :raises OSError: it failed."""
    process = await asyncio.create_subprocess_exec(
        "ip", *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, error = await process.communicate()
    if process.returncode != 0:
        raise OSError(f"ip {' '.join(argv)}: {error.decode(errors='replace').strip()}")


def listening_socket_in(namespace: str, address: str, port: int, device: str) -> socket.socket:
    """``listening_socket`` made inside the network namespace ``namespace`` (``node.netns.call_in``);
    the socket stays in that namespace, served by whoever holds it.

    :raises OSError: the namespace could not be entered, or the socket set up there.
    """
    return netns.call_in(namespace, lambda: listening_socket(address, port, device))


def listening_socket(address: str, port: int, device: str) -> socket.socket:
    """A TCP socket listening on ``address:port`` for what arrives on ``device`` only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetadataService:
    """This node's metadata listeners, one per guest network it has a bridge for."""

    def __init__(
        self, lookup: GuestLookup, *, address: str = METADATA_ADDRESS, port: int = METADATA_PORT
    ) -> None:
        self.lookup = lookup
        self.address = address
        self.port = port
        self._listeners: dict[str, Listener] = {}
        self._lock = asyncio.Lock()

    @property
    def bridges(self) -> dict[str, str]:
        """``{network id: bridge}`` served now on this host's bridges."""
        return {
            network_id: listener.device
            for network_id, listener in self._listeners.items()
            if listener.namespace is None
        }

    @property
    def namespaces(self) -> dict[str, str]:
        """``{network id: namespace}`` served now in DHCP namespaces (``node.overlay``)."""
        return {
            network_id: listener.namespace
            for network_id, listener in self._listeners.items()
            if listener.namespace is not None
        }

    async def serve(self, network_id: str, bridge: str) -> None:
        """Serve the network's guests on ``bridge`` (again if the bridge was made anew).

        :raises OSError: the address or the listener could not be set up (nothing is left).
        """
        self.lookup.forget(network_id)
        async with self._lock:
            ifindex = socket.if_nametoindex(bridge)
            listener = self._listeners.get(network_id)
            if listener is not None and (listener.device, listener.identity) == (bridge, ifindex):
                return
            if listener is not None:
                await self._stop(network_id)
            await _ip("-4", "addr", "replace", f"{self.address}/32", "dev", bridge)
            try:
                sock = listening_socket(self.address, self.port, bridge)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # else another node on this bridge serves it
                    await self._remove_address(bridge)
                raise
            server = await start_server(network_id, self.lookup, sock)
            self._listeners[network_id] = Listener(bridge, ifindex, server)
            log.info("metadata service for network %s on %s", network_id, bridge)

    async def serve_in_namespace(self, network_id: str, namespace: str, device: str) -> None:
        """Serve the network's guests inside the network namespace ``namespace``, on its ``device``
        (the DHCP port's end there: ``node.overlay``), again if the namespace was made anew.

        :raises OSError: the address or the listener could not be set up (nothing is left).
        """
        self.lookup.forget(network_id)
        async with self._lock:
            inode = (netns.NETNS_DIR / namespace).stat().st_ino
            listener = self._listeners.get(network_id)
            if listener is not None and (listener.namespace, listener.identity) == (namespace, inode):
                return
            if listener is not None:
                await self._stop(network_id)
            await _ip("-n", namespace, "-4", "addr", "replace", f"{self.address}/32", "dev", device)
            try:
                sock = await asyncio.to_thread(
                    listening_socket_in, namespace, self.address, self.port, device
                )
            except OSError:
                await self._remove_address(device, namespace)
                raise
            server = await start_server(network_id, self.lookup, sock)
            self._listeners[network_id] = Listener(device, inode, server, namespace)
            log.info("metadata service for network %s in %s", network_id, namespace)

    async def stop(self, network_id: str) -> None:
        """No guest of this node is on the network any more: its listener and address go."""
        self.lookup.forget(network_id)
        async with self._lock:
            await self._stop(network_id)

    async def close(self) -> None:
        """The node stops: every listener and address goes."""
        async with self._lock:
            for network_id in list(self._listeners):
                await self._stop(network_id)

    async def _stop(self, network_id: str) -> None:
        listener = self._listeners.pop(network_id, None)
        if listener is None:
            return
        listener.server.close()
        await listener.server.wait_closed()
        await self._remove_address(listener.device, listener.namespace)
        log.info(
            "metadata service for network %s on %s stopped", network_id, listener.namespace or listener.device
        )

    async def _remove_address(self, device: str, namespace: str | None = None) -> None:
        where = ("-n", namespace) if namespace else ()
        try:
            await _ip(*where, "-4", "addr", "del", f"{self.address}/32", "dev", device)
        except OSError as exc:  # the bridge (or namespace) went with its network, and the address with it
            log.debug("metadata address of %s: %s", device, exc)
