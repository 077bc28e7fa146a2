"""Key pairs, limits and key_name as Nova's API has them."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.helpers import Api

KEYPAIRS = "/compute/v2.1/os-keypairs"


async def test_keypairs_are_generated_or_imported_listed_shown_and_deleted(api: Api, cloud) -> None:
    await api.login()
    status, generated = await api.post(KEYPAIRS, {"keypair": {"name": "made-here"}})
    assert status == 200 and generated["keypair"]["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY")
    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    status, imported = await api.post(KEYPAIRS, {"keypair": {"name": "mine", "public_key": public}})
    assert status == 200 and "private_key" not in imported["keypair"]
    assert len(imported["keypair"]["fingerprint"].split(":")) == 16
    _, listed = await api.get(KEYPAIRS)
    assert [k["keypair"]["name"] for k in listed["keypairs"]] == ["made-here", "mine"]
    _, shown = await api.get(f"{KEYPAIRS}/mine")
    assert shown["keypair"]["public_key"] == public and shown["keypair"]["deleted"] is False
    status, body = await api.post(KEYPAIRS, {"keypair": {"name": "mine", "public_key": public}})
    assert status == 409 and "already exists" in body["conflictingRequest"]["message"]
    status, body = await api.post(KEYPAIRS, {"keypair": {"name": "bad", "public_key": "ssh-rsa !!!"}})
    assert status == 400 and "Keypair data is invalid" in body["badRequest"]["message"]
    await api.login("admin", "admin-secret", "admin")
    assert (await api.get(KEYPAIRS))[1]["keypairs"] == []  # key pairs are each user's own
    await api.login()
    assert (await api.delete(f"{KEYPAIRS}/made-here"))[0] == 202
    assert (await api.get(f"{KEYPAIRS}/made-here"))[0] == 404


async def test_key_name_must_name_one_of_the_users_key_pairs(api: Api, cloud) -> None:
    await api.login()
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    server = {"name": "k", "imageRef": images["images"][0]["id"], "flavorRef": "1", "key_name": "nope"}
    status, body = await api.post("/compute/v2.1/servers", {"server": server})
    assert status == 400 and "Invalid key_name provided." in body["badRequest"]["message"]
    await api.post(KEYPAIRS, {"keypair": {"name": "nope"}})
    status, created = await api.post("/compute/v2.1/servers", {"server": server})
    assert status == 202
    _, shown = await api.get(f"/compute/v2.1/servers/{created['server']['id']}")
    assert shown["server"]["key_name"] == "nope"


async def test_limits_show_real_usage_and_the_projects_quotas(api: Api, cloud) -> None:
    await api.login()
    _, before = await api.get("/compute/v2.1/limits")
    assert before["limits"]["absolute"]["totalInstancesUsed"] == 0
    assert before["limits"]["absolute"]["maxTotalInstances"] == -1  # open until an admin sets it
    assert before["limits"]["absolute"]["maxTotalKeypairs"] == 100
    assert before["limits"]["absolute"]["maxSecurityGroups"] == -1  # nothing here limits them
    _, images = await api.get("/image/v2/images?name=aiostack-tiny")
    for flavor in ("1", "2"):
        server = {"name": f"l{flavor}", "imageRef": images["images"][0]["id"], "flavorRef": flavor}
        assert (await api.post("/compute/v2.1/servers", {"server": server}))[0] == 202
    _, after = await api.get("/compute/v2.1/limits")
    used = after["limits"]["absolute"]
    assert (used["totalInstancesUsed"], used["totalCoresUsed"], used["totalRAMUsed"]) == (2, 2, 512 + 2048)
