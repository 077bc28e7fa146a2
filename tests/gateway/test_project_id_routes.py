"""The project id in compute URLs is optional (Nova 2.18): every route is served without it (what the
catalog names) and with it (``/compute/v2.1/{project_id}/...``, legacy v2.0 too), at 2.18 as at 2.17
(Nova serves both forms at every microversion); another project's id in the URL is Nova's 400."""

from __future__ import annotations

from tests.gateway.test_server_details import SERVERS, _image
from tests.helpers import Api

V217 = {"OpenStack-API-Version": "compute 2.17"}
V218 = {"OpenStack-API-Version": "compute 2.18"}


async def test_compute_routes_are_served_with_and_without_the_project_id(api: Api, cloud) -> None:
    await api.login()
    project = str(api.project_id)
    server = {"name": "by-project-url", "imageRef": await _image(api), "flavorRef": "1"}
    status, created = await api.post(f"/compute/v2.1/{project}/servers", {"server": server}, headers=V218)
    assert status == 202, created
    server_id = created["server"]["id"]
    for headers in (V217, V218):
        for path in (SERVERS, f"/compute/v2.1/{project}/servers", f"/compute/v2/{project}/servers"):
            status, listed = await api.get(f"{path}/{server_id}", headers=headers)
            assert status == 200 and listed["server"]["id"] == server_id, (path, headers, listed)
    _, catalog = await api.get("/identity/v3/auth/catalog")
    compute = next(entry for entry in catalog["catalog"] if entry["type"] == "compute")
    assert all(project not in endpoint["url"] for endpoint in compute["endpoints"])  # the optional form

    other = "0123456789abcdef0123456789abcdef"
    status, body = await api.get(f"/compute/v2.1/{other}/servers", headers=V218)
    assert status == 400 and body["badRequest"]["message"] == (
        f"Malformed request URL: URL's project_id '{other}' doesn't match Context's project_id '{project}'"
    )
    status, body = await api.delete(f"/compute/v2.1/{other}/servers/{server_id}")
    assert status == 400  # and nothing was done:
    assert (await api.get(f"{SERVERS}/{server_id}"))[1]["server"]["OS-EXT-STS:task_state"] != "deleting"
    assert (await api.get(f"/compute/v2.1/{project}/no-such-thing"))[0] == 404
