"""Schemathesis hooks of the contract run (``tests/gateway/contract.py`` loads them with
``SCHEMATHESIS_HOOKS``): point the *references* of schema-valid requests at things that exist.

A schema says what a request looks like, not which ids exist: a server create naming a flavor,
image, key pair or network that is not there is refused with 400 (as Nova refuses it), and so
is a page ``marker`` that names no server or image (Nova, Glance). Drawn at random, those
members would make every valid create or page a "valid request rejected". So, in the
*positive* cases only (negative ones go as drawn), each such member is replaced with one that
exists in the cloud under test (``AIOSTACK_CONTRACT_REFS``, JSON, made by ``contract.py``), or
dropped when it is optional and nothing fitting exists (a port of one's own, a free fixed IP,
an available volume: each is used up by the first boot that names it). The things named are
never deleted by the run (a DELETE of one goes to another id), or every later boot would fail.
Nothing else is changed, and every check still judges every answer.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from schemathesis.generation.modes import GenerationMode

REFS: dict[str, Any] = json.loads(os.environ.get("AIOSTACK_CONTRACT_REFS", "{}"))


def _positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode == GenerationMode.POSITIVE


def _server(server: dict[str, Any]) -> None:
    """A server create that names what exists: the image, a flavor, a key pair, the network."""
    if isinstance(server.get("imageRef"), str) and server["imageRef"]:
        server["imageRef"] = REFS["image"]
    if "flavorRef" in server:
        server["flavorRef"] = REFS["flavor"]
    if isinstance(server.get("key_name"), str):
        server["key_name"] = REFS["keypair"]
    if isinstance(server.get("networks"), list):
        server["networks"] = [{"uuid": REFS["network"]} for _ in server["networks"]]
    mappings = server.get("block_device_mapping_v2")
    if isinstance(mappings, list):
        kept = []
        for mapping in mappings:
            if isinstance(mapping, dict) and mapping.get("source_type") == "image":
                mapping["uuid"] = server.get("imageRef") or REFS["image"]
                kept.append(mapping)
        server["block_device_mapping_v2"] = kept


PROTECTED = {
    ("/image/v2/images/{image_id}", "image_id"): "image",
    ("/compute/v2.1/os-keypairs/{name}", "name"): "keypair",
}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    method, path = case.method.upper(), case.operation.path
    if method == "DELETE" and isinstance(case.path_parameters, dict):
        for (template, name), ref in PROTECTED.items():
            if path == template and case.path_parameters.get(name) == REFS.get(ref):
                case.path_parameters[name] = f"not-{REFS[ref]}"
    if not _positive(case):
        return case
    if method == "GET" and path in (
        "/compute/v2.1/servers",
        "/compute/v2.1/servers/detail",
        "/image/v2/images",
    ):
        if isinstance(case.query, dict):
            case.query.pop("marker", None)
    elif method == "POST" and path == "/compute/v2.1/servers":
        if isinstance(case.body, dict) and isinstance(case.body.get("server"), dict):
            _server(case.body["server"])
    elif method == "POST" and path == "/compute/v2.1/os-keypairs":
        keypair = case.body.get("keypair") if isinstance(case.body, dict) else None
        if isinstance(keypair, dict) and "public_key" in keypair:
            keypair["public_key"] = REFS["public_key"]
    return case
