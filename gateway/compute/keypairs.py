"""Key pairs (``/os-keypairs``): each user's named SSH public keys, imported or generated here.

A generated key pair's private key is in the create answer only (it is never stored). From
microversion 2.2 a key pair shows its ``type`` (``ssh``, or ``x509``: a certificate) and
creating one answers 201, deleting one 204.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from api.conductor import Keypair, KeypairName, KeypairType, NewKeypair, PublicKey
from gateway.compute.common import BASE, compute
from gateway.http import json_response, no_content
from gateway.routing import Body, Id, Reply, Request, Routes, Time, given
from gateway.versions import microversion

KEYPAIRS = f"{BASE}/os-keypairs"


class KeypairCreate(Request):
    """A key pair to import (``public_key``: an OpenSSH public key line, or a PEM certificate for
    ``type`` x509; else 400) or, without one, to generate (an Ed25519 key, or an RSA key and its
    self-signed certificate). ``user_id`` is taken and ignored."""

    name: KeypairName
    public_key: PublicKey | UnsetType = UNSET
    type: KeypairType | UnsetType = UNSET
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
    type: Annotated[KeypairType, Meta(description="2.2 and later.")] | UnsetType = UNSET


class NewKeypairBody(Body):
    keypair: NewKeypairView


class KeypairSummary(Body):
    name: str
    public_key: str
    fingerprint: str
    type: Annotated[KeypairType, Meta(description="2.2 and later.")] | UnsetType = UNSET


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
    type: Annotated[KeypairType, Meta(description="2.2 and later.")] | UnsetType = UNSET


class KeypairShown(Body):
    keypair: KeypairDetail


def _type(request: web.Request, keypair: Keypair) -> KeypairType | UnsetType:
    """A key pair's type, shown from 2.2."""
    return keypair["type"] if microversion(request) >= (2, 2) else UNSET


def keypair_summary(request: web.Request, keypair: Keypair) -> KeypairSummary:
    return KeypairSummary(
        name=keypair["name"],
        public_key=keypair["public_key"],
        fingerprint=keypair["fingerprint"],
        type=_type(request, keypair),
    )


def keypair_detail(request: web.Request, keypair: Keypair) -> KeypairDetail:
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
        type=_type(request, keypair),
    )


def new_keypair_view(request: web.Request, keypair: NewKeypair) -> NewKeypairView:
    return NewKeypairView(
        name=keypair["name"],
        public_key=keypair["public_key"],
        fingerprint=keypair["fingerprint"],
        private_key=keypair.get("private_key", UNSET),
        user_id=keypair["user_id"],
        type=_type(request, keypair),
    )


routes = Routes()


@routes.get(KEYPAIRS, "List key pairs", replies=[Reply(200, KeypairList, "The caller's key pairs, by name.")])
async def list_keypairs(request: web.Request) -> web.Response:
    keypairs = await compute(request).list_keypairs()
    return json_response(
        KeypairList(keypairs=[KeypairListItem(keypair=keypair_summary(request, k)) for k in keypairs])
    )


@routes.post(
    KEYPAIRS,
    "Import or generate a key pair",
    body=KeypairCreateRequest,
    replies=[
        Reply(200, NewKeypairBody, "The key pair (with its private key when generated); before 2.2."),
        Reply(201, NewKeypairBody, "The key pair (with its private key when generated); 2.2 and later."),
    ],
    errors=(409,),
)
async def create_keypair(request: web.Request, body: KeypairCreateRequest) -> web.Response:
    """400: ``public_key`` is not an OpenSSH public key (or PEM certificate for ``x509``); 409: the
    user has a key pair of that name."""
    asked = body.keypair
    created = await compute(request).create_keypair(
        name=asked.name, public_key=given(asked.public_key), key_type=asked.type or "ssh"
    )
    status = 201 if microversion(request) >= (2, 2) else 200
    return json_response(NewKeypairBody(keypair=new_keypair_view(request, created)), status=status)


@routes.get(
    f"{KEYPAIRS}/{{name}}",
    "Show a key pair",
    replies=[Reply(200, KeypairShown, "The key pair.")],
    errors=(404,),
)
async def show_keypair(request: web.Request) -> web.Response:
    keypair = await compute(request).get_keypair(name=request.match_info["name"])
    return json_response(KeypairShown(keypair=keypair_detail(request, keypair)))


@routes.delete(
    f"{KEYPAIRS}/{{name}}",
    "Delete a key pair",
    replies=[Reply(202, None, "Deleted (before 2.2)."), Reply(204, None, "Deleted (2.2 and later).")],
    errors=(404,),
)
async def delete_keypair(request: web.Request) -> web.Response:
    await compute(request).delete_keypair(name=request.match_info["name"])
    return no_content(204 if microversion(request) >= (2, 2) else 202)
