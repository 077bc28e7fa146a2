"""A real guest's interactive serial console: Nova's remote-consoles URL, its websocket, the SDK and
``aiostack server console --attach``, relayed by the gateway through the node's ``NodeConsole``.

The test guest's ``/init`` keeps no shell on its console, so the guest's user data starts one on
``/dev/ttyS0``: what is typed on the console runs there, and its output comes back.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import re
import sys
import termios
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Locator, Page, async_playwright, expect

from aiostack.sdk import BadRequest, Conflict, SerialConsole
from tests.helpers import DEMO_PASSWORD
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud

CHROMIUM = "/usr/bin/chromium"
SHELL_ON_THE_CONSOLE = "#!/bin/sh\nsh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' &\n"
# An interactive shell in a session of its own with the console as its controlling terminal (job
# control: Ctrl-C interrupts what runs in the foreground). start-stop-daemon puts it in the
# background: a shell's ``&`` would have it ignore SIGINT, and its commands with it.
SHELL_IN_ITS_OWN_SESSION = (
    "#!/bin/sh\nstart-stop-daemon -S -b -p /tmp/console.pid -m -x /bin/busybox --"
    " sh -c 'exec setsid -c sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'\n"
)
V26 = {"OpenStack-API-Version": "compute 2.6"}


async def _boot_with_a_shell(cloud: QemuCloud, user_data: str = SHELL_ON_THE_CONSOLE) -> str:
    body = {
        "name": "console",
        "imageRef": cloud.images["disk"],
        "flavorRef": "1",
        "user_data": base64.b64encode(user_data.encode()).decode(),
    }
    client = cloud.client
    server_id = str((await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"])
    async with asyncio.timeout(GUEST_DEADLINE):
        while (await client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    await cloud.console_until(server_id, r"AIOSTACK-READY")
    return server_id


async def _lines(page: Page) -> list[str]:
    """The terminal's lines as shown (trailing blanks left out)."""
    text: str = await page.locator("#serial-output").evaluate("(terminal) => terminal.textContent")
    return [line.rstrip() for line in text.split("\n")]


async def _until_it_ends(terminal: Locator, *lines: str) -> None:
    """Until the terminal's last lines are ``lines``, the cursor on the last."""
    ending = "\n".join(re.escape(line) for line in lines)
    await expect(terminal).to_have_text(re.compile(f"\n{ending}\\s*$"), timeout=GUEST_DEADLINE * 1000)


async def _keys_in_the_terminal(page: Page, terminal: Locator) -> None:
    """Keys pressed in the focused terminal, each step waiting for the prompt (the shell reads keys
    itself only then), and what the terminal shows after them."""
    await page.keyboard.type("echo AIOSTACK-WEB-$((6*7))")
    await page.keyboard.press("Enter")
    await expect(terminal).to_have_text(
        re.compile(r"\nAIOSTACK-WEB-42\n\S[^\n]*$"), timeout=GUEST_DEADLINE * 1000
    )
    prompt = (await _lines(page))[-1]  # the shell's, back after the command ("/ #")
    # Ctrl-C: the sleep stops (its echo says it runs, in the foreground), 128 + SIGINT its status;
    # the terminal driver's echo of it, ^C, then the prompt on the next line
    await page.keyboard.type("sh -c 'echo SLEEPING-$((1+1)); exec sleep 30'")
    await page.keyboard.press("Enter")
    await _until_it_ends(terminal, "SLEEPING-2", "")
    await page.keyboard.press("Control+c")
    await _until_it_ends(terminal, "SLEEPING-2", "^C", prompt)
    await page.keyboard.type("echo rc=$?")
    await page.keyboard.press("Enter")
    await _until_it_ends(terminal, "rc=130", prompt)
    # Ctrl-C at the prompt: the line typed is dropped, never run
    await page.keyboard.type("echo AIOSTACK-NOT-$((0+0))")
    await page.keyboard.press("Control+c")
    await _until_it_ends(terminal, f"{prompt} echo AIOSTACK-NOT-$((0+0))^C", prompt)
    # a paste: its text sent as typed, its line end as Enter
    await page.evaluate("navigator.clipboard.writeText('echo AIOSTACK-PASTE-$((4+4))\\n')")
    await page.keyboard.press("Control+Shift+V")
    await _until_it_ends(terminal, f"{prompt} echo AIOSTACK-PASTE-$((4+4))", "AIOSTACK-PASTE-8", prompt)
    # the up arrow: the last command again, shown as typed
    await page.keyboard.type("echo AIOSTACK-UP-$((2+3))")
    await page.keyboard.press("Enter")
    await _until_it_ends(terminal, "AIOSTACK-UP-5", prompt)
    await page.keyboard.press("ArrowUp")
    await _until_it_ends(terminal, "AIOSTACK-UP-5", f"{prompt} echo AIOSTACK-UP-$((2+3))")
    await page.keyboard.press("Enter")
    await _until_it_ends(terminal, f"{prompt} echo AIOSTACK-UP-$((2+3))", "AIOSTACK-UP-5", prompt)
    # the left arrow: a character put in the middle of the line
    await page.keyboard.type("echo AIOSTACK-MID-ac")
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.type("b")
    await _until_it_ends(terminal, f"{prompt} echo AIOSTACK-MID-abc")
    await page.keyboard.press("Enter")
    await _until_it_ends(terminal, f"{prompt} echo AIOSTACK-MID-abc", "AIOSTACK-MID-abc", prompt)
    lines = await _lines(page)
    assert lines.count("AIOSTACK-UP-5") == 2 and "AIOSTACK-NOT-0" not in lines, lines


async def _console_url(cloud: QemuCloud, server_id: str) -> str:
    body = {"remote_console": {"protocol": "serial", "type": "serial"}}
    path = f"/compute/v2.1/servers/{server_id}/remote-consoles"
    answer = await cloud.client.request("POST", path, body, headers=V26)
    console = answer["remote_console"]
    assert (console["protocol"], console["type"]) == ("serial", "serial")
    return str(console["url"])


async def _read_until(console: SerialConsole, wanted: bytes) -> bytes:
    """What the console says until ``wanted`` has come."""
    said = b""
    async with asyncio.timeout(GUEST_DEADLINE):
        while wanted not in said:
            data = await console.read()
            assert data, f"the console closed before {wanted!r}: {said!r}"
            said += data
    return said


async def test_a_real_guests_serial_console_runs_what_is_typed_and_its_token_opens_it_once(
    qemu_cloud: QemuCloud,
) -> None:
    client = qemu_cloud.client
    server_id = await _boot_with_a_shell(qemu_cloud)
    path = f"/compute/v2.1/servers/{server_id}/remote-consoles"
    with pytest.raises(BadRequest, match="Unavailable console type novnc"):
        await client.request("POST", path, {"remote_console": {"protocol": "vnc", "type": "novnc"}}, V26)

    url = await _console_url(qemu_cloud, server_id)
    assert url.startswith("ws://") and "token=" in url
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("binary",)) as ws:
            assert ws.protocol == "binary"
            await ws.send_bytes(b"echo AIOSTACK-ECHO-$((6*7))\n")
            said = b""
            async with asyncio.timeout(GUEST_DEADLINE):
                while b"AIOSTACK-ECHO-42" not in said:
                    message = await ws.receive()
                    assert message.type == aiohttp.WSMsgType.BINARY, message
                    said += message.data
            # the console log is written while the console is attached
            await qemu_cloud.console_until(server_id, r"AIOSTACK-ECHO-42")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, protocols=("binary",))
        assert refused.value.status == 401

        action = {"os-getSerialConsole": {"type": "serial"}}  # Nova 2.1's way
        answer = await client.request("POST", f"/compute/v2.1/servers/{server_id}/action", action)
        assert answer["console"]["type"] == "serial"
        base64_url = answer["console"]["url"]
        async with session.ws_connect(base64_url, protocols=("base64",)) as ws:
            assert ws.protocol == "base64"
            await ws.send_str(base64.b64encode(b"echo AIOSTACK-B64-$((7*7))\n").decode())
            said = b""
            async with asyncio.timeout(GUEST_DEADLINE):
                while b"AIOSTACK-B64-49" not in said:
                    message = await ws.receive()
                    assert message.type == aiohttp.WSMsgType.TEXT, message
                    said += base64.b64decode(message.data)

    async with client.servers.serial_console(server_id) as console:
        await console.write(b"echo AIOSTACK-SDK-$((2+3))\n")
        await _read_until(console, b"AIOSTACK-SDK-5")

    await _attach_with_the_cli(client.url, server_id)

    await client.server_action(server_id, "stop", wait=True)
    with pytest.raises(Conflict, match="is not ready"):
        await _console_url(qemu_cloud, server_id)
    await client.server_action(server_id, "delete", wait=True)


async def _attach_with_the_cli(url: str, server_id: str) -> None:
    """``aiostack server console ID --attach`` on a pseudo-terminal: it says how to leave, relays a
    command and its output, leaves on Ctrl-] and gives the terminal back as it was."""
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", "server", "--url", url, "--username", "demo",
        "--password", DEMO_PASSWORD, "--project", "demo", "console", server_id, "--attach",
        stdin=terminal, stdout=terminal, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with asyncio.timeout(GUEST_DEADLINE):
            said = await process.stderr.readline()
            assert b"Ctrl-] leaves" in said, said
            assert not termios.tcgetattr(terminal)[3] & termios.ICANON  # raw
            os.write(controller, b"echo AIOSTACK-CLI-$((3*3))\r")
            shown = b""
            while b"AIOSTACK-CLI-9" not in shown:
                shown += await asyncio.to_thread(os.read, controller, 4096)
            os.write(controller, b"\x1d")
            assert await process.wait() == 0
            assert b"Left the console" in await process.stderr.read()
        assert termios.tcgetattr(terminal) == before
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(controller)
        os.close(terminal)


@pytest.mark.full_size
async def test_the_dashboards_serial_console_runs_what_is_typed_in_the_browser(
    qemu_cloud: QemuCloud,
    tmp_path: Path,
) -> None:
    """The web dashboard's instance page opens the guest's serial console in headless Chromium, a
    terminal: keys pressed there go to the guest's shell at once (Ctrl-C stops a ``sleep``, the up
    arrow recalls a command, the left arrow edits one in the middle) and the screen shows what a
    terminal shows; Ctrl+] leaves it for the line form, and closing it leaves the console free for
    the next client."""
    server_id = await _boot_with_a_shell(qemu_cloud, SHELL_IN_ITS_OWN_SESSION)
    deadline = GUEST_DEADLINE * 1000
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
            page = await context.new_page()
            await page.goto(qemu_cloud.client.url)
            form = page.locator("#login-form")
            await form.get_by_label("User").fill("demo")
            await form.get_by_label("Password").fill(DEMO_PASSWORD)
            await form.get_by_label("Project").fill("demo")
            await form.get_by_role("button", name="Log in").click()
            await expect(page.locator("#link-state")).to_have_text("live")
            await page.goto(f"{qemu_cloud.client.url}/#/instances/{server_id}")
            await expect(page.locator("#detail-status")).to_have_text("ACTIVE")
            await page.get_by_role("button", name="Open serial console").click()
            terminal = page.get_by_role("application", name="Serial console")
            await expect(terminal).to_be_focused(timeout=deadline)
            try:
                await _keys_in_the_terminal(page, terminal)
            finally:
                await page.screenshot(path=tmp_path / "dashboard-serial-console.png", full_page=True)
            await page.keyboard.press("Control+BracketRight")
            typed = page.get_by_label("Console input (a whole line)")
            await expect(typed).to_be_focused()
            await page.keyboard.type("echo AIOSTACK-LINE-$((3*3))")
            await page.keyboard.press("Enter")
            await expect(terminal).to_contain_text("AIOSTACK-LINE-9", timeout=deadline)
            await page.get_by_role("button", name="Close serial console").click()
            await expect(page.locator("#serial-state")).to_have_text("Closed.")
        finally:
            await browser.close()
    async with qemu_cloud.client.servers.serial_console(server_id) as console:  # free again
        await console.write(b"echo AIOSTACK-AFTER-$((1+1))\n")
        await _read_until(console, b"AIOSTACK-AFTER-2")
    await qemu_cloud.client.server_action(server_id, "delete", wait=True)
