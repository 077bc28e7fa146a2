"""What a user changes of a server besides its power (name, access addresses, metadata, lock), what
was done to it (instance actions), how servers are filtered, availability zones and x509 key pairs,
as Nova's API has them."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import Api

SERVERS = "/compute/v2.1/servers"
V22 = {"X-OpenStack-Nova-API-Version": "2.2"}
V29 = {"X-OpenStack-Nova-API-Version": "2.9"}


async def _image(api: Api) -> str:
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    return str(images["images"][0]["id"])


async def _boot(api: Api, name: str, **extra: Any) -> str:
    server = {"name": name, "imageRef": await _image(api), "flavorRef": "1", **extra}
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202, created
    return str(created["server"]["id"])


async def _until_active(api: Api, server_id: str) -> dict[str, Any]:
    for _ in range(400):
        _, shown = await api.get(f"{SERVERS}/{server_id}")
        if shown["server"]["status"] == "ACTIVE":
            return dict(shown["server"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"server {server_id} never became ACTIVE")


async def test_a_server_is_renamed_and_its_access_addresses_set_and_bad_ones_refused(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "before", accessIPv4="192.0.2.10")
    status, updated = await api.put(
        f"{SERVERS}/{server_id}", {"server": {"name": "after", "accessIPv6": "2001:db8::7"}}
    )
    assert status == 200
    assert (updated["server"]["name"], updated["server"]["accessIPv4"], updated["server"]["accessIPv6"]) == (
        "after",
        "192.0.2.10",
        "2001:db8::7",
    )
    for bad in (
        {"accessIPv4": "2001:db8::7"},
        {"accessIPv6": "not-an-address"},
        {"name": ""},
        {"name": "x" * 256},
    ):
        status, body = await api.put(f"{SERVERS}/{server_id}", {"server": bad})
        assert status == 400, (bad, body)
    _, shown = await api.get(f"{SERVERS}/{server_id}")
    assert (shown["server"]["name"], shown["server"]["accessIPv6"]) == ("after", "2001:db8::7")
    status, body = await api.post(
        SERVERS,
        {"server": {"name": "b", "imageRef": await _image(api), "flavorRef": "1", "accessIPv6": "1.2.3.4"}},
    )
    assert status == 400 and "IPv6" in body["badRequest"]["message"]
    assert (await api.put(f"{SERVERS}/00000000-0000-0000-0000-000000000000", {"server": {"name": "n"}}))[
        0
    ] == 404


async def test_server_metadata_is_merged_replaced_and_changed_item_by_item(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "meta", metadata={"a": "1"})
    metadata = f"{SERVERS}/{server_id}/metadata"
    assert (await api.post(metadata, {"metadata": {"b": "2"}}))[1] == {"metadata": {"a": "1", "b": "2"}}
    assert (await api.put(metadata, {"metadata": {"c": "3"}}))[1] == {"metadata": {"c": "3"}}
    assert (await api.put(f"{metadata}/d", {"meta": {"d": "4"}}))[1] == {"meta": {"d": "4"}}
    assert (await api.get(f"{metadata}/d"))[1] == {"meta": {"d": "4"}}
    status, body = await api.put(f"{metadata}/e", {"meta": {"f": "5"}})
    assert status == 400 and "mismatch" in body["badRequest"]["message"]
    assert (await api.put(f"{metadata}/e", {"meta": {"e": "5", "g": "6"}}))[0] == 400
    assert (await api.delete(f"{metadata}/c"))[0] == 204
    assert (await api.delete(f"{metadata}/c"))[0] == 404
    assert (await api.get(f"{metadata}/c"))[0] == 404
    status, body = await api.post(metadata, {"metadata": {f"k{i}": "v" for i in range(128)}})
    assert status == 403 and "metadata_items" in body["forbidden"]["message"]
    assert (await api.get(metadata))[1] == {"metadata": {"d": "4"}}
    _, shown = await api.get(f"{SERVERS}/{server_id}")
    assert shown["server"]["metadata"] == {"d": "4"}


async def test_a_locked_server_refuses_actions_but_an_admins_and_an_admins_lock_is_lifted_only_by_one(
    api: Api, cloud
) -> None:
    await api.login()
    server_id = await _boot(api, "locked")
    await _until_active(api, server_id)
    action = f"{SERVERS}/{server_id}/action"
    assert (await api.post(action, {"lock": None}))[0] == 202
    _, shown = await api.get(f"{SERVERS}/{server_id}", headers=V29)
    assert shown["server"]["locked"] is True
    for refused in ({"os-stop": None}, {"reboot": {"type": "HARD"}}):
        status, body = await api.post(action, refused)
        assert status == 409 and "locked" in body["conflictingRequest"]["message"]
    assert (await api.post(f"{SERVERS}/{server_id}/metadata", {"metadata": {"x": "y"}}))[0] == 409
    assert (await api.delete(f"{SERVERS}/{server_id}"))[0] == 409
    assert (await api.get(f"{SERVERS}/{server_id}"))[1]["server"]["status"] == "ACTIVE"
    assert (await api.post(action, {"unlock": None}))[0] == 202
    assert (await api.post(f"{SERVERS}/{server_id}/metadata", {"metadata": {"x": "y"}}))[0] == 200

    demo = Api(api.session, api.base_url)
    await demo.login()
    await api.login("admin", "admin-secret", "admin")
    assert (await api.post(action, {"lock": None}))[0] == 202
    status, body = await demo.post(action, {"unlock": None})
    assert status == 403 and "admin" in body["forbidden"]["message"]
    assert (await api.post(action, {"os-stop": None}))[0] == 202  # an admin acts on it regardless
    assert (await api.post(action, {"unlock": None}))[0] == 202
    _, shown = await demo.get(f"{SERVERS}/{server_id}", headers=V29)
    assert shown["server"]["locked"] is False


async def test_a_servers_actions_are_listed_and_shown_by_request_id_with_steps_for_admins(
    api: Api, cloud
) -> None:
    await api.login()
    image = await _image(api)
    async with api.session.post(
        api.base_url + SERVERS,
        json={"server": {"name": "acted", "imageRef": image, "flavorRef": "1"}},
        headers=api.headers,
    ) as response:
        created_by = response.headers["x-compute-request-id"]
        server_id = (await response.json())["server"]["id"]
    await _until_active(api, server_id)
    assert (await api.post(f"{SERVERS}/{server_id}/action", {"reboot": {"type": "HARD"}}))[0] == 202
    _, listed = await api.get(f"{SERVERS}/{server_id}/os-instance-actions")
    actions = listed["instanceActions"]
    assert [a["action"] for a in actions] == ["reboot", "create"]  # newest first, Nova's names
    assert actions[1]["request_id"] == created_by and actions[1]["project_id"] == api.project_id
    status, shown = await api.get(f"{SERVERS}/{server_id}/os-instance-actions/{created_by}")
    assert status == 200 and shown["instanceAction"]["action"] == "create"
    steps = shown["instanceAction"]["events"]  # its steps, without what went wrong (admins')
    assert "schedule" in {e["event"] for e in steps} and all("traceback" not in e for e in steps)
    assert (await api.get(f"{SERVERS}/{server_id}/os-instance-actions/req-unknown"))[0] == 404
    await api.login("admin", "admin-secret", "admin")
    _, shown = await api.get(f"{SERVERS}/{server_id}/os-instance-actions/{created_by}")
    events = [e["event"] for e in shown["instanceAction"]["events"]]
    assert "schedule" in events and "node_accepted" in events
    assert all("traceback" in e for e in shown["instanceAction"]["events"])


async def test_servers_are_filtered_by_image_flavor_name_regex_address_and_change_time(
    api: Api, cloud
) -> None:
    await api.login()
    small = await _boot(api, "web-1")
    big_server = {"name": "db-1", "imageRef": await _image(api), "flavorRef": "2"}
    big = (await api.post(SERVERS, {"server": big_server}))[1]["server"]["id"]
    for server_id in (small, big):
        await _until_active(api, server_id)

    async def names(query: str) -> set[str]:
        status, body = await api.get(f"{SERVERS}?{query}")
        assert status == 200, body
        return {s["name"] for s in body["servers"]}

    assert await names("flavor=2") == {"db-1"}
    assert await names(f"image={await _image(api)}") == {"web-1", "db-1"}
    assert await names("image=00000000-0000-0000-0000-000000000000") == set()
    assert await names("name=^web-[0-9]$") == {"web-1"}
    assert await names("name=1") == {"web-1", "db-1"}
    _, shown = await api.get(f"{SERVERS}/{big}")
    address = next(iter(shown["server"]["addresses"].values()))[0]["addr"]
    assert await names(f"ip={address.replace('.', '[.]')}$") == {"db-1"}
    _, detail = await api.get(f"{SERVERS}/{small}")
    since = detail["server"]["updated"]
    assert (await api.delete(f"{SERVERS}/{small}"))[0] == 204
    for _ in range(200):
        status, body = await api.get(f"{SERVERS}/detail?changes-since={since}")
        deleted = [s for s in body["servers"] if s["id"] == small]
        if deleted and deleted[0]["status"] == "DELETED":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"a deleted server is not listed as DELETED since {since}: {body}")
    assert await names("changes-since=2999-01-01T00:00:00Z") == set()
    status, body = await api.get(f"{SERVERS}?changes-since=yesterday")
    assert status == 400, body
    assert await names("name=(") == set()  # no regular expression: searched as the text it is


async def test_the_one_availability_zone_is_listed_and_its_hosts_shown_to_admins(api: Api, cloud) -> None:
    await api.login()
    _, zones = await api.get("/compute/v2.1/os-availability-zone")
    assert zones == {
        "availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]
    }
    assert (await api.get("/compute/v2.1/os-availability-zone/detail"))[0] == 403
    await api.login("admin", "admin-secret", "admin")
    _, detail = await api.get("/compute/v2.1/os-availability-zone/detail")
    hosts = detail["availabilityZoneInfo"][0]["hosts"]
    assert hosts["node-1"]["nova-compute"]["available"] is True


async def test_key_pairs_have_a_type_from_2_2_and_x509_ones_are_certificates(api: Api, cloud) -> None:
    await api.login()
    keypairs = "/compute/v2.1/os-keypairs"
    status, made = await api.post(keypairs, {"keypair": {"name": "win", "type": "x509"}}, headers=V22)
    assert status == 201 and made["keypair"]["type"] == "x509"
    assert made["keypair"]["public_key"].startswith("-----BEGIN CERTIFICATE-----")
    assert made["keypair"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert len(made["keypair"]["fingerprint"].split(":")) == 20  # SHA-1
    status, made = await api.post(keypairs, {"keypair": {"name": "lin"}}, headers=V22)
    assert status == 201 and made["keypair"]["type"] == "ssh"
    _, shown = await api.get(f"{keypairs}/win", headers=V22)
    assert shown["keypair"]["type"] == "x509"
    _, listed = await api.get(keypairs, headers=V22)
    assert {k["keypair"]["name"]: k["keypair"]["type"] for k in listed["keypairs"]} == {
        "lin": "ssh",
        "win": "x509",
    }
    _, old = await api.get(f"{keypairs}/win")
    assert "type" not in old["keypair"]
    status, body = await api.post(
        keypairs, {"keypair": {"name": "bad", "type": "x509", "public_key": "ssh-ed25519 AAAA"}}, headers=V22
    )
    assert status == 400 and "certificate" in body["badRequest"]["message"]


async def test_an_admin_password_is_echoed_kept_for_the_build_only_and_bad_user_data_refused(
    api: Api, cloud
) -> None:
    from actors.conductor.actor import ConductorActor

    await api.login()
    server = {"name": "pw", "imageRef": await _image(api), "flavorRef": "1", "adminPass": "Chosen-1"}
    status, created = await api.post(SERVERS, {"server": server})
    assert status == 202 and created["server"]["adminPass"] == "Chosen-1"
    status, _ = await api.post(SERVERS, {"server": {**server, "name": "pw2", "adminPass": ""}})
    assert status == 400  # an empty password is none
    del server["adminPass"]
    status, generated = await api.post(SERVERS, {"server": {**server, "name": "pw3"}})
    assert status == 202 and len(generated["server"]["adminPass"]) >= 12
    await _until_active(api, created["server"]["id"])
    conductor = next(actor for actor in cloud if isinstance(actor, ConductorActor))
    row = await conductor.store.fetchone(
        "SELECT admin_pass FROM instances WHERE uuid = ?", (created["server"]["id"],)
    )
    assert row is not None and row["admin_pass"] is None  # forgotten once the build ended
    status, body = await api.post(SERVERS, {"server": {**server, "name": "ud", "user_data": "not base64!"}})
    assert status == 400 and "base64" in body["badRequest"]["message"]


async def test_quotas_are_shown_set_by_admins_only_and_enforced_atomically_on_concurrent_creates(
    api: Api, cloud
) -> None:
    await api.login()
    project = api.project_id
    quotas = f"/compute/v2.1/os-quota-sets/{project}"
    _, shown = await api.get(quotas)
    assert shown["quota_set"]["id"] == project
    assert (shown["quota_set"]["instances"], shown["quota_set"]["metadata_items"]) == (-1, 128)
    assert (await api.get(f"{quotas}/defaults"))[1] == shown
    for word in ("detail", "defaults"):  # a sibling route's word is no project's id
        assert (await api.get(f"/compute/v2.1/os-quota-sets/{word}"))[0] == 404
    assert (await api.put(quotas, {"quota_set": {"instances": 3}}))[0] == 403
    demo = Api(api.session, api.base_url)
    await demo.login()
    await api.login("admin", "admin-secret", "admin")
    assert (await demo.get(f"/compute/v2.1/os-quota-sets/{api.project_id}"))[0] == 403
    status, updated = await api.put(quotas, {"quota_set": {"instances": 5, "key_pairs": 1}})
    assert status == 200 and updated["quota_set"]["instances"] == 5 and "id" not in updated["quota_set"]
    assert (await api.put(quotas, {"quota_set": {"floating_ips": 5}}))[0] == 400  # not limited here

    image = await _image(demo)
    answers = await asyncio.gather(
        *(
            demo.post(SERVERS, {"server": {"name": f"q{i}", "imageRef": image, "flavorRef": "1"}})
            for i in range(200)
        )
    )
    statuses = [status for status, _ in answers]
    assert statuses.count(202) == 5 and statuses.count(403) == 195, sorted(set(statuses))
    refused = next(body for status, body in answers if status == 403)
    assert "Quota exceeded for instances" in refused["forbidden"]["message"]
    _, detail = await demo.get(f"/compute/v2.1/os-quota-sets/{project}/detail")
    assert detail["quota_set"]["instances"] == {"limit": 5, "in_use": 5, "reserved": 0}
    _, listed = await demo.get(SERVERS)
    assert len(listed["servers"]) == 5

    created = next(body["server"]["id"] for status, body in answers if status == 202)
    assert (await demo.delete(f"{SERVERS}/{created}"))[0] == 204
    for _ in range(200):
        _, detail = await demo.get(f"/compute/v2.1/os-quota-sets/{project}/detail")
        if detail["quota_set"]["instances"]["in_use"] == 4:
            break
        await asyncio.sleep(0.05)
    assert detail["quota_set"]["instances"]["in_use"] == 4  # usage follows the delete exactly
    status, _ = await demo.post(SERVERS, {"server": {"name": "again", "imageRef": image, "flavorRef": "1"}})
    assert status == 202

    assert (await demo.post("/compute/v2.1/os-keypairs", {"keypair": {"name": "one"}}))[0] == 200
    status, body = await demo.post("/compute/v2.1/os-keypairs", {"keypair": {"name": "two"}})
    assert status == 403 and "key_pairs" in body["forbidden"]["message"]
    status, body = await api.put(quotas, {"quota_set": {"instances": 2}})
    assert status == 409 and "at least 5" in body["conflictingRequest"]["message"]
    assert (await api.delete(quotas))[0] == 202
    assert (await api.get(quotas))[1]["quota_set"]["instances"] == -1


async def test_an_update_answers_nova_s_short_view_and_addresses_are_listed_by_network(
    api: Api, cloud
) -> None:
    await api.login()
    server_id = await _boot(api, "short")
    server = await _until_active(api, server_id)
    status, updated = await api.put(
        f"{SERVERS}/{server_id}", {"server": {"accessIPv6": "0000:0000:0000:0000:0000:babe:220.12.22.2"}}
    )
    assert status == 200 and updated["server"]["accessIPv6"] == "::babe:dc0c:1602"  # as Nova keeps it
    assert "OS-EXT-STS:vm_state" not in updated["server"] and "key_name" not in updated["server"]
    assert all(set(a) == {"addr", "version"} for a in next(iter(updated["server"]["addresses"].values())))
    [(network, [address])] = server["addresses"].items()
    expected = {network: [{"addr": address["addr"], "version": address["version"]}]}
    assert (await api.get(f"{SERVERS}/{server_id}/ips"))[1] == {"addresses": expected}
    assert (await api.get(f"{SERVERS}/{server_id}/ips/{network}"))[1] == expected
    assert (await api.get(f"{SERVERS}/{server_id}/ips/nowhere"))[0] == 404
    keypairs = "/compute/v2.1/os-keypairs"
    await api.post(keypairs, {"keypair": {"name": "gone"}}, headers=V22)
    assert (await api.delete(f"{keypairs}/gone", headers=V22))[0] == 204


async def _second_image(api: Api) -> str:
    _, image = await api.post(
        "/image/v2/images", {"name": "second", "disk_format": "raw", "container_format": "bare"}
    )
    status, _ = await api.request(
        "PUT",
        f"/image/v2/images/{image['id']}/file",
        data=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 204
    return str(image["id"])


async def _until(api: Api, server_id: str, status: str) -> dict[str, Any]:
    for _ in range(400):
        _, shown = await api.get(f"{SERVERS}/{server_id}")
        if shown["server"]["status"] == status and shown["server"]["OS-EXT-STS:task_state"] is None:
            return dict(shown["server"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"server {server_id} never became {status}: {shown}")


async def test_a_server_is_rebuilt_from_another_image_and_a_stopped_one_stays_stopped(
    api: Api, cloud
) -> None:
    await api.login()
    second = await _second_image(api)
    server_id = await _boot(api, "before", metadata={"old": "1"})
    await _until_active(api, server_id)
    action = f"{SERVERS}/{server_id}/action"
    rebuild = {"imageRef": second, "name": "after", "metadata": {"new": "2"}, "adminPass": "Rebuilt-1"}
    status, body = await api.post(action, {"rebuild": rebuild})
    assert status == 202, body
    rebuilt = body["server"]
    assert (rebuilt["status"], rebuilt["image"]["id"], rebuilt["name"]) == ("REBUILD", second, "after")
    assert (rebuilt["metadata"], rebuilt["adminPass"]) == ({"new": "2"}, "Rebuilt-1")
    active = await _until(api, server_id, "ACTIVE")
    assert active["image"]["id"] == second
    _, actions = await api.get(f"{SERVERS}/{server_id}/os-instance-actions")
    assert actions["instanceActions"][0]["action"] == "rebuild"

    assert (await api.post(action, {"os-stop": None}))[0] == 202
    await _until(api, server_id, "SHUTOFF")
    assert (await api.post(action, {"rebuild": {"imageRef": await _image(api)}}))[0] == 202
    stopped = await _until(api, server_id, "SHUTOFF")  # rebuilt, and still stopped
    assert stopped["image"]["id"] == await _image(api)
    assert "progress" not in stopped  # Nova shows it while ACTIVE, BUILD or REBUILD only

    status, body = await api.post(action, {"rebuild": {"imageRef": "00000000-0000-0000-0000-000000000000"}})
    assert status == 400 and "could not be found" in body["badRequest"]["message"]
    assert (await api.post(action, {"rebuild": {"imageRef": second, "personality": []}}))[0] == 400
    assert (await api.post(action, {"lock": None}))[0] == 202
    assert (await api.post(action, {"rebuild": {"imageRef": second}}))[0] == 409
    missing = f"{SERVERS}/00000000-0000-0000-0000-000000000000/action"
    assert (await api.post(missing, {"rebuild": {"imageRef": second}}))[0] == 404


async def test_one_volume_attachment_of_a_server_is_shown(api: Api, cloud) -> None:
    await api.login()
    server_id = await _boot(api, "attached")
    await _until_active(api, server_id)
    volumes = f"/volume/v3/{api.project_id}/volumes"
    _, created = await api.post(volumes, {"volume": {"size": 1}})
    volume_id = created["volume"]["id"]
    for _ in range(200):
        if (await api.get(f"{volumes}/{volume_id}"))[1]["volume"]["status"] == "available":
            break
        await asyncio.sleep(0.05)
    attachments = f"{SERVERS}/{server_id}/os-volume_attachments"
    assert (await api.post(attachments, {"volumeAttachment": {"volumeId": volume_id}}))[0] == 200
    status, shown = await api.get(f"{attachments}/{volume_id}")
    assert status == 200 and shown["volumeAttachment"]["serverId"] == server_id
    assert shown["volumeAttachment"]["device"] == "/dev/vdb"
    assert (await api.get(f"{attachments}/00000000-0000-0000-0000-000000000000"))[0] == 404


async def test_a_server_snapshot_becomes_an_active_image_that_boots(api: Api, cloud) -> None:
    await api.login()
    base = await _image(api)
    server_id = await _boot(api, "source")
    await _until_active(api, server_id)
    action = f"{SERVERS}/{server_id}/action"
    async with api.session.post(
        api.base_url + action,
        json={"createImage": {"name": "snap", "metadata": {"purpose": "test", "image_type": "mine"}}},
        headers=api.headers,
    ) as response:
        assert response.status == 202 and await response.read() == b""
        image_id = response.headers["Location"].rsplit("/", 1)[1]
    for _ in range(200):
        _, image = await api.get(f"/image/v2/images/{image_id}")
        if image["status"] == "active":
            break
        await asyncio.sleep(0.05)
    assert image["status"] == "active", image
    assert (image["name"], image["instance_uuid"], image["image_type"]) == ("snap", server_id, "mine")
    assert (image["base_image_ref"], image["purpose"]) == (base, "test")
    _, original = await api.get(f"/image/v2/images/{base}")
    assert image["checksum"] == original["checksum"]  # a test domain's disk is its image, unwritten
    await _until(api, server_id, "ACTIVE")
    _, actions = await api.get(f"{SERVERS}/{server_id}/os-instance-actions")
    assert actions["instanceActions"][0]["action"] == "createImage"

    status, created = await api.post(
        SERVERS, {"server": {"name": "copy", "imageRef": image_id, "flavorRef": "1"}}
    )
    assert status == 202
    copy = await _until_active(api, created["server"]["id"])
    assert copy["image"]["id"] == image_id

    status, shown = await api.get(f"/compute/v2.1/images/{image_id}")  # Nova's proxy to Glance
    assert status == 200 and shown["image"]["status"] == "ACTIVE" and shown["image"]["progress"] == 100
    assert shown["image"]["server"]["id"] == server_id and shown["image"]["metadata"]["purpose"] == "test"
    _, listed = await api.get("/compute/v2.1/images?name=snap")
    assert [i["id"] for i in listed["images"]] == [image_id]

    assert (await api.post(action, {"lock": None}))[0] == 202
    assert (await api.post(action, {"createImage": {"name": "refused"}}))[0] == 409
    _, listed = await api.get("/image/v2/images?name=refused")
    assert listed["images"] == []  # nothing made when the action is refused
    await api.delete(f"{SERVERS}/{created['server']['id']}")
    assert (await api.delete(f"/compute/v2.1/images/{image_id}"))[0] == 204
    assert (await api.get(f"/compute/v2.1/images/{image_id}"))[0] == 404


async def test_flavors_are_filtered_by_ram_and_disk_and_paged(api: Api, cloud) -> None:
    await api.login()
    _, every = await api.get("/compute/v2.1/flavors/detail")
    flavors = every["flavors"]
    assert "flavors_links" not in every
    big = [f["id"] for f in flavors if f["ram"] >= 2048 and f["disk"] >= 20]
    _, filtered = await api.get("/compute/v2.1/flavors?minRam=2048&minDisk=20")
    assert [f["id"] for f in filtered["flavors"]] == big and big
    _, first = await api.get("/compute/v2.1/flavors?limit=1")
    assert [f["id"] for f in first["flavors"]] == [flavors[0]["id"]]
    next_link = first["flavors_links"][0]["href"]
    assert f"marker={flavors[0]['id']}" in next_link
    _, rest = await api.get(f"/compute/v2.1/flavors?marker={flavors[0]['id']}")
    assert [f["id"] for f in rest["flavors"]] == [f["id"] for f in flavors[1:]]
    assert (await api.get("/compute/v2.1/flavors?marker=no-such-flavor"))[0] == 400


async def test_a_full_page_of_servers_without_a_limit_has_a_next_link(api: Api, cloud) -> None:
    from gateway.compute import servers

    await api.login()
    for name in ("a", "b", "c"):
        await _boot(api, name)
    original = servers.MAX_PAGE
    servers.MAX_PAGE = 3  # the gateway in this process: a page of 3 stands for one of 1,000
    try:
        _, page = await api.get(SERVERS)
    finally:
        servers.MAX_PAGE = original
    assert len(page["servers"]) == 3 and "marker=" in page["servers_links"][0]["href"]
