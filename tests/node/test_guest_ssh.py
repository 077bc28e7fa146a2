"""A real guest runs an SSH server: root logs in with its key pair's key (or its admin password).

The test guest of ``deploy.testguest`` takes root's authorized keys from its config drive's
``public_keys``, makes a host key at boot and runs dropbear on port 22 once it has its address
(``AIOSTACK-SSH keys=N host_key=BASE64``). The host holds its DHCP port's address of the subnet on
the guest network's bridge (the gateway's is left to a router), so it reaches the guest's fixed IP
and logs in with Debian's ssh; the guest routes the metadata service through that address and the
rest through the gateway, as DHCP told it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from pathlib import Path

from tests.node.real_guests import GUEST_DEADLINE, QemuCloud, qemu_running

PASSWORD = "Secret-Pass-2"
METADATA = "/config/openstack/latest/meta_data.json"


async def run(*argv: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a command on the host (the event loop, and the actors on it, keep running); its exit
    status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(GUEST_DEADLINE):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def ssh_argv(address: str, *options: str) -> list[str]:
    """``ssh`` to root on ``address``: no config file, no host key remembered; ``options`` come
    first, so they win over these defaults (ssh takes an option's first value)."""
    return [
        "ssh", *options, "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR",
        f"root@{address}",
    ]  # fmt: skip


def with_key(key: Path) -> list[str]:
    """Options to log in with that key alone, never asking for a password."""
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]


async def test_root_logs_into_a_real_guest_with_its_key_pair_and_no_other_key(
    qemu_cloud: QemuCloud,
    tmp_path: Path,
) -> None:
    client = qemu_cloud.client
    keypair = (await client.request("POST", "/compute/v2.1/os-keypairs", {"keypair": {"name": "login"}}))[
        "keypair"
    ]
    key = tmp_path / "login"
    key.write_text(keypair["private_key"])
    key.chmod(0o600)
    other = tmp_path / "other"
    assert (await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other))[0] == 0

    # the project's default group lets in only its own members: open SSH to it, as a user does
    # (``openstack security group rule create --protocol tcp --dst-port 22 default``)
    groups = await client.request("GET", "/network/v2.0/security-groups?name=default")
    ssh = {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}
    ssh["security_group_id"] = groups["security_groups"][0]["id"]
    await client.request("POST", "/network/v2.0/security-group-rules", {"security_group_rule": ssh})

    body = {
        "name": "reachable",
        "imageRef": qemu_cloud.images["disk"],
        "flavorRef": "1",
        "key_name": "login",
        "adminPass": PASSWORD,
    }
    server_id = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"]
    async with asyncio.timeout(GUEST_DEADLINE):
        while (server := await client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    [port] = server["addresses"]["default"]
    address = port["addr"]
    said = await qemu_cloud.console_until(server_id, r"AIOSTACK-SSH keys=(\d+) host_key=(\S+)")
    assert said.group(1) == "1"

    # the host holds an address of the subnet that is not the gateway's (its DHCP port's), on the
    # bridge the guest's port is plugged into
    network_id = (await client.request("GET", "/network/v2.0/networks?name=default"))["networks"][0]["id"]
    [subnet] = (await client.request("GET", f"/network/v2.0/subnets?network_id={network_id}"))["subnets"]
    status, route, _ = await run("ip", "-o", "route", "get", address)
    assert status == 0, route
    source = route.split(" src ")[1].split()[0]
    assert ipaddress.ip_address(source) in ipaddress.ip_network(subnet["cidr"]), route
    assert source != subnet["gateway_ip"], route
    status, held, _ = await run("ip", "-o", "-4", "addr", "show", "to", source)
    assert status == 0 and held.split()[1] == route.split(" dev ")[1].split()[0], (held, route)

    status, scanned, _ = await run("ssh-keyscan", "-T", "30", "-t", "ed25519", address)
    assert status == 0 and scanned.split()[1:] == ["ssh-ed25519", said.group(2)], scanned

    command = f"id -un; stat -c %a /root/.ssh /root/.ssh/authorized_keys; cat {METADATA}"
    status, out, err = await run(*ssh_argv(address, *with_key(key)), command)
    assert status == 0, err
    user, ssh_dir_mode, keys_mode, metadata = out.splitlines()
    assert (user, ssh_dir_mode, keys_mode) == ("root", "700", "600")
    meta = json.loads(metadata)
    assert meta["uuid"] == server_id
    assert meta["public_keys"] == {"login": keypair["public_key"]}

    status, out, err = await run(*ssh_argv(address, *with_key(key)), "ip route")
    assert status == 0, err
    routes = {" ".join(line.split()[:5]) for line in out.splitlines()}
    assert f"default via {subnet['gateway_ip']} dev eth0" in routes, out
    assert f"169.254.169.254 via {source} dev eth0" in routes, out

    status, out, err = await run(*ssh_argv(address, *with_key(other)), "echo", "in")
    assert status == 255 and out == "" and "Permission denied" in err, (status, out, err)

    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho {PASSWORD}\n")
    askpass.chmod(0o700)
    environment = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    by_password = ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
    status, out, err = await run(*ssh_argv(address, *by_password), "echo", "by-password", env=environment)
    assert (status, out) == (0, "by-password\n"), err

    await client.server_action(server_id, "delete", wait=True)
    assert not qemu_running(server_id)
    assert await qemu_cloud.node.hypervisor.domain(server_id) is None
