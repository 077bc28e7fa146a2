"""What issue 13's attacker tried on the gateway, against a real ``aiostack up``: each attack is
refused, and another user's requests go on meanwhile.

The cloud runs with short request timeouts (``AIOSTACK_GATEWAY_HEADER_TIMEOUT`` and
``AIOSTACK_GATEWAY_BODY_TIMEOUT``: 2 s) and the default socket cap (32 per user). The test's
clients open a new connection for each request (``force_close``): the gateway closes idle ones
after 2 s. No wall time is asserted: waits are bounded only so that a failure cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from aiostack.client import password_auth
from bus import BadMessage, CallTimeout, NoResponders, NotFound, RemoteError
from deploy.launch import RunningCloud, aiostack_up
from gateway.app import public_message
from gateway.http import Limits

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-pw-hardening", "AIOSTACK_DEMO_PASSWORD": "demo-pw-hardening"}
TIMEOUTS = {"AIOSTACK_GATEWAY_HEADER_TIMEOUT": "2", "AIOSTACK_GATEWAY_BODY_TIMEOUT": "2"}
CAP = Limits().sockets_per_user
HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
BOUND = 120.0  # seconds: what a failure may take before it fails, never an expectation


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cloud(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningCloud]:
    async with aiostack_up(tmp_path_factory.mktemp("hardening"), env=PASSWORDS | TIMEOUTS) as running:
        yield running


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that never reuses a connection (the gateway closes idle ones after 2 s here)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as made:
        yield made


async def login(http: aiohttp.ClientSession, cloud: RunningCloud, user: str) -> str:
    body = password_auth(user, PASSWORDS[f"AIOSTACK_{user.upper()}_PASSWORD"], user)
    async with http.post(f"{cloud.gateway_url}/identity/v3/auth/tokens", json=body) as response:
        assert response.status == 201, await response.text()
        return response.headers["X-Subject-Token"]


async def get(http: aiohttp.ClientSession, cloud: RunningCloud, path: str, token: str) -> tuple[int, Any]:
    async with http.get(f"{cloud.gateway_url}{path}", headers={"X-Auth-Token": token}) as response:
        return response.status, await response.json()


async def raw(cloud: RunningCloud, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the gateway answers until it closes it."""
    url = URL(cloud.gateway_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(data)
        async with asyncio.timeout(BOUND):
            return await reader.read()
    finally:
        writer.close()


async def answer_of(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP answer's head and body (by its Content-Length)."""
    async with asyncio.timeout(BOUND):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head, await reader.readexactly(length)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the gateway closes the connection (with nothing more to say)."""
    try:
        async with asyncio.timeout(BOUND):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


def gateway_log(cloud: RunningCloud) -> str:
    return (cloud.data_dir / "logs" / "gateway.log").read_text(errors="replace")


async def test_one_users_sockets_beyond_the_cap_are_refused_and_others_go_on(cloud: RunningCloud) -> None:
    """500 sockets from one member: the first ``CAP`` open, the rest are refused 429 at once;
    meanwhile the admin opens a socket, is answered over it, and lists flavors."""
    async with session() as http:
        demo, admin = await login(http, cloud, "demo"), await login(http, cloud, "admin")
        ws_url = f"{cloud.gateway_url}/ws"

        async def open_one(token: str) -> aiohttp.ClientWebSocketResponse | int:
            try:
                return await http.ws_connect(ws_url, headers={"X-Auth-Token": token})
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        async def another_user() -> None:
            async with http.ws_connect(ws_url, headers={"X-Auth-Token": admin}) as ws:
                await ws.send_json(
                    {"type": "request", "id": "f", "method": "GET", "path": "/compute/v2.1/flavors"}
                )
                async for message in ws:
                    frame = message.json()
                    if frame["type"] == "response":
                        assert frame["id"] == "f" and frame["status"] == 200, frame
                        break
            status, body = await get(http, cloud, "/compute/v2.1/flavors", admin)
            assert status == 200 and body["flavors"]

        flood = asyncio.gather(*(open_one(demo) for _ in range(500)))
        await another_user()
        outcomes = await flood
        opened = [o for o in outcomes if not isinstance(o, int)]
        try:
            assert len(opened) == CAP
            assert [o for o in outcomes if isinstance(o, int)] == [429] * (500 - CAP)
            await another_user()  # and with the user's sockets all held
            async with http.get(ws_url, headers={"X-Auth-Token": demo, **HANDSHAKE}) as refused:
                body = await refused.json()
            assert refused.status == 429
            assert f"At most {CAP} event sockets" in body["overLimit"]["message"]
        finally:
            await asyncio.gather(*(ws.close() for ws in opened))
        for _ in range(100):  # a closed socket gives its place back (once its handler has ended)
            again = await open_one(demo)
            if not isinstance(again, int):
                await again.close()
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no socket opened after the others closed")


async def test_a_request_head_sent_slowly_is_cut_off(cloud: RunningCloud) -> None:
    """Slowloris: a request head that never ends, a byte at a time; the gateway closes the
    connection (its header timeout) while another user's requests are answered."""
    url = URL(cloud.gateway_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"GET /compute/v2.1/flavors HTTP/1.1\r\nHost: gateway\r\n")

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in itertools.cycle(b"X-Slow: still coming "):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    dribbling = asyncio.create_task(dribble())
    try:
        async with session() as http:
            demo = await login(http, cloud, "demo")
            status, _ = await get(http, cloud, "/compute/v2.1/flavors", demo)
            assert status == 200
        assert await closed(reader)  # by the gateway, without an answer
    finally:
        dribbling.cancel()
        writer.close()


async def test_a_request_body_sent_slowly_is_refused_408(cloud: RunningCloud) -> None:
    """A body announced as 1000 bytes that comes a byte at a time: 408, then the connection closes;
    another user's network is created meanwhile."""
    url = URL(cloud.gateway_url)
    async with session() as http:
        demo, admin = await login(http, cloud, "demo"), await login(http, cloud, "admin")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(
            b"POST /network/v2.0/networks HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"X-Auth-Token: " + demo.encode() + b"\r\nContent-Length: 1000\r\n\r\n{"
        )

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(999):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dribbling = asyncio.create_task(dribble())
        try:
            async with http.post(
                f"{cloud.gateway_url}/network/v2.0/networks",
                json={"network": {"name": "not-slow"}},
                headers={"X-Auth-Token": admin},
            ) as response:
                assert response.status == 201
            head, body = await answer_of(reader)
            dribbling.cancel()
            assert head.startswith(b"HTTP/1.1 408 "), head
            assert b"did not arrive in time" in body and b"NeutronError" in body
            assert await closed(reader)
        finally:
            dribbling.cancel()
            writer.close()


@pytest.mark.parametrize(
    "path",
    ["/network/v2.0/networks", "/compute/v2.1/servers", "/image/v2/images", "/identity/v3/auth/tokens"],
)
async def test_deeply_nested_json_is_a_400(cloud: RunningCloud, path: str) -> None:
    """JSON nested 100 000 deep (a RecursionError, answered 500, before): 400 in the service's format."""
    async with session() as http:
        demo = await login(http, cloud, "demo")
        for nested in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
            async with http.post(
                f"{cloud.gateway_url}{path}",
                data=nested,
                headers={"X-Auth-Token": demo, "Content-Type": "application/json"},
            ) as response:
                assert response.status == 400, await response.text()
                assert "nested too deeply" in await response.text()
        status, _ = await get(http, cloud, "/compute/v2.1/flavors", demo)
        assert status == 200
    assert "RecursionError" not in gateway_log(cloud)


async def test_deeply_nested_frames_on_the_socket_are_refused_and_it_goes_on(cloud: RunningCloud) -> None:
    async with session() as http:
        demo = await login(http, cloud, "demo")
        async with http.ws_connect(f"{cloud.gateway_url}/ws", headers={"X-Auth-Token": demo}) as ws:
            await ws.send_str("[" * 100_000 + "]" * 100_000)
            deep_body = '{"network": ' + '{"a":' * 100_000 + "1" + "}" * 100_001
            await ws.send_str(
                '{"type": "request", "id": "deep", "method": "POST", "path": "/network/v2.0/networks",'
                f' "body": {deep_body}}}'
            )
            after = {"type": "request", "id": "after", "method": "GET", "path": "/compute/v2.1/flavors"}
            await ws.send_json(after)
            answers: list[dict[str, Any]] = []
            async with asyncio.timeout(BOUND):
                async for message in ws:
                    frame = message.json()
                    if frame["type"] in ("error", "response"):
                        answers.append(frame)
                    if frame.get("id") == "after":
                        break
    *refusals, last = answers
    assert [(f["type"], f["id"]) for f in refusals] == [("error", None)] * 2  # no id could be read
    assert all("nested too deeply" in f["message"] for f in refusals)
    assert last["status"] == 200
    assert "RecursionError" not in gateway_log(cloud)


async def test_a_malformed_header_is_refused_without_the_token_in_the_answer_or_the_log(
    cloud: RunningCloud,
) -> None:
    """A control character after the token in X-Auth-Token (aiohttp's own answer and log quoted
    the whole header line), a header line without a colon, a bad request target with the token
    in its query, bytes that are not ASCII in the token: 400 or 401, and the token nowhere."""
    async with session() as http:
        token = await login(http, cloud, "demo")
    secret = token.encode()
    head = b"GET /ws HTTP/1.1\r\nHost: gateway\r\n" + b"".join(
        f"{name}: {value}\r\n".encode() for name, value in HANDSHAKE.items()
    )
    attempts = {
        "control character": head + b"X-Auth-Token: " + secret + b"\x01\r\n\r\n",
        "no colon": head + b"X-Auth-Token " + secret + b"\r\n\r\n",
        "bad header after it": head + b"X-Auth-Token: " + secret + b"\r\nBad\x7fName: x\r\n\r\n",
        "bad target": b"GET /ws?token=" + secret + b"\x01 HTTP/1.1\r\nHost: gateway\r\n\r\n",
    }
    for name, request in attempts.items():
        answer = await raw(cloud, request)
        assert answer.split(b" ", 2)[1] == b"400", (name, answer[:300])
        assert secret not in answer and b"\r\n\r\n{" in answer, (name, answer[:300])
    not_ascii = head + b"X-Auth-Token: " + secret[:-4] + b"\xff\xfe\r\n\r\n"
    answer = await raw(cloud, not_ascii)
    assert answer.startswith(b"HTTP/1.1 401 ") and b"token is malformed" in answer, answer[:300]
    assert b"msgpack" not in answer and secret[:-4] not in answer
    async with session() as http:  # the gateway still answers, and the user's token still works
        status, _ = await get(http, cloud, "/compute/v2.1/flavors", token)
        assert status == 200
    log = gateway_log(cloud)
    assert token not in log and token[:-4] not in log and "refused an unreadable request" in log


def test_errors_about_the_inside_are_told_in_the_services_terms() -> None:
    """The bus's and actors' own words (subjects, msgpack, exception names) go to the log only."""
    inside = [
        BadMessage("body cannot be packed as msgpack: Integer value out of range"),
        NoResponders("no actor serves aiostack.rpc.conductor.list_flavors"),
        CallTimeout("no reply from aiostack.rpc.image.get within 30.000 s"),
        RemoteError("KeyError: 'x'", remote_type="KeyError"),
    ]
    for exc in inside:
        message = public_message(exc, "req-1")
        assert message is not None
        assert not {"msgpack", "aiostack.rpc", "KeyError", "actor"} & set(message.replace(".", " ").split())
    assert public_message(NotFound("Network x could not be found."), "req-1") is None


async def test_a_token_of_no_ascii_is_refused_before_any_call(cloud: RunningCloud) -> None:
    """Was 400 ``body cannot be packed as msgpack: 'utf-8' codec can't encode ...``."""
    answer = await raw(
        cloud,
        b"GET /compute/v2.1/flavors HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"X-Auth-Token: caf\xc3\xa9\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401 ") and b"msgpack" not in answer, answer[:300]
