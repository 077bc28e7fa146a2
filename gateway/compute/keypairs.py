"""Key pairs (``/os-keypairs``): each user's named SSH public keys, imported or generated here.

A generated key pair's private key is in the create answer only (it is never stored).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from aiohttp import web
from msgspec import UNSET, UnsetType

from api.conductor import Keypair, KeypairName, NewKeypair, PublicKey
from gateway.compute.common import BASE, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Id, Reply, Request, Routes, Time, given

KEYPAIRS = f"{BASE}/os-keypairs"


class KeypairCreate(Request):
    """A key pair to import (``public_key``: an OpenSSH public key line, else 400) or, without
    one, to generate (an Ed25519 key). ``type`` and ``user_id`` are taken and ignored."""

    name: KeypairName
    public_key: PublicKey | UnsetType = UNSET
    type: Literal["ssh", "x509"] | UnsetType = UNSET
    user_id: Id | UnsetType = UNSET


class KeypairCreateRequest(Request):
    keypair: KeypairCreate


class NewKeypairView(Body):
    name: str
    public_key: str
    fingerprint: str
    """Nova's: the MD5 of the key blob, as colon-separated hex."""
    user_id: str
    private_key: str | UnsetType = UNSET
    """A generated key pair's private key (OpenSSH PEM), shown this once."""


class NewKeypairBody(Body):
    keypair: NewKeypairView


class KeypairSummary(Body):
    name: str
    public_key: str
    fingerprint: str


class KeypairListItem(Body):
    keypair: KeypairSummary


class KeypairList(Body):
    keypairs: list[KeypairListItem]


class KeypairDetail(Body):
    name: str
    public_key: str
    fingerprint: str
    user_id: str
    created_at: Time
    deleted: bool
    deleted_at: None
    updated_at: None
    id: int


class KeypairShown(Body):
    keypair: KeypairDetail


def keypair_summary(keypair: Keypair) -> KeypairSummary:
    return KeypairSummary(
        name=keypair["name"], public_key=keypair["public_key"], fingerprint=keypair["fingerprint"]
    )


def keypair_detail(keypair: Keypair) -> KeypairDetail:
    number = int(hashlib.sha256(f"{keypair['user_id']}/{keypair['name']}".encode()).hexdigest()[:7], 16)
    return KeypairDetail(
        name=keypair["name"],
        public_key=keypair["public_key"],
        fingerprint=keypair["fingerprint"],
        user_id=keypair["user_id"],
        created_at=keypair["created_at"],
        deleted=False,
        deleted_at=None,
        updated_at=None,
        id=number,
    )


def new_keypair_view(keypair: NewKeypair) -> NewKeypairView:
    return NewKeypairView(
        name=keypair["name"],
        public_key=keypair["public_key"],
        fingerprint=keypair["fingerprint"],
        private_key=keypair.get("private_key", UNSET),
        user_id=keypair["user_id"],
    )


routes = Routes()


@routes.get(KEYPAIRS, "List key pairs", replies=[Reply(200, KeypairList, "The caller's key pairs, by name.")])
async def list_keypairs(request: web.Request) -> web.Response:
    keypairs = await compute(request).list_keypairs()
    return json_response(
        KeypairList(keypairs=[KeypairListItem(keypair=keypair_summary(k)) for k in keypairs])
    )


@routes.post(
    KEYPAIRS,
    "Import or generate a key pair",
    body=KeypairCreateRequest,
    replies=[Reply(200, NewKeypairBody, "The key pair (with its private key when generated).")],
    errors=(409,),
)
async def create_keypair(request: web.Request, body: KeypairCreateRequest) -> web.Response:
    """400: ``public_key`` is not an OpenSSH public key; 409: the user has a key pair of that name."""
    asked = body.keypair
    created = await compute(request).create_keypair(name=asked.name, public_key=given(asked.public_key))
    return json_response(NewKeypairBody(keypair=new_keypair_view(created)))


@routes.get(
    f"{KEYPAIRS}/{{name}}",
    "Show a key pair",
    replies=[Reply(200, KeypairShown, "The key pair.")],
    errors=(404,),
)
async def show_keypair(request: web.Request) -> web.Response:
    keypair = await compute(request).get_keypair(name=request.match_info["name"])
    return json_response(KeypairShown(keypair=keypair_detail(keypair)))


@routes.delete(
    f"{KEYPAIRS}/{{name}}",
    "Delete a key pair",
    replies=[Reply(202, None, "Deleted.")],
    errors=(404,),
)
async def delete_keypair(request: web.Request) -> web.Response:
    await compute(request).delete_keypair(name=request.match_info["name"])
    return no_content(202)
