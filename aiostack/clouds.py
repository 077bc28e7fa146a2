"""Where the CLI finds its cloud: ``--os-cloud``/``$OS_CLOUD`` in clouds.yaml, as OpenStack's clients do.

The files are searched in openstacksdk's order — ``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml`` — and then the data directory's
``clouds.yaml`` that `aiostack up` writes; the first file naming the cloud gives it. What a
cloud's ``auth`` holds fills what the command line and the ``OS_*`` variables left open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class CloudNotFound(LookupError):
    """No clouds.yaml searched names the cloud."""


@dataclass(frozen=True, slots=True)
class CloudAuth:
    """What the CLI logs in with: the gateway and a user (each None where the cloud says nothing)."""

    url: str | None
    username: str | None
    password: str | None
    project: str | None
    cacert: str | None = None
    """The CA (PEM file) the gateway's HTTPS certificate is checked against (None: the system's)."""


def clouds_files(data_dir: Path) -> list[Path]:
    """The clouds.yaml files searched, in order."""
    files = [Path(os.environ["OS_CLIENT_CONFIG_FILE"])] if os.environ.get("OS_CLIENT_CONFIG_FILE") else []
    files += [
        Path.cwd() / "clouds.yaml",
        Path.home() / ".config" / "openstack" / "clouds.yaml",
        Path("/etc/openstack/clouds.yaml"),
        data_dir / "clouds.yaml",
    ]
    return files


def gateway_of(auth_url: str) -> str:
    """The gateway's URL from an identity URL (``http://host:port/identity/v3`` -> ``http://host:port``)."""
    return auth_url.split("/identity")[0].rstrip("/")


def find_cloud(name: str, data_dir: Path) -> CloudAuth:
    """The named cloud's gateway and user.

    :raises CloudNotFound: no file searched names it (the message lists the files).
    """
    searched = clouds_files(data_dir)
    for path in searched:
        if not path.is_file():
            continue
        clouds: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}).get("clouds") or {}
        if name in clouds:
            auth = clouds[name].get("auth") or {}
            return CloudAuth(
                url=gateway_of(auth["auth_url"]) if auth.get("auth_url") else None,
                username=auth.get("username"),
                password=auth.get("password"),
                project=auth.get("project_name"),
                cacert=clouds[name].get("cacert"),
            )
    raise CloudNotFound(f"no cloud named {name!r} in {', '.join(map(str, searched))}")
