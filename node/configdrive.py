"""The config drive: what a real guest learns of itself at boot, as Nova's config drive tells it.

An ISO 9660 image labelled ``config-2`` (Rock Ridge and Joliet names, as genisoimage makes for
Nova), attached read-only as an IDE CD-ROM, holding under ``openstack/latest/``:

* ``meta_data.json``: uuid, name, hostname, project, availability zone, the server's metadata
  (``meta``), its key pair's public key (``public_keys``, ``keys``), ``admin_pass``, a
  ``random_seed``;
* ``network_data.json``: one link per port (its MAC, MTU) and, on it, an IPv4 network served by
  DHCP (``ipv4_dhcp``) with the address the API lists;
* ``user_data``: the user data, decoded (only when there is some);
* ``vendor_data.json`` and ``vendor_data2.json``: empty objects.

cloud-init finds it by its label; the test guest (``deploy/testguest.py``) mounts it too. The
image holds the administrator password, so it is written owner-only (0600), in the instance's
directory (``disk.config``, removed with it). Built with pycdlib (pure Python: no genisoimage
process per boot, and nothing to install on a compute host).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pycdlib

from api.conductor import BuildRequest, Instance
from api.net import Port

LABEL = "config-2"
FILE_NAME = "disk.config"
TARGET = "hdd"
"""Where Nova's libvirt driver puts it on the IDE bus (``disk.config``): clear of the virtio disks."""
RANDOM_SEED_BYTES = 512
FILES = {
    # ISO 9660 level-3 name: the Rock Ridge / Joliet name under openstack/latest/
    "META_DAT.JSO;1": "meta_data.json",
    "NETWORK_.JSO;1": "network_data.json",
    "USER_DAT.;1": "user_data",
    "VENDOR_D.JSO;1": "vendor_data.json",
    "VENDOR_0.JSO;1": "vendor_data2.json",
}


def hostname_of(name: str) -> str:
    """Nova's hostname of a server name: letters, digits and hyphens, at most 63 characters."""
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return host or "server"


def meta_data(
    instance: Instance, public_keys: dict[str, str], admin_pass: str | None = None
) -> dict[str, Any]:
    """OpenStack's ``meta_data.json`` of an instance: the config drive's (with ``admin_pass``) and
    the metadata service's (``node.metadata``, never with it)."""
    meta: dict[str, Any] = {
        "uuid": instance["id"],
        "name": instance["name"],
        "hostname": hostname_of(instance["name"]),
        "launch_index": 0,
        "availability_zone": "nova",
        "project_id": instance["project_id"],
        "meta": instance["metadata"],
        "public_keys": public_keys,
        "keys": [{"name": name, "type": "ssh", "data": key} for name, key in public_keys.items()],
        "devices": [],
        "random_seed": base64.b64encode(secrets.token_bytes(RANDOM_SEED_BYTES)).decode(),
    }
    if admin_pass:
        meta["admin_pass"] = admin_pass
    return meta


def network_data(ports: list[Port], mtus: dict[str, int | None]) -> dict[str, Any]:
    """One link per port and an IPv4 DHCP network on it (OpenStack's network_data.json)."""
    links, networks = [], []
    for index, port in enumerate(ports):
        link = f"tap{port['id'][:11]}"
        links.append(
            {
                "id": link,
                "vif_id": port["id"],
                "type": "bridge",
                "ethernet_mac_address": port["mac_address"],
                "mtu": mtus.get(port["id"]),
            }
        )
        for fixed_ip in port["fixed_ips"]:
            networks.append(
                {
                    "id": f"network{index}",
                    "link": link,
                    "type": "ipv4_dhcp",
                    "network_id": port["network_id"],
                    "ip_address": fixed_ip["ip_address"],
                }
            )
    return {"links": links, "networks": networks, "services": []}


def drive_files(request: BuildRequest, ports: list[Port], mtus: dict[str, int | None]) -> dict[str, bytes]:
    """The config drive's files under ``openstack/latest/``, by name."""
    files = {
        "meta_data.json": json.dumps(
            meta_data(request["instance"], request.get("public_keys") or {}, request.get("admin_pass"))
        ).encode(),
        "network_data.json": json.dumps(network_data(ports, mtus)).encode(),
        "vendor_data.json": b"{}",
        "vendor_data2.json": b"{}",
    }
    if request.get("user_data"):
        files["user_data"] = base64.b64decode(request["user_data"] or "")
    return files


def _write_iso(path: Path, files: dict[str, bytes]) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    iso.add_directory("/OPENSTAC", rr_name="openstack", joliet_path="/openstack")
    iso.add_directory("/OPENSTAC/LATEST", rr_name="latest", joliet_path="/openstack/latest")
    for iso_name, name in FILES.items():
        if name in files:
            data = files[name]
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                f"/OPENSTAC/LATEST/{iso_name}",
                rr_name=name,
                joliet_path=f"/openstack/latest/{name}",
            )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        iso.write_fp(out)
    iso.close()


async def write_config_drive(
    directory: Path, request: BuildRequest, ports: list[Port], mtus: dict[str, int | None]
) -> Path:
    """Write the instance's config drive into ``directory``; its path."""
    path = directory / FILE_NAME
    await asyncio.to_thread(_write_iso, path, drive_files(request, ports, mtus))
    return path
