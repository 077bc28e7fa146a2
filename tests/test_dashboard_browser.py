"""The web dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright), on a
real cloud and gateway: a server is launched, followed to ACTIVE, stopped, resumed after its event
socket was cut, and deleted, all from the page, which makes no REST request while states change.

Screenshots of each step are kept in the test's pytest temporary directory, under
``dashboard-screenshots`` (pytest keeps the last three runs' directories; the path is logged).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.async_api import Page, Request, async_playwright, expect

from bus import Bus
from gateway.app import create_app
from gateway.websocket import SOCKET_COUNTS, SOCKETS
from node.actor import NodeActor
from node.testnode import write_test_node_file
from runtime.config import Config
from tests.conftest import ADMIN_PASSWORD, StartActor
from tests.helpers import DEMO_PASSWORD, Api

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
STATE_TIMEOUT_MS = 30_000
HOST_DOWN_AFTER = 4.0
"""Seconds without a report after which the scheduler calls a host down (``host_down_after``)."""


@pytest.fixture
async def gateway(config: Config, cloud) -> AsyncIterator[tuple[str, web.Application]]:
    """The gateway on a loopback HTTP server, with its app (to cut the page's event socket)."""
    gateway_bus = await Bus.connect(config.nats_url, prefix=config.prefix, name="gateway")
    app = create_app(gateway_bus)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()
        await gateway_bus.close()


class Requests:
    """Every HTTP request the page makes (its document and assets too), as ``METHOD /path``."""

    def __init__(self, page: Page) -> None:
        self.made: list[str] = []
        page.on("request", self.record)

    def record(self, request: Request) -> None:
        self.made.append(f"{request.method} {urlsplit(request.url).path}")

    def since(self, mark: int) -> list[str]:
        return self.made[mark:]


async def cut_and_hold(app: web.Application) -> str:
    """Close the page's event socket from the gateway's side and refuse its user another one (429)
    until ``release``: the user whose sockets are held."""
    counts = app[SOCKET_COUNTS]
    (user,) = counts.held
    counts.held[user] += 10_000
    for ws in list(app[SOCKETS]):
        await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"test: cut")
    return user


def release(app: web.Application, user: str) -> None:
    app[SOCKET_COUNTS].held[user] -= 10_000


async def second_project_with_a_server(api: Api) -> str:
    """Make demo a member of a second project (``second``) holding an ACTIVE server, other-1; and
    boot admin-1 in the admin project."""
    await api.login("admin", ADMIN_PASSWORD, "admin")
    await api.boot_tiny("admin-1")
    status, created = await api.post("/identity/v3/projects", {"project": {"name": "second"}})
    assert status == 201, created
    _, users = await api.get("/identity/v3/users?name=demo")
    grant = f"/identity/v3/projects/{created['project']['id']}/users/{users['users'][0]['id']}/roles/member"
    assert (await api.put(grant))[0] == 204
    await api.login(project="second")
    server_id = await api.boot_tiny("other-1")
    await wait_for_status(api, server_id, "ACTIVE")
    return server_id


async def available_volume(api: Api, name: str) -> str:
    """A new 1 GiB volume of demo's project, once available: its id."""
    await api.login()
    path = f"/volume/v3/{api.project_id}/volumes"
    status, created = await api.post(path, {"volume": {"size": 1, "name": name}})
    assert status == 202, created
    volume_id = str(created["volume"]["id"])
    async with asyncio.timeout(30):
        while (await api.get(f"{path}/{volume_id}"))[1]["volume"]["status"] != "available":
            await asyncio.sleep(0.1)
    return volume_id


async def free_floating_ip(api: Api) -> str:
    """A floating IP of demo's, on no port, from a new external network that a router of the
    admin's joins to the default network: its address."""
    await api.login("admin", ADMIN_PASSWORD, "admin")
    net = "/network/v2.0"
    status, public = await api.post(
        f"{net}/networks", {"network": {"name": "public", "router:external": True}}
    )
    assert status == 201, public
    public_id = public["network"]["id"]
    subnet = {"subnet": {"network_id": public_id, "cidr": "203.0.113.0/24", "ip_version": 4}}
    assert (await api.post(f"{net}/subnets", subnet))[0] == 201
    _, default = await api.get(f"{net}/subnets?cidr=10.20.0.0/16")
    router = {"router": {"name": "edge", "external_gateway_info": {"network_id": public_id}}}
    status, made = await api.post(f"{net}/routers", router)
    assert status == 201, made
    joined = {"subnet_id": default["subnets"][0]["id"]}
    status, body = await api.put(f"{net}/routers/{made['router']['id']}/add_router_interface", joined)
    assert status == 200, body
    await api.login()
    status, floating = await api.post(
        f"{net}/floatingips", {"floatingip": {"floating_network_id": public_id}}
    )
    assert status == 201, floating
    return str(floating["floatingip"]["floating_ip_address"])


async def wait_for_status(api: Api, server_id: str, status: str) -> None:
    async with asyncio.timeout(30):
        while (await api.get(f"/compute/v2.1/servers/{server_id}"))[1]["server"]["status"] != status:
            await asyncio.sleep(0.1)


async def until_running_vms(page: Page, total: int) -> None:
    """Until the hypervisors' instance counts on the page add up to ``total`` (asked by ``evaluate``:
    the page's CSP refuses the string evaluation ``wait_for_function`` polls with)."""
    cells = "document.querySelectorAll('#hypervisor-rows td:nth-child(6)')"
    counted = f"[...{cells}].reduce((sum, cell) => sum + Number(cell.textContent), 0)"
    async with asyncio.timeout(STATE_TIMEOUT_MS / 1000):
        while await page.evaluate(counted) != total:
            await asyncio.sleep(0.05)


async def start_node(start_actor: StartActor, config: Config, host: str) -> NodeActor:
    """Another test-driver node, as the ``cloud`` fixture starts them, once it has reported."""
    uri = write_test_node_file(config.data_dir / "nodes" / host / "testnode.xml", vcpus=64, memory_mb=65536)
    node = await start_actor(
        NodeActor, config, host=host, libvirt_uri=uri, secure=True, report_interval=HOST_DOWN_AFTER / 8
    )
    assert isinstance(node, NodeActor)
    await node.report_capacity()
    return node


def accept_dialog(page: Page) -> None:
    """Accept the next dialog (a ``confirm``) the page opens."""
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))


async def router_changes(page: Page, requests: Requests, shots: Path) -> None:
    """Routers, as demo: one made with no gateway, given the external network's and an interface on
    web-net's subnet (from the keyboard), refused deletion while it has it (the service's message
    shown), the interface removed from the keyboard, the gateway cleared and the router deleted;
    each change shown from its router event, nothing read again."""
    routers = page.get_by_role("table", name="Routers")
    interfaces = page.get_by_role("table", name="Router interfaces")
    await expect(interfaces).to_contain_text("No router interfaces.")
    await expect(page.get_by_text("No routers.")).to_be_visible()
    making = page.get_by_role("form", name="Create a router")
    await making.get_by_label("Router name").fill("web-router")
    await expect(making.get_by_label("External gateway")).to_have_value("")  # none
    mark = len(requests.made)
    await making.get_by_role("button", name="Create router").click()
    row = routers.get_by_role("row", name=re.compile("^web-router "))
    gateway = row.locator("[data-field=gateway]")
    await expect(gateway).to_have_text("none")
    router_id = await row.get_attribute("data-id")

    setting = page.get_by_role("form", name="Set a router's gateway")
    await setting.get_by_label("Router").select_option(label="web-router")
    await setting.get_by_label("Gateway network").select_option(label="public")
    await setting.get_by_role("button", name="Set gateway").click()
    await expect(gateway).to_have_text("public")

    adding = page.get_by_role("form", name="Add a router interface")
    await adding.get_by_label("Router to connect").select_option(label="web-router")
    await adding.get_by_label("Subnet").select_option(label="web-net-subnet (10.30.0.0/24)")
    await adding.get_by_label("Subnet").focus()
    await page.keyboard.press("Tab")
    await expect(adding.get_by_role("button", name="Add interface")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(row.locator("[data-field=interfaces]")).to_have_text("10.30.0.1")
    await expect(interfaces.get_by_role("row", name=re.compile("^web-router "))).to_contain_text("10.30.0.1")
    path = f"/network/v2.0/routers/{router_id}"
    assert requests.since(mark) == [
        "POST /network/v2.0/routers",
        f"PUT {path}",
        f"PUT {path}/add_router_interface",
    ]
    await page.screenshot(path=shots / "routers.png", full_page=True)

    accept_dialog(page)
    await row.get_by_role("button", name="Delete router web-router").click()
    await expect(page.get_by_role("alert")).to_have_text(f"Router {router_id} still has ports")
    remove = interfaces.get_by_role(
        "button", name="Remove the interface of router web-router on web-net-subnet (10.30.0.0/24)"
    )
    await remove.focus()
    await page.keyboard.press("Enter")
    await expect(interfaces).to_contain_text("No router interfaces.")
    await expect(page.locator("#interfaces-title")).to_be_focused()
    await expect(row.locator("[data-field=interfaces]")).to_have_text("")
    await expect(page.get_by_role("alert")).to_be_hidden()

    clear = row.get_by_role("button", name="Clear the external gateway of router web-router")
    await clear.click()
    await expect(gateway).to_have_text("none")
    await expect(clear).to_be_disabled()
    accept_dialog(page)
    await row.get_by_role("button", name="Delete router web-router").click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#router-title")).to_be_focused()
    await expect(page.get_by_text("No routers.")).to_be_visible()
    assert [made for made in requests.since(mark) if not made.startswith(("PUT", "DELETE"))] == [
        "POST /network/v2.0/routers"
    ]


async def network_changes(page: Page, requests: Requests, shots: Path) -> None:
    """The network page's changes, as demo: a network made with its subnet and deleted (one whose
    subnet is refused is not left behind), a router edited on it (``router_changes``), a floating
    IP allocated from the external network and released (each list read again after), a security
    group made, given a rule (a second time refused), the rule deleted from the keyboard and the
    group deleted, each shown from its security group event."""
    networks = page.get_by_role("table", name="Networks")
    making = page.get_by_role("form", name="Create a network")
    await making.get_by_label("Network name").fill("bad-net")
    await making.get_by_label("Subnet CIDR").fill("10.30.0.0/99")
    await making.get_by_role("button", name="Create network").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await making.get_by_label("Subnet CIDR").fill("10.30.0.0/24")
    await making.get_by_label("Network name").fill("web-net")
    await making.get_by_role("button", name="Create network").click()
    await expect(networks.get_by_role("row", name=re.compile("web-net"))).to_contain_text("10.30.0.0/24")
    await expect(networks.get_by_role("rowheader", name="bad-net")).to_have_count(0)  # deleted again
    await expect(page.get_by_role("alert")).to_be_hidden()
    await router_changes(page, requests, shots)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete network web-net").click()
    await expect(networks.get_by_role("rowheader", name="web-net")).to_have_count(0)

    floating = page.get_by_role("table", name="Floating IPs")
    await expect(floating).to_contain_text("No floating IPs.")
    allocating = page.get_by_role("form", name="Allocate a floating IP")
    await allocating.get_by_label("External network").select_option(label="public")
    await allocating.get_by_role("button", name="Allocate floating IP").click()
    allocated = floating.get_by_role("row", name=re.compile("203\\.0\\.113\\."))
    await expect(allocated).to_contain_text("not associated")
    address = await allocated.get_by_role("rowheader").text_content()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name=f"Release floating IP {address}").click()
    await expect(floating).to_contain_text("No floating IPs.")

    groups = page.get_by_role("table", name="Security groups")
    creating = page.get_by_role("form", name="Create a security group")
    await creating.get_by_label("Group name").fill("web")
    await creating.get_by_label("Group description").fill("the web servers")
    await creating.get_by_role("button", name="Create security group").click()
    web = groups.get_by_role("row", name=re.compile("^web "))
    await expect(web).to_contain_text("the web servers")
    adding = page.get_by_role("form", name="Add a rule")
    mark = len(requests.made)
    for _ in range(2):  # the same rule twice: the second is refused with the service's message
        await adding.get_by_label("To group").select_option(label="web")
        await adding.get_by_label("Protocol").select_option("tcp")
        await adding.get_by_label("Port (empty: all)").fill("22")
        await adding.get_by_label("Remote CIDR (empty: anywhere)").fill("0.0.0.0/0")
        await adding.get_by_role("button", name="Add rule").click()
        await expect(web).to_contain_text("ingress IPv4 tcp 22 from 0.0.0.0/0")
    await expect(page.get_by_role("alert")).to_contain_text("Security group rule already exists.")
    assert requests.since(mark) == ["POST /network/v2.0/security-group-rules"] * 2
    await page.screenshot(path=shots / "network.png", full_page=True)
    rules = page.get_by_role("table", name="Security group rules")
    mark = len(requests.made)
    accept_dialog(page)
    await rules.get_by_role("button", name="Delete rule ingress IPv4 tcp 22 from 0.0.0.0/0 of web").focus()
    await page.keyboard.press("Enter")
    await expect(web).not_to_contain_text("tcp 22")
    await expect(rules).not_to_contain_text("tcp 22")
    await expect(page.locator("#rules-title")).to_be_focused()
    await expect(page.get_by_role("alert")).to_be_hidden()
    (deleted,) = requests.since(mark)
    assert deleted.startswith("DELETE /network/v2.0/security-group-rules/")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete security group web").click()
    await expect(groups.get_by_role("rowheader")).to_have_text(["default"])


async def admin_overview(
    page: Page, api: Api, requests: Requests, shots: Path, start_actor: StartActor, config: Config
) -> None:
    """The overview as an admin (of the admin project, which holds admin-1): its quotas, each
    host's vCPUs and RAM charted, the compute services disabled and enabled again; a server booted
    behind the page's back shows on its host's figures and the project's quotas, no reload asked;
    a new node shows up, and down when it stops, from their node events alone."""
    await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Overview").click()
    await expect(page.locator("#overview-title")).to_be_focused()
    quotas = page.get_by_role(
        "img", name=re.compile(r"^Quotas of project admin: Instances 1 of (unlimited|\d+)")
    )
    await expect(quotas).to_be_visible()
    await expect(page.locator("#overview-link")).to_have_text("live")
    await expect(page.locator("#hypervisor-rows tr")).to_have_count(2)
    vcpus = page.get_by_role("img", name=re.compile(r"^vCPUs used by host: node-1 \d+ of \d+ vCPUs; node-2 "))
    await expect(vcpus).to_be_visible()
    await expect(vcpus.locator("g[data-label]")).to_have_count(2)
    await until_running_vms(page, 2)  # admin-1 and other-1
    await expect(page.locator("[data-fact='vCPU hours']")).to_have_text(re.compile(r"^\d+\.\d\d$"))

    mark = len(requests.made)
    await api.login("admin", ADMIN_PASSWORD, "admin")
    await wait_for_status(api, await api.boot_tiny("admin-2"), "ACTIVE")
    await until_running_vms(page, 3)
    quotas = page.get_by_role("img", name=re.compile("^Quotas of project admin: Instances 2 of "))
    await expect(quotas).to_be_visible()
    assert "GET /compute/v2.1/os-hypervisors/detail" in requests.since(mark)  # read again on its events
    await page.screenshot(path=shots / "8-overview.png", full_page=True)

    services = page.locator("#service-rows tr")
    await expect(services.locator("[data-field=state]")).to_have_text(["up", "up"])
    await page.get_by_role("button", name="Disable nova-compute on node-2").click()
    await expect(page.get_by_role("button", name="Enable nova-compute on node-2")).to_be_focused()
    await expect(services.locator("[data-field=status]")).to_have_text(["enabled", "disabled"])
    _, listed = await api.get("/compute/v2.1/os-services?host=node-2")
    assert listed["services"][0]["status"] == "disabled"
    await page.keyboard.press("Enter")
    await expect(services.locator("[data-field=status]")).to_have_text(["enabled", "enabled"])

    mark = len(requests.made)  # a new host reports: its node.up event alone puts it on the page
    node = await start_node(start_actor, config, "node-3")
    await expect(page.locator("#hypervisor-rows tr[data-host=node-3]")).to_contain_text("0 / 64")
    await expect(services.locator("[data-field=state]")).to_have_text(["up", "up", "up"])
    await expect(page.get_by_role("log")).to_contain_text("Host node-3 is up.")
    await node.stop()  # no more reports: the scheduler's node.down event marks it down on the page
    hypervisor_state = page.locator("#hypervisor-rows tr[data-host=node-3] [data-field=state]")
    await expect(hypervisor_state).to_have_text("down", timeout=STATE_TIMEOUT_MS)
    await expect(services.locator("[data-field=state]")).to_have_text(["up", "up", "down"])
    await expect(hypervisor_state).to_have_attribute("data-state", "down")  # styled as such
    await expect(page.get_by_role("log")).to_contain_text("Host node-3 is down.")
    await page.screenshot(path=shots / "8-host-down.png", full_page=True)
    assert requests.since(mark) == []


async def identity_admin(page: Page, shots: Path) -> None:
    """The identity page as an admin: a project and a user made, a role granted and revoked, both
    deleted again, each list read again after each change."""
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Identity").click()
    await expect(page.locator("#identity-title")).to_be_focused()
    projects = page.get_by_role("table", name="Projects")
    users = page.get_by_role("table", name="Users")
    assignments = page.get_by_role("table", name="Role assignments")
    await expect(projects.get_by_role("rowheader", name="second")).to_be_visible()
    creating = page.get_by_role("form", name="Create a project")
    await creating.get_by_label("Project name").fill("web-project")
    await creating.get_by_label("Description").fill("made in the browser")
    await creating.get_by_role("button", name="Create project").click()
    made = projects.get_by_role("row", name=re.compile("web-project"))
    await expect(made).to_contain_text("made in the browser")
    creating = page.get_by_role("form", name="Create a user")
    await creating.get_by_label("User name").fill("web-user")
    await creating.get_by_label("Password").fill("a-long-password-1")
    await creating.get_by_role("button", name="Create user").click()
    await expect(users.get_by_role("rowheader", name="web-user")).to_be_visible()
    granting = page.get_by_role("form", name="Grant a role")
    await granting.get_by_label("User").select_option(label="web-user")
    await granting.get_by_label("On project").select_option(label="web-project")
    await granting.get_by_label("Role").select_option(label="member")
    await granting.get_by_role("button", name="Grant role").click()
    granted = assignments.get_by_role("row").filter(has_text="web-user")
    await expect(granted).to_have_text(re.compile("web-user\\s*web-project\\s*member"))
    await page.screenshot(path=shots / "9-identity.png", full_page=True)
    await page.get_by_role("button", name="Revoke member of web-user on web-project").click()
    await expect(granted).to_have_count(0)
    await page.get_by_role("button", name="Delete user web-user").click()
    await expect(users.get_by_role("rowheader", name="web-user")).to_have_count(0)
    await page.get_by_role("button", name="Delete project web-project").click()
    await expect(projects.get_by_role("rowheader", name="web-project")).to_have_count(0)


@pytest.mark.nodes(2)
@pytest.mark.host_down_after(HOST_DOWN_AFTER)
async def test_the_dashboard_follows_a_server_live_without_polling(
    gateway: tuple[str, web.Application], tmp_path: Path, start_actor: StartActor, config: Config
) -> None:
    url, app = gateway
    shots = tmp_path / "dashboard-screenshots"
    log.info("dashboard screenshots: %s", shots)
    async with aiohttp.ClientSession() as session, async_playwright() as playwright:
        api = Api(session, url)
        other_server = await second_project_with_a_server(api)
        volume = await available_volume(api, "data-1")
        floating_ip = await free_floating_ip(api)
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page()
            requests = Requests(page)
            await page.goto(url)
            form = page.locator("#login-form")
            await expect(form.get_by_label("User")).to_be_focused()  # the keyboard alone logs in
            for text in ("demo", DEMO_PASSWORD, None, "demo"):
                if text is not None:
                    await page.keyboard.type(text)
                await page.keyboard.press("Tab")
            await expect(form.get_by_role("button", name="Log in")).to_be_focused()
            await page.keyboard.press("Enter")
            await expect(page.locator("#link-state")).to_have_text("live")
            await expect(page.locator("#no-instances")).to_be_visible()
            await page.screenshot(path=shots / "1-instances.png", full_page=True)
            token = await page.evaluate("JSON.parse(sessionStorage.getItem('aiostack.session')).token")
            assert token and not any(token in made for made in requests.made)

            await page.get_by_role("button", name="Launch instance").click()
            launch = page.locator("#launch-form")
            await expect(launch.get_by_label("Name")).to_be_focused()
            await page.keyboard.press("Escape")  # closes the wizard, back on the button that opened it
            await expect(launch).to_be_hidden()
            await expect(page.get_by_role("button", name="Launch instance")).to_be_focused()
            await page.keyboard.press("Enter")
            await expect(launch.get_by_label("Name")).to_be_focused()
            await launch.get_by_label("Name").fill("web-1")
            await expect(launch.get_by_label("Boot volume", exact=True)).to_be_hidden()
            await launch.get_by_label("Boot from").select_option(value="new-volume")
            await launch.get_by_label("Image").select_option(label="aiostack-tiny")
            await launch.get_by_label("Boot volume size (GiB)").fill("1")
            await launch.get_by_label("Flavor").select_option(value="1")
            await launch.get_by_label("Key pair").select_option(value="")
            await expect(launch.get_by_role("checkbox", name="default")).to_be_checked()
            await launch.get_by_label("Attach an existing volume").select_option(value=volume)
            mark = len(requests.made)
            await launch.get_by_role("button", name="Launch", exact=True).click()
            row = page.locator("#instance-rows tr", has_text="web-1")
            await expect(row.locator("[data-field=status]")).to_have_text("ACTIVE", timeout=STATE_TIMEOUT_MS)
            project = await page.evaluate("JSON.parse(sessionStorage.getItem('aiostack.session')).project.id")
            made = requests.since(mark)
            assert made == [f"POST /volume/v3/{project}/volumes", "POST /compute/v2.1/servers"]
            server_id = await row.get_attribute("data-id")
            await expect(page.get_by_role("log")).to_contain_text("Instance web-1 is now ACTIVE.")
            await page.screenshot(path=shots / "2-active.png", full_page=True)

            await row.get_by_role("link", name="web-1").click()
            await expect(page.locator("#detail-title")).to_have_text("web-1")
            mark = len(requests.made)
            await page.get_by_role("button", name="Show console log").click()
            await expect(page.locator("#console-log")).to_be_visible()
            await expect(page.locator("#console-log")).not_to_be_empty()  # test driver: it says it has none
            assert f"POST /compute/v2.1/servers/{server_id}/action" in requests.since(mark)
            await expect(page.locator("#timeline li")).not_to_have_count(0)
            attached = page.locator("#volumes li")
            await expect(attached).to_have_count(2)  # the boot volume made from the image, and data-1
            await expect(attached.filter(has_text=volume)).to_contain_text("Detach")
            await expect(page.locator("#ports tr")).to_have_count(1)
            await page.get_by_role("button", name="Open serial console").click()  # the test driver has none
            await expect(page.locator("#serial-state")).to_have_text(re.compile("^No serial console: "))
            await page.screenshot(path=shots / "3-console.png", full_page=True)

            # data-1 detached and attached again from the page: the list follows its volume events
            mark = len(requests.made)
            await page.get_by_role("button", name=f"Detach volume {volume}").click()
            await expect(attached).to_have_count(1, timeout=STATE_TIMEOUT_MS)
            await page.get_by_label("Volume to attach").select_option(value=volume)
            await page.get_by_role("button", name="Attach volume").click()
            await expect(attached.filter(has_text=volume)).to_have_count(1, timeout=STATE_TIMEOUT_MS)
            made = requests.since(mark)
            assert made[0] == f"DELETE /compute/v2.1/servers/{server_id}/os-volume_attachments/{volume}"
            assert f"POST /compute/v2.1/servers/{server_id}/os-volume_attachments" in made

            # the free floating IP put on web-1's port and taken off again (no events: read again)
            floating = page.locator("#floating-ips li")
            await expect(floating).to_have_text(["No floating IPs."])
            await page.get_by_label("Free floating IP").select_option(label=floating_ip)
            await page.get_by_role("button", name="Associate floating IP").click()
            await expect(floating).to_have_text([re.compile(f"^{re.escape(floating_ip)} to 10\\.20\\.")])
            await page.get_by_role("button", name=f"Disassociate floating IP {floating_ip}").click()
            await expect(floating).to_have_text(["No floating IPs."])
            _, boot = await api.get(f"/volume/v3/{project}/volumes?name=web-1-boot")
            (boot_volume,) = boot["volumes"]

            actions = page.locator("#detail-actions")
            status = page.locator("#detail-status")
            await expect(page.locator("#detail-flavor")).to_have_text("m1.tiny")
            mark = len(requests.made)
            await page.get_by_label("New flavor").select_option(value="2")
            await page.get_by_role("button", name="Resize", exact=True).click()
            await expect(status).to_have_text("VERIFY_RESIZE", timeout=STATE_TIMEOUT_MS)
            await expect(page.locator("#detail-flavor")).to_have_text("m1.small")
            await actions.get_by_role("button", name="Confirm resize web-1").click()
            await expect(status).to_have_text("ACTIVE", timeout=STATE_TIMEOUT_MS)
            assert requests.since(mark) == [f"POST /compute/v2.1/servers/{server_id}/action"] * 2

            mark = len(requests.made)
            await actions.get_by_role("button", name="Stop web-1").click()
            await expect(page.locator("#detail-status")).to_have_text("SHUTOFF", timeout=STATE_TIMEOUT_MS)
            assert requests.since(mark) == [f"POST /compute/v2.1/servers/{server_id}/action"]
            await expect(page.locator("#events li").first).to_have_text(re.compile(r"instance\.shutoff$"))
            await page.screenshot(path=shots / "4-shutoff.png", full_page=True)

            # the socket is cut and refused while the server is started behind the page's back:
            # once back, the page resumes after the last event it saw and shows what it missed
            mark = len(requests.made)
            user = await cut_and_hold(app)
            await expect(page.locator("#link-state")).to_have_text("reconnecting")
            await api.login()
            status, _ = await api.post(f"/compute/v2.1/servers/{server_id}/action", {"os-start": None})
            assert status == 202
            await wait_for_status(api, server_id, "ACTIVE")
            assert await page.locator("#detail-status").text_content() == "SHUTOFF"
            release(app, user)
            await expect(page.locator("#detail-status")).to_have_text("ACTIVE", timeout=STATE_TIMEOUT_MS)
            await expect(page.locator("#link-state")).to_have_text("live")
            assert requests.since(mark) == []

            mark = len(requests.made)
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await actions.get_by_role("button", name="Delete web-1").click()
            await expect(page.locator("#detail-status")).to_have_text("DELETED", timeout=STATE_TIMEOUT_MS)
            await expect(page.locator("#ports tr")).to_have_count(0)  # its port's deleted event
            await page.get_by_role("link", name="All instances").click()
            await expect(page.locator("#no-instances")).to_be_visible()
            made = requests.since(mark)
            assert made[0] == f"DELETE /compute/v2.1/servers/{server_id}"
            reread = {
                f"GET /compute/v2.1/servers/{server_id}/os-volume_attachments",
                f"GET /volume/v3/{project}/volumes/detail",
            }
            assert set(made[1:]) <= reread  # its volumes' events (detached) have them read again
            await expect(page.get_by_role("alert")).to_be_hidden()
            await page.screenshot(path=shots / "5-deleted.png", full_page=True)
            await api.login()
            async with asyncio.timeout(30):  # the boot volume the page made goes with its server
                while (await api.get(f"/volume/v3/{project}/volumes/{boot_volume['id']}"))[0] != 404:
                    await asyncio.sleep(0.1)
            assert requests.made.count("GET /compute/v2.1/servers/detail") == 1  # the initial load only

            await page.locator("#project-switch").select_option(label="second")
            other = page.locator("#instance-rows tr", has_text="other-1")
            await expect(other.locator("[data-field=status]")).to_have_text(
                "ACTIVE", timeout=STATE_TIMEOUT_MS
            )
            assert await other.get_attribute("data-id") == other_server
            await expect(page.locator("#link-state")).to_have_text("live")
            assert requests.made.count("GET /compute/v2.1/servers/detail") == 2  # the new project's
            await page.screenshot(path=shots / "6-second-project.png", full_page=True)
            await expect(page.get_by_role("columnheader", name="Host")).to_be_hidden()  # not an admin
            await expect(other.get_by_role("button", name="Live migrate other-1")).to_be_hidden()

            await page.get_by_role("button", name="Log out").click()
            await form.get_by_label("User").fill("admin")
            await form.get_by_label("Password").fill(ADMIN_PASSWORD)
            await form.get_by_label("Project").fill("admin")
            await form.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("columnheader", name="Host")).to_be_visible()
            admins = page.locator("#instance-rows tr", has_text="admin-1")
            await expect(admins.locator("[data-field=status]")).to_have_text(
                "ACTIVE", timeout=STATE_TIMEOUT_MS
            )
            host = admins.locator("[data-field=host]")
            await expect(host).to_have_text(re.compile("^node-[12]$"))
            source = await host.text_content()
            await expect(page.locator("#instance-rows tr")).to_have_count(1)  # its project's only
            mark = len(requests.made)
            await admins.get_by_role("button", name="Live migrate admin-1").click()
            destination = {"node-1": "node-2", "node-2": "node-1"}[source or ""]
            await expect(host).to_have_text(destination, timeout=STATE_TIMEOUT_MS)
            await expect(admins.locator("[data-field=status]")).to_have_text(
                "ACTIVE", timeout=STATE_TIMEOUT_MS
            )
            admin_server = await admins.get_attribute("data-id")
            assert requests.since(mark) == [f"POST /compute/v2.1/servers/{admin_server}/action"]
            await page.screenshot(path=shots / "7-admin-migrated.png", full_page=True)
            await admin_overview(page, api, requests, shots, start_actor, config)
            await identity_admin(page, shots)
        finally:
            await browser.close()


async def test_the_images_volumes_network_and_key_pairs_pages(
    gateway: tuple[str, web.Application], tmp_path: Path
) -> None:
    url, _ = gateway
    shots = tmp_path / "dashboard-screenshots"
    async with aiohttp.ClientSession() as session:  # demo's quotas, which the overview charts
        api = Api(session, url)
        await api.login()
        demo = api.project_id
        await api.login("admin", ADMIN_PASSWORD, "admin")
        quota_set = {"quota_set": {"instances": 10, "cores": 20}}
        assert (await api.put(f"/compute/v2.1/os-quota-sets/{demo}", quota_set))[0] == 200
        external = {"network": {"name": "public", "router:external": True}}
        status, public = await api.post("/network/v2.0/networks", external)
        assert status == 201, public
        subnet = {
            "subnet": {"network_id": public["network"]["id"], "cidr": "203.0.113.0/24", "ip_version": 4}
        }
        assert (await api.post("/network/v2.0/subnets", subnet))[0] == 201
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page()
            requests = Requests(page)
            await page.goto(url)
            form = page.locator("#login-form")
            await form.get_by_label("User").fill("demo")
            await form.get_by_label("Password").fill(DEMO_PASSWORD)
            await form.get_by_label("Project").fill("demo")
            await form.get_by_role("button", name="Log in").click()
            await expect(page.locator("#link-state")).to_have_text("live")
            project = await page.evaluate("JSON.parse(sessionStorage.getItem('aiostack.session')).project.id")
            await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Images").click()
            rows = page.locator("#image-rows tr")
            tiny = rows.filter(has_text="aiostack-tiny")
            await expect(tiny.locator("[data-field=status]")).to_have_text("active")

            upload = page.locator("#upload-form")
            await upload.get_by_label("Name").fill("blob")
            await upload.get_by_label("Disk format").select_option("raw")
            data = bytes(range(256)) * 1024
            await upload.get_by_label("File").set_input_files(
                files=[{"name": "blob.raw", "mimeType": "application/octet-stream", "buffer": data}]
            )
            mark = len(requests.made)
            await upload.get_by_role("button", name="Upload").click()
            blob = rows.filter(has_text="blob")
            await expect(blob.locator("[data-field=status]")).to_have_text("active", timeout=STATE_TIMEOUT_MS)
            await expect(blob.locator("[data-field=size]")).to_have_text("256.0 KiB")
            await expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
            image_id = await blob.get_attribute("data-id")
            assert requests.since(mark) == ["POST /image/v2/images", f"PUT /image/v2/images/{image_id}/file"]
            await page.screenshot(path=shots / "images.png", full_page=True)

            mark = len(requests.made)
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await blob.get_by_role("button", name="Delete image blob").click()
            await expect(blob).to_have_count(0)
            assert requests.since(mark) == [f"DELETE /image/v2/images/{image_id}"]
            assert requests.made.count("GET /image/v2/images") == 1  # the listing, read once

            await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Key pairs").click()
            keys = page.locator("#keypair-form")
            await keys.get_by_label("Name").fill("generated")
            await keys.get_by_role("button", name="Create key pair").click()
            await expect(page.get_by_label("Private key (shown once: save it now)")).to_have_value(
                re.compile("PRIVATE KEY")
            )
            async with page.expect_download() as saving:
                await page.get_by_role("link", name="Save the private key").click()
            saved = await saving.value
            assert saved.suggested_filename == "generated.pem"
            assert "PRIVATE KEY" in Path(await saved.path()).read_text()
            public = (
                Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
            )
            await keys.get_by_label("Name").fill("imported")
            await keys.get_by_label("Public key to import (empty: generate one)").fill(public.decode())
            await keys.get_by_role("button", name="Create key pair").click()
            await expect(page.locator("#keypair-rows th")).to_have_text(["generated", "imported"])
            await expect(page.locator("#private-key")).to_be_hidden()
            await page.screenshot(path=shots / "keypairs.png", full_page=True)
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.get_by_role("button", name="Delete key pair generated").click()
            await expect(page.locator("#keypair-rows th")).to_have_text(["imported"])

            mark = len(requests.made)
            await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Volumes").click()
            await expect(page.locator("#volumes-title")).to_be_focused()
            volumes = page.locator("#volume-form")
            await volumes.get_by_label("Name").fill("vol-1")
            await volumes.get_by_label("Size (GiB)").fill("2")
            await volumes.get_by_role("button", name="Create volume").click()
            made = page.locator("#volume-rows tr", has_text="vol-1")
            await expect(made.locator("[data-field=status]")).to_have_text(
                "available", timeout=STATE_TIMEOUT_MS
            )
            await expect(made.locator("[data-field=size]")).to_have_text("2 GiB")
            assert requests.since(mark) == [
                f"GET /volume/v3/{project}/snapshots/detail",
                f"GET /volume/v3/{project}/volumes/detail",
                f"POST /volume/v3/{project}/volumes",
            ]
            volume_id = await made.get_attribute("data-id")

            # a snapshot of vol-1 (no events: the list is read again after the page's changes)
            await made.get_by_role("button", name="Snapshot volume vol-1").click()
            snapshots = page.get_by_role("table", name="Snapshots")
            snapshot = snapshots.get_by_role("row", name=re.compile("vol-1-snap"))
            await expect(snapshot.locator("[data-field=status]")).to_have_text("available")
            await expect(snapshot).to_contain_text("vol-1")
            await page.screenshot(path=shots / "snapshots.png", full_page=True)
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await snapshot.get_by_role("button", name="Delete snapshot vol-1-snap").click()
            await expect(snapshot).to_have_count(0)
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            mark = len(requests.made)
            await made.get_by_role("button", name="Delete volume vol-1").click()
            await expect(made).to_have_count(0, timeout=STATE_TIMEOUT_MS)
            assert requests.since(mark) == [f"DELETE /volume/v3/{project}/volumes/{volume_id}"]
            await page.screenshot(path=shots / "volumes.png", full_page=True)

            await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Network").click()
            networks = page.get_by_role("table", name="Networks")
            await expect(networks.get_by_role("row", name=re.compile("default"))).to_contain_text(
                "10.20.0.0/16"
            )
            groups = page.get_by_role("table", name="Security groups")
            await expect(groups.get_by_role("rowheader")).to_have_text(["default"])
            await network_changes(page, requests, shots)

            # the overview as a member: the project's quotas and usage; no hypervisor, no identity page
            nav = page.get_by_role("navigation", name="Pages")
            await expect(nav.get_by_role("link", name="Identity")).to_be_hidden()
            await nav.get_by_role("link", name="Overview").click()
            await expect(page.locator("#overview-title")).to_be_focused()
            quotas = page.get_by_role(
                "img", name=re.compile("^Quotas of project demo: Instances 0 of 10; vCPUs 0 of 20;")
            )
            await expect(quotas).to_be_visible()
            hours = page.locator("[data-fact='Instance hours']")
            await expect(hours).to_have_text(re.compile(r"^\d+\.\d\d$"))
            await expect(page.get_by_role("table", name="Hypervisors")).to_be_hidden()
            assert not [made for made in requests.made if "os-hypervisors" in made or "os-services" in made]
            await page.screenshot(path=shots / "overview-member.png", full_page=True)
            await page.goto(f"{url}/#/identity")
            await expect(page.locator("#instances-title")).to_be_focused()  # not an admin's: instances

            # the token revoked: the event socket is closed (4001) and the page asks for a login
            token = await page.evaluate("JSON.parse(sessionStorage.getItem('aiostack.session')).token")
            async with aiohttp.ClientSession() as session:
                revoke = {"X-Auth-Token": token, "X-Subject-Token": token}
                async with session.delete(f"{url}/identity/v3/auth/tokens", headers=revoke) as response:
                    assert response.status == 204
            await expect(page.locator("#login-form")).to_be_visible(timeout=STATE_TIMEOUT_MS)
            await expect(page.get_by_role("alert")).to_have_text("Your session has ended: log in again.")
            assert await page.evaluate("sessionStorage.getItem('aiostack.session')") is None
        finally:
            await browser.close()
