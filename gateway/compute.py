"""Compute (Nova v2.1) routes: servers, server actions, volume attachments, flavors."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from aiohttp import web

from bus import InvalidRequest
from gateway.app import call, context_of, json_body, json_response
from gateway.versions import microversion

BASE = "/compute/v2.1"
# Fields of a server create that Nova has and aiostack accepts without acting on them
IGNORED_CREATE_FIELDS = (
    "availability_zone", "security_groups", "config_drive", "OS-DCF:diskConfig", "min_count", "max_count",
    "accessIPv4", "accessIPv6", "description",
)  # fmt: skip
CREATE_FIELDS = {
    "name", "imageRef", "flavorRef", "networks", "metadata", "key_name", "user_data",
    "block_device_mapping_v2", *IGNORED_CREATE_FIELDS,
}  # fmt: skip


def _links(request: web.Request, kind: str, resource_id: str) -> list[dict[str, str]]:
    base = f"{request.scheme}://{request.host}"
    return [
        {"rel": "self", "href": f"{base}{BASE}/{kind}/{resource_id}"},
        {"rel": "bookmark", "href": f"{base}/compute/{kind}/{resource_id}"},
    ]


def server_summary(request: web.Request, instance: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": instance["id"],
        "name": instance["name"],
        "links": _links(request, "servers", instance["id"]),
    }


def server_detail(
    request: web.Request, instance: dict[str, Any], volumes: list[dict[str, str]]
) -> dict[str, Any]:
    """A server as Nova's API shows it at the request's microversion (2.1-2.16)."""
    is_admin = context_of(request).is_admin
    host = instance["host"] or ""
    server = {
        **server_summary(request, instance),
        "status": instance["status"],
        "tenant_id": instance["project_id"],
        "user_id": instance["user_id"],
        "metadata": instance["metadata"],
        "hostId": hashlib.sha224((instance["project_id"] + host).encode()).hexdigest() if host else "",
        "image": {"id": instance["image_ref"], "links": _links(request, "images", instance["image_ref"])},
        "flavor": {
            "id": instance["flavor"]["id"],
            "links": _links(request, "flavors", instance["flavor"]["id"]),
        },
        "created": instance["created_at"],
        "updated": instance["updated_at"],
        "addresses": instance["addresses"],
        "accessIPv4": "",
        "accessIPv6": "",
        "key_name": instance["key_name"],
        "progress": 0,
        "config_drive": "",
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-STS:vm_state": instance["vm_state"],
        "OS-EXT-STS:task_state": instance["task_state"],
        "OS-EXT-STS:power_state": instance["power_state"],
        "OS-SRV-USG:launched_at": instance["launched_at"],
        "OS-SRV-USG:terminated_at": instance["terminated_at"],
        "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": volumes,
    }
    version = microversion(request)
    if is_admin:
        server["OS-EXT-SRV-ATTR:host"] = instance["host"]
        server["OS-EXT-SRV-ATTR:hypervisor_hostname"] = instance["host"]
        server["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{instance['id']}"
        if version >= (2, 3):
            server |= {
                "OS-EXT-SRV-ATTR:reservation_id": "",
                "OS-EXT-SRV-ATTR:launch_index": 0,
                "OS-EXT-SRV-ATTR:hostname": instance["name"],
                "OS-EXT-SRV-ATTR:kernel_id": "",
                "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                "OS-EXT-SRV-ATTR:user_data": None,
            }
        if version >= (2, 16):
            server["host_status"] = instance.get("host_status", "")
    if version >= (2, 9):
        server["locked"] = False
    if instance["fault"]:
        server["fault"] = instance["fault"]
    return server


def _create_request(server: dict[str, Any]) -> dict[str, Any]:
    unknown = set(server) - CREATE_FIELDS
    if unknown:
        raise InvalidRequest(
            f"Invalid input for field/attribute server. Additional properties are not allowed "
            f"({', '.join(sorted(unknown))} were unexpected)"
        )
    block_devices, boot_image = _block_devices(server.get("block_device_mapping_v2"))
    if boot_image is not None and server.get("imageRef") in (None, ""):
        server = {**server, "imageRef": boot_image}
    for field in ("name", "imageRef", "flavorRef"):
        if field not in server:
            raise InvalidRequest(
                f"Invalid input for field/attribute server. '{field}' is a required property"
            )
    if not isinstance(server["name"], str):
        raise InvalidRequest("Invalid input for field/attribute name. Value must be a string")
    if not isinstance(server["imageRef"], str):
        raise InvalidRequest("Invalid input for field/attribute imageRef. Value must be a string")
    if boot_image is not None and boot_image != server["imageRef"]:
        raise InvalidRequest("The image of block_device_mapping_v2 boot_index 0 is not imageRef")
    if not isinstance(server["flavorRef"], str | int) or isinstance(server["flavorRef"], bool):
        raise InvalidRequest("Invalid input for field/attribute flavorRef. Value must be a string or integer")
    return {
        "name": server["name"],
        "block_devices": block_devices,
        "image_ref": server["imageRef"],
        "flavor_ref": str(server["flavorRef"]),
        "networks": server.get("networks", "auto"),
        "metadata": server.get("metadata"),
        "key_name": server.get("key_name"),
        "user_data": server.get("user_data"),
    }


def _block_devices(mappings: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Existing volumes to attach at boot, and the image of a boot-from-image mapping (source
    image, destination local, boot_index 0: how the openstack CLI spells ``imageRef``); other
    kinds of mapping are not built."""
    if mappings is None:
        return None, None
    if not isinstance(mappings, list) or not all(isinstance(m, dict) for m in mappings):
        raise InvalidRequest("Invalid input for field/attribute block_device_mapping_v2. Must be a list")
    devices, boot_image = [], None
    for mapping in mappings:
        if (
            mapping.get("source_type") == "image"
            and mapping.get("destination_type", "local") == "local"
            and str(mapping.get("boot_index")) == "0"
            and isinstance(mapping.get("uuid"), str)
        ):
            boot_image = mapping["uuid"]
            continue
        if mapping.get("source_type") != "volume" or mapping.get("destination_type", "volume") != "volume":
            raise InvalidRequest(
                "Only block_device_mapping_v2 entries with source_type and destination_type "
                "'volume' (an existing volume attached at boot) are supported"
            )
        if not isinstance(mapping.get("uuid"), str):
            raise InvalidRequest("Invalid input for field/attribute uuid. Value must be a volume id")
        if mapping.get("boot_index") not in (None, -1, "-1", "none"):
            raise InvalidRequest("Booting from a volume is not supported: give imageRef and boot_index -1")
        devices.append({"volume_id": mapping["uuid"], "device": mapping.get("device_name")})
    return devices, boot_image


# Recording a server takes milliseconds; a conductor that died holding the request never answers,
# and the client should hear so soon (then ask again) rather than after the bus's 30 s.
CREATE_TIMEOUT = 10.0


async def create_server(request: web.Request) -> web.Response:
    instance = await call(
        request,
        "conductor.create_instance",
        _create_request(await json_body(request, "server")),
        timeout=CREATE_TIMEOUT,
    )
    body = {
        "id": instance["id"],
        "links": _links(request, "servers", instance["id"]),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
        "adminPass": secrets.token_urlsafe(9),
    }
    return json_response({"server": body}, status=202, headers={"Location": body["links"][0]["href"]})


def _list_query(request: web.Request) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for key in ("name", "status", "marker"):
        if key in request.query:
            query[key] = request.query[key]
    if "limit" in request.query:
        try:
            query["limit"] = int(request.query["limit"])
        except ValueError:
            raise InvalidRequest("limit must be an integer") from None
    if "all_tenants" in request.query and request.query["all_tenants"].lower() not in ("0", "false", "no"):
        query["all_projects"] = True
    return query


async def list_servers(request: web.Request) -> web.Response:
    query = _list_query(request)
    instances = await call(request, "conductor.list_instances", query)
    return json_response(_page(request, query, [server_summary(request, i) for i in instances]))


async def list_servers_detail(request: web.Request) -> web.Response:
    query = _list_query(request)
    instances = await call(request, "conductor.list_instances", query)
    volumes = await _volumes_by_server(request)
    return json_response(
        _page(request, query, [server_detail(request, i, volumes.get(i["id"], [])) for i in instances])
    )


def _page(request: web.Request, query: dict[str, Any], servers: list[dict[str, Any]]) -> dict[str, Any]:
    """Nova's page: a ``servers_links`` next link when the page is full (``limit`` reached)."""
    page: dict[str, Any] = {"servers": servers}
    if query.get("limit") and len(servers) == query["limit"]:
        following = request.url.update_query(marker=servers[-1]["id"])
        page["servers_links"] = [{"rel": "next", "href": str(following)}]
    return page


async def _volumes_by_server(request: web.Request) -> dict[str, list[dict[str, str]]]:
    """``os-extended-volumes:volumes_attached`` of every server the caller sees, in one call."""
    attached: dict[str, list[dict[str, str]]] = {}
    for attachment in await call(request, "volume.list_attachments"):
        if attachment["attach_status"] == "attached":
            attached.setdefault(attachment["server_id"], []).append({"id": attachment["volume_id"]})
    return attached


async def show_server(request: web.Request) -> web.Response:
    instance = await call(
        request, "conductor.get_instance", {"instance_uuid": request.match_info["server_id"]}
    )
    volumes = await _volumes_by_server(request)
    return json_response({"server": server_detail(request, instance, volumes.get(instance["id"], []))})


async def delete_server(request: web.Request) -> web.Response:
    await call(request, "conductor.delete_instance", {"instance_uuid": request.match_info["server_id"]})
    return web.Response(status=204)


async def server_action(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise InvalidRequest("Malformed request body: exactly one action is expected")
    action, argument = next(iter(body.items()))
    server_id = request.match_info["server_id"]
    if action == "os-stop":
        await call(request, "conductor.stop_instance", {"instance_uuid": server_id})
    elif action == "os-start":
        await call(request, "conductor.start_instance", {"instance_uuid": server_id})
    elif action == "reboot":
        if not isinstance(argument, dict) or argument.get("type") not in ("SOFT", "HARD"):
            raise InvalidRequest("Invalid input for field/attribute reboot. 'type' must be SOFT or HARD")
        await call(
            request,
            "conductor.reboot_instance",
            {"instance_uuid": server_id, "reboot_type": argument["type"]},
        )
    elif action in ("pause", "unpause", "suspend", "resume"):
        await call(request, "conductor.change_power", {"instance_uuid": server_id, "action": action})
    elif action == "os-getConsoleOutput":
        if not isinstance(argument, dict):
            raise InvalidRequest("Invalid input for field/attribute os-getConsoleOutput: must be an object")
        length = argument.get("length")
        if isinstance(length, str) and length.lstrip("-").isdigit():  # Nova takes "50" as well as 50
            length = int(length)
        console = await call(
            request, "conductor.get_console_output", {"instance_uuid": server_id, "length": length}
        )
        return json_response({"output": console["output"]})
    else:
        raise InvalidRequest(f"There is no such action: {action}")
    return web.Response(status=202)


def _attachment(attachment: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": attachment["id"],
        "volumeId": attachment["volumeId"],
        "serverId": attachment["serverId"],
        "device": attachment["device"],
    }


async def list_volume_attachments(request: web.Request) -> web.Response:
    attachments = await call(
        request, "conductor.list_volume_attachments", {"instance_uuid": request.match_info["server_id"]}
    )
    return json_response({"volumeAttachments": [_attachment(a) for a in attachments]})


async def attach_volume(request: web.Request) -> web.Response:
    body = await json_body(request, "volumeAttachment")
    if not isinstance(body.get("volumeId"), str):
        raise InvalidRequest(
            "Invalid input for field/attribute volumeAttachment. 'volumeId' is a required property"
        )
    if body.get("device") is not None and not isinstance(body["device"], str):
        raise InvalidRequest("Invalid input for field/attribute device. Value must be a string")
    attachment = await call(
        request,
        "conductor.attach_volume",
        {
            "instance_uuid": request.match_info["server_id"],
            "volume_id": body["volumeId"],
            "device": body.get("device"),
        },
        timeout=120,
    )
    return json_response({"volumeAttachment": _attachment(attachment)})


async def detach_volume(request: web.Request) -> web.Response:
    await call(
        request,
        "conductor.detach_volume",
        {"instance_uuid": request.match_info["server_id"], "volume_id": request.match_info["volume_id"]},
        timeout=120,
    )
    return web.Response(status=202)


def flavor_view(request: web.Request, flavor: dict[str, Any], *, detail: bool) -> dict[str, Any]:
    view = {"id": flavor["id"], "name": flavor["name"], "links": _links(request, "flavors", flavor["id"])}
    if detail:
        view.update(
            {
                "vcpus": flavor["vcpus"],
                "ram": flavor["ram"],
                "disk": flavor["disk"],
                "OS-FLV-EXT-DATA:ephemeral": flavor["ephemeral"],
                "swap": flavor["swap"] or "",
                "rxtx_factor": 1.0,
                "os-flavor-access:is_public": bool(flavor["is_public"]),
                "OS-FLV-DISABLED:disabled": False,
            }
        )
    return view


async def list_flavors(request: web.Request) -> web.Response:
    flavors = await call(request, "conductor.list_flavors")
    return json_response({"flavors": [flavor_view(request, f, detail=False) for f in flavors]})


async def list_flavors_detail(request: web.Request) -> web.Response:
    flavors = await call(request, "conductor.list_flavors")
    return json_response({"flavors": [flavor_view(request, f, detail=True) for f in flavors]})


async def show_flavor(request: web.Request) -> web.Response:
    flavor = await call(request, "conductor.get_flavor", {"flavor_id": request.match_info["flavor_id"]})
    return json_response({"flavor": flavor_view(request, flavor, detail=True)})


def _keypair(keypair: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    shown = {k: keypair[k] for k in ("name", "public_key", "fingerprint")}
    if "private_key" in keypair:
        shown["private_key"] = keypair["private_key"]
    if full:
        shown |= {
            "user_id": keypair["user_id"],
            "created_at": keypair["created_at"],
            "deleted": False,
            "deleted_at": None,
            "updated_at": None,
            "id": int(hashlib.sha256(f"{keypair['user_id']}/{keypair['name']}".encode()).hexdigest()[:7], 16),
        }
    return shown


async def create_keypair(request: web.Request) -> web.Response:
    keypair = await json_body(request, "keypair")
    unknown = set(keypair) - {"name", "public_key", "type", "user_id"}
    if unknown:
        raise InvalidRequest(
            f"Additional properties are not allowed ({', '.join(sorted(unknown))} were unexpected)"
        )
    created = await call(
        request,
        "conductor.create_keypair",
        {"name": keypair.get("name"), "public_key": keypair.get("public_key")},
    )
    return json_response({"keypair": {**_keypair(created), "user_id": created["user_id"]}})


async def list_keypairs(request: web.Request) -> web.Response:
    keypairs = await call(request, "conductor.list_keypairs")
    return json_response({"keypairs": [{"keypair": _keypair(k)} for k in keypairs]})


async def show_keypair(request: web.Request) -> web.Response:
    keypair = await call(request, "conductor.get_keypair", {"name": request.match_info["name"]})
    return json_response({"keypair": _keypair(keypair, full=True)})


async def delete_keypair(request: web.Request) -> web.Response:
    await call(request, "conductor.delete_keypair", {"name": request.match_info["name"]})
    return web.Response(status=202)


async def limits(request: web.Request) -> web.Response:
    """Nova's limits: no quotas are enforced, so every maximum is -1 (unlimited); usage is real."""
    usage = await call(request, "conductor.project_usage")
    unlimited = (
        "maxTotalInstances", "maxTotalCores", "maxTotalRAMSize", "maxServerMeta", "maxImageMeta",
        "maxPersonality", "maxPersonalitySize", "maxTotalKeypairs", "maxSecurityGroups",
        "maxSecurityGroupRules", "maxServerGroups", "maxServerGroupMembers", "maxTotalFloatingIps",
    )  # fmt: skip
    absolute: dict[str, int] = dict.fromkeys(unlimited, -1)
    absolute |= {
        "totalInstancesUsed": usage["instances"],
        "totalCoresUsed": usage["cores"],
        "totalRAMUsed": usage["ram"],
        "totalSecurityGroupsUsed": 0,
        "totalFloatingIpsUsed": 0,
        "totalServerGroupsUsed": 0,
    }
    return json_response({"limits": {"rate": [], "absolute": absolute}})


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post(f"{BASE}/servers", create_server)
    router.add_get(f"{BASE}/servers", list_servers)
    router.add_get(f"{BASE}/servers/detail", list_servers_detail)
    router.add_get(f"{BASE}/servers/{{server_id}}", show_server)
    router.add_delete(f"{BASE}/servers/{{server_id}}", delete_server)
    router.add_post(f"{BASE}/servers/{{server_id}}/action", server_action)
    router.add_get(f"{BASE}/os-keypairs", list_keypairs)
    router.add_post(f"{BASE}/os-keypairs", create_keypair)
    router.add_get(f"{BASE}/os-keypairs/{{name}}", show_keypair)
    router.add_delete(f"{BASE}/os-keypairs/{{name}}", delete_keypair)
    router.add_get(f"{BASE}/limits", limits)
    router.add_get(f"{BASE}/servers/{{server_id}}/os-volume_attachments", list_volume_attachments)
    router.add_post(f"{BASE}/servers/{{server_id}}/os-volume_attachments", attach_volume)
    router.add_delete(f"{BASE}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}", detach_volume)
    router.add_get(f"{BASE}/flavors", list_flavors)
    router.add_get(f"{BASE}/flavors/detail", list_flavors_detail)
    router.add_get(f"{BASE}/flavors/{{flavor_id}}", show_flavor)
