"""Nova's remote consoles (2.6) on test-driver nodes: what is refused, and how (the relay itself runs
with real guests: tests/node/test_guest_serial_console.py)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.gateway.test_server_details import SERVERS, _boot, _until_active
from tests.helpers import Api

V26 = {"X-OpenStack-Nova-API-Version": "2.6"}
SERIAL = {"remote_console": {"protocol": "serial", "type": "serial"}}


def consoles(server_id: str) -> str:
    return f"{SERVERS}/{server_id}/remote-consoles"


async def test_a_serial_console_is_refused_where_the_driver_has_none_and_bad_requests_change_nothing(
    api: Api, cloud
) -> None:
    await api.login()
    server_id = await _boot(api, "console")
    await _until_active(api, server_id)

    status, body = await api.post(consoles(server_id), SERIAL, headers=V26)
    assert status == 409, body
    assert "no serial console" in body["conflictingRequest"]["message"]

    action = f"{SERVERS}/{server_id}/action"
    status, body = await api.post(action, {"os-getSerialConsole": {"type": "serial"}})
    assert status == 409 and "no serial console" in body["conflictingRequest"]["message"], body
    status, body = await api.post(action, {"os-getSerialConsole": {"type": "novnc"}})
    assert status == 400, body

    status, body = await api.post(consoles(server_id), SERIAL)
    assert status == 404, body  # 2.1: the route is not there yet
    for protocol, console_type, message in (
        ("vnc", "novnc", "Unavailable console type novnc."),
        ("spice", "spice-html5", "Unavailable console type spice-html5."),
        ("rdp", "rdp-html5", "Unavailable console type rdp-html5."),
        ("serial", "novnc", "Invalid console type novnc"),
    ):
        status, body = await api.post(
            consoles(server_id), {"remote_console": {"protocol": protocol, "type": console_type}}, headers=V26
        )
        assert (status, body["badRequest"]["message"]) == (400, message)
    for bad in ({"remote_console": {"protocol": "telnet", "type": "serial"}}, {"remote_console": {}}, {}):
        status, body = await api.post(consoles(server_id), bad, headers=V26)
        assert status == 400 and "badRequest" in body, body

    status, body = await api.post(f"{SERVERS}/{server_id}/action", {"os-stop": None})
    assert status == 202, body
    for _ in range(400):
        if (await api.get(f"{SERVERS}/{server_id}"))[1]["server"]["status"] == "SHUTOFF":
            break
        await asyncio.sleep(0.05)
    status, body = await api.post(consoles(server_id), SERIAL, headers=V26)
    assert status == 409 and "is not ready" in body["conflictingRequest"]["message"], body


async def test_another_projects_server_has_no_console_and_a_bad_token_opens_none(
    api: Api, cloud, gateway_url: str
) -> None:
    await api.login()
    server_id = await _boot(api, "mine")
    await _until_active(api, server_id)
    await api.login("admin", "admin-secret")
    admins = await _boot(api, "the admin's")  # the admin's project is another one
    await _until_active(api, admins)
    await api.login("demo")
    status, body = await api.post(consoles("00000000-0000-0000-0000-000000000000"), SERIAL, headers=V26)
    assert status == 404, body
    status, body = await api.post(consoles(admins), SERIAL, headers=V26)
    assert status == 404 and "itemNotFound" in body, body

    for token in ("not-a-token", "x" * 43):
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(f"{gateway_url}/compute/serial-console?token={token}")
                raise AssertionError("a bad token opened a console")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
