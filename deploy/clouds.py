"""`clouds.yaml` and `openrc` in the data directory, as DevStack writes them, for OpenStack's own tools.

    OS_CLIENT_CONFIG_FILE=<data-dir>/clouds.yaml OS_CLOUD=aiostack-admin openstack server list
    source <data-dir>/openrc [admin|demo]; openstack server list

The passwords are known on first start only (the identity actor keeps argon2id hashes), so they are
written then, into owner-only files; later starts keep them and update the auth URL (the
listen address may change). clouds.yaml is JSON, which is YAML too, so it is read back without
a YAML library.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from deploy.privacy import write_private

USERS = ("admin", "demo")


def cloud_name(user: str) -> str:
    return f"aiostack-{user}"


def write_client_files(
    data_dir: Path, gateway_url: str, passwords: dict[str, str], ca: Path | None = None
) -> tuple[Path, Path]:
    """Write (or refresh) clouds.yaml and openrc; ``passwords``: user -> password, {} after first
    start; ``ca``: the certificate the clients trust for the gateway's HTTPS (None: the system's)."""
    clouds_file, openrc_file = data_dir / "clouds.yaml", data_dir / "openrc"
    auth_url = f"{gateway_url}/identity/v3"
    known: dict[str, str] = {}
    if clouds_file.exists():
        for user in USERS:
            entry = json.loads(clouds_file.read_text())["clouds"].get(cloud_name(user), {})
            if entry.get("auth", {}).get("password"):
                known[user] = entry["auth"]["password"]
    known |= passwords
    clouds = {
        cloud_name(user): {
            "auth": {
                "auth_url": auth_url,
                "username": user,
                "project_name": user,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
                **({"password": known[user]} if user in known else {}),
            },
            "region_name": "RegionOne",
            "interface": "public",
            "identity_api_version": 3,
            **({"cacert": str(ca)} if ca is not None else {}),
        }
        for user in USERS
    }
    write_private(clouds_file, json.dumps({"clouds": clouds}, indent=2) + "\n")
    cases = "\n".join(
        f"    {user}) export OS_PASSWORD={shlex.quote(known.get(user, ''))} ;;" for user in USERS
    )
    write_private(
        openrc_file,
        f"""# source {openrc_file} [admin|demo]: what OpenStack's clients read (written by aiostack up)
_aiostack_user=${{1:-admin}}
export OS_AUTH_URL={shlex.quote(auth_url)}
export OS_IDENTITY_API_VERSION=3
export OS_USERNAME="$_aiostack_user"
export OS_PROJECT_NAME="$_aiostack_user"
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=RegionOne
export AIOSTACK_URL={shlex.quote(gateway_url)}
{f"export OS_CACERT={shlex.quote(str(ca))}" if ca is not None else "unset OS_CACERT"}
case "$_aiostack_user" in
{cases}
esac
unset _aiostack_user
""",
    )
    return clouds_file, openrc_file
