"""The web dashboard as the gateway serves it: the page at ``/`` for browsers only, its assets with
their media types and a strict Content-Security-Policy, and the event socket's token in the
WebSocket subprotocols (never in a URL)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import aiohttp
import pytest

from gateway.dashboard import CSP
from tests.helpers import Api

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
ASSETS = {
    "/dashboard/app.js": "text/javascript",
    "/dashboard/api.js": "text/javascript",
    "/dashboard/events.js": "text/javascript",
    "/dashboard/store.js": "text/javascript",
    "/dashboard/instances.js": "text/javascript",
    "/dashboard/detail.js": "text/javascript",
    "/dashboard/images.js": "text/javascript",
    "/dashboard/keypairs.js": "text/javascript",
    "/dashboard/live.js": "text/javascript",
    "/dashboard/networks.js": "text/javascript",
    "/dashboard/volumes.js": "text/javascript",
    "/dashboard/overview.js": "text/javascript",
    "/dashboard/chart.js": "text/javascript",
    "/dashboard/identity.js": "text/javascript",
    "/dashboard/console.js": "text/javascript",
    "/dashboard/terminal.js": "text/javascript",
    "/dashboard/style.css": "text/css",
}


def assert_strict(headers: Mapping[str, str]) -> None:
    policy = headers["Content-Security-Policy"]
    assert policy == CSP
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe" not in policy and "http" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_a_browser_asking_for_the_root_gets_the_page_with_no_inline_script(api: Api) -> None:
    async with api.session.get(f"{api.base_url}/", headers={"Accept": BROWSER_ACCEPT}) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Vary"] == "Accept"
        assert_strict(response.headers)
        page = await response.text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts == [(' type="module" src="/dashboard/app.js"', "")]
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no inline event handler either
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "an id is given twice"  # labels and aria-labelledby point at one
    labelled = set(re.findall(r'<label for="([^"]+)"', page))
    fields = set(re.findall(r'<(?:input|select|textarea|progress)[^>]*\bid="([^"]+)"', page))
    assert fields and fields <= labelled  # every field has its label
    for path in re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page):
        assert path in ASSETS


async def test_other_clients_asking_for_the_root_get_todays_answer(api: Api, cloud) -> None:
    accepts = (None, "application/json", "*/*", "application/json, text/html;q=0.5", "text/html;q=0")
    for accept in accepts:
        status, body = await api.get("/", headers={"Accept": accept} if accept else {})
        assert status == 401 and body["unauthorized"]["code"] == 401, accept  # no route at /: a token first
    await api.login()
    for accept in accepts:
        status, body = await api.get("/", headers={"Accept": accept} if accept else {})
        assert status == 404 and body["itemNotFound"]["code"] == 404, accept


async def test_every_asset_answers_its_media_type_and_the_policy(api: Api) -> None:
    imported: set[str] = set()
    for path, media_type in ASSETS.items():
        async with api.session.get(f"{api.base_url}{path}") as response:
            assert response.status == 200, path
            assert response.content_type == media_type
            assert_strict(response.headers)
            text = await response.text()
        imported |= {f"/dashboard/{name}" for name in re.findall(r'from "\./([a-z-]+\.js)"', text)}
        named = text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace, a name fetched by none
        assert "http://" not in named and "https://" not in named  # nothing from elsewhere
        assert "localStorage" not in text and "?token=" not in text
    assert imported and imported <= set(ASSETS)  # every module imported is served


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/dashboard/nothing.js", 404), ("/dashboard/index.js", 404), ("/dashboard/Style.css", 400)],
)
async def test_an_unknown_asset_is_refused(api: Api, path: str, expected: int) -> None:
    status, body = await api.get(path)
    assert status == expected, body


async def test_the_event_socket_takes_its_token_from_the_subprotocols(api: Api, cloud) -> None:
    token = await api.login()
    url = f"{api.base_url}/ws?kinds=instance"
    async with api.session.ws_connect(url, protocols=("aiostack.events", f"aiostack.token.{token}")) as ws:
        assert ws.protocol == "aiostack.events"
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "subscribed"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.session.ws_connect(url, protocols=("aiostack.events", f"aiostack.token.{token[:-4]}AAAA"))
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
        await api.session.ws_connect(url, protocols=("aiostack.events",))
    assert anonymous.value.status == 401
