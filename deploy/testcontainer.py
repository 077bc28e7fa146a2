"""A tiny container image for LXC nodes, built from Debian's busybox-static (``node.lxc.rootfs``).

Run ``python -m deploy.testcontainer --url URL`` (and ``--password``, or ``$OS_PASSWORD``) to
register it with a running aiostack as the public image ``busybox-rootfs`` (container_format
``docker``, disk_format ``raw``: a root filesystem tar); ``--flavor ID`` also makes that flavor a
container flavor (its extra spec ``capabilities:hypervisor_type=lxc``: its instances go to LXC
nodes, ``aiostack up --lxc-nodes N``, and nowhere else).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from node.lxc.rootfs import CONTAINER_FORMAT, DISK_FORMAT, busybox_rootfs

CONTAINER_SPEC = {"capabilities:hypervisor_type": "lxc"}


async def register(args: argparse.Namespace, archive: Path) -> dict[str, str]:
    """Upload the image (and mark the flavor); what was made."""
    from aiostack.client import Client

    async with Client(args.url) as client:
        await client.login(args.username, args.password, args.project)
        image = await client.upload_image(
            args.name,
            archive,
            disk_format=DISK_FORMAT,
            container_format=CONTAINER_FORMAT,
            visibility="public",
        )
        made = {"image": str(image["id"])}
        if args.flavor:
            path = f"/compute/v2.1/flavors/{args.flavor}/os-extra_specs"
            await client.request("POST", path, {"extra_specs": CONTAINER_SPEC})
            made["container flavor"] = args.flavor
        return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.testcontainer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", required=True, help="the aiostack gateway")
    parser.add_argument("--name", default="busybox-rootfs", help="the image's name")
    parser.add_argument("--flavor", help="make this flavor (id) a container flavor")
    parser.add_argument("--username", default=os.environ.get("OS_USERNAME", "admin"))
    parser.add_argument("--password", default=os.environ.get("OS_PASSWORD"))
    parser.add_argument("--project", default=os.environ.get("OS_PROJECT_NAME", "admin"))
    args = parser.parse_args(argv)
    if not args.password:
        raise SystemExit("a password is needed to register: --password or $OS_PASSWORD")
    with tempfile.TemporaryDirectory() as directory:
        archive = busybox_rootfs(Path(directory) / "busybox-rootfs.tar.gz")
        for kind, made in asyncio.run(register(args, archive)).items():
            print(f"{kind}: {made}")


if __name__ == "__main__":
    main()
