"""Real guests: QEMU through the system libvirtd, booted through gateway -> scheduler -> conductor -> node.

The guest is the test guest of ``deploy.testguest`` (a Debian kernel and a busybox
initramfs, registered as kernel, ramdisk and disk images); it prints ``AIOSTACK-*`` lines on
its serial console, which the tests read through ``os-getConsoleOutput``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pycdlib
import pytest

from actors.conductor.actor import ConductorActor
from actors.identity.actor import IdentityActor
from actors.image import TINY_NAME, ImageActor
from actors.net.actor import NetActor
from actors.scheduler import SchedulerActor
from actors.volume import VolumeActor
from aiostack.client import Client
from aiostack.sdk import NotFound
from deploy.testguest import TestGuest, register_test_guest
from node.actor import NodeActor
from node.domain import tap_name
from node.libvirtd import ensure_libvirtd, stop_libvirtd
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import DEMO_PASSWORD, aiostack_cli
from tests.node.real_guests import GUEST_DEADLINE, QemuCloud, qemu_cloud_of, qemu_running


async def boot_running_script(client: Client, server: dict[str, Any], script: str) -> str:
    """Boot ``server`` (flavor 1) with ``script`` as its user data; its id once it is ACTIVE."""
    body = {"flavorRef": "1", **server, "user_data": base64.b64encode(script.encode()).decode()}
    server_id = str((await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]["id"])
    async with asyncio.timeout(GUEST_DEADLINE):
        while (await client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    return server_id


async def nft_ruleset() -> str:
    process = await asyncio.create_subprocess_exec("nft", "list", "ruleset", stdout=asyncio.subprocess.PIPE)
    output, _ = await process.communicate()
    assert process.returncode == 0
    return output.decode()


async def test_a_real_guest_gets_its_ip_sees_a_hot_plugged_volume_stops_starts_and_leaves_nothing(
    qemu_cloud: QemuCloud,
) -> None:
    client = qemu_cloud.client
    server = await client.create_server("guest-1", image="test-guest", flavor="m1.tiny", wait=True)
    assert server["status"] == "ACTIVE", server
    assert qemu_cloud.node.hypervisor.domain_type in ("qemu", "kvm")
    [address] = server["addresses"]["default"]
    ready = await qemu_cloud.console_until(server["id"], r"AIOSTACK-READY ip=(\S+) disks=(\S+)")
    assert ready.group(1) == address["addr"] and ready.group(2) == "vda"
    assert f"AIOSTACK-READY ip={address['addr']}" in await aiostack_cli(
        client.url, "server", "console", "guest-1", "--lines", "50"
    )
    await client.servers.trigger_crash_dump(server["id"])  # QEMU injects the NMI; the kernel says so
    await qemu_cloud.console_until(server["id"], r"NMI received")
    network_id = (await client.request("GET", "/network/v2.0/networks?name=default"))["networks"][0]["id"]
    mac = address["OS-EXT-IPS-MAC:mac_addr"]
    assert (await qemu_cloud.dhcp_entries(network_id)).get(mac) == address["addr"]
    port = (await client.request("GET", f"/network/v2.0/ports?device_id={server['id']}"))["ports"][0]
    assert port["binding:vif_type"] == "bridge" and port["status"] == "ACTIVE"

    project = client.project_id
    volume = (
        await client.request("POST", f"/volume/v3/{project}/volumes", {"volume": {"size": 1, "name": "data"}})
    )["volume"]
    async with asyncio.timeout(30):
        while (await client.request("GET", f"/volume/v3/{project}/volumes/{volume['id']}"))["volume"][
            "status"
        ] != "available":
            await asyncio.sleep(0.2)
    attachment = await client.request(
        "POST",
        f"/compute/v2.1/servers/{server['id']}/os-volume_attachments",
        {"volumeAttachment": {"volumeId": volume["id"]}},
    )
    assert attachment["volumeAttachment"]["device"] == "/dev/vdb"
    added = await qemu_cloud.console_until(server["id"], r"AIOSTACK-DISK-ADDED name=vdb bytes=(\d+)")
    assert int(added.group(1)) == 1024**3

    await client.server_action(server["id"], "stop", wait=True)
    assert (await client.server(server["id"]))["status"] == "SHUTOFF"
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-POWEROFF reason=acpi")
    assert not qemu_running(server["id"])

    await client.server_action(server["id"], "start", wait=True)
    again = await qemu_cloud.console_until(server["id"], r"AIOSTACK-READY ip=(\S+) disks=(\S+)", count=2)
    assert again.group(1) == address["addr"] and again.group(2) == "vda,vdb"
    await client.request(
        "DELETE", f"/compute/v2.1/servers/{server['id']}/os-volume_attachments/{volume['id']}"
    )
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-DISK-REMOVED name=vdb")

    instance_dir = qemu_cloud.node.images.instance_dir(server["id"])
    assert (instance_dir / "disk").exists()
    await client.server_action(server["id"], "delete", wait=True)
    assert not qemu_running(server["id"])
    assert not instance_dir.exists()
    assert mac not in await qemu_cloud.dhcp_entries(network_id)
    volume_after = (await client.request("GET", f"/volume/v3/{project}/volumes/{volume['id']}"))["volume"]
    assert volume_after["status"] == "available" and volume_after["attachments"] == []
    assert (await client.request("GET", f"/network/v2.0/ports?device_id={server['id']}"))["ports"] == []


def config_drive_file(path: Path, name: str) -> bytes:
    """A file of ``openstack/latest/`` on a config drive, read by its Rock Ridge name."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/openstack/latest/{name}")
        return out.getvalue()
    finally:
        iso.close()


async def test_a_real_guest_reads_its_config_drive_its_root_password_key_and_user_data_run(
    qemu_cloud: QemuCloud,
) -> None:
    client = qemu_cloud.client
    keypairs = "/compute/v2.1/os-keypairs"
    key = (await client.request("POST", keypairs, {"keypair": {"name": "mine"}}))["keypair"]
    script = "#!/bin/sh\necho user-data-ran-$(cat /proc/sys/kernel/hostname)\n"
    body = {
        "name": "configured",
        "imageRef": qemu_cloud.images["disk"],
        "flavorRef": "1",
        "adminPass": "Secret-Pass-1",
        "key_name": "mine",
        "metadata": {"role": "web"},
        "user_data": base64.b64encode(script.encode()).decode(),
    }
    created = (await client.request("POST", "/compute/v2.1/servers", {"server": body}))["server"]
    assert created["adminPass"] == "Secret-Pass-1"
    server_id = created["id"]
    async with asyncio.timeout(GUEST_DEADLINE):
        while (await client.server(server_id))["status"] != "ACTIVE":
            await asyncio.sleep(0.2)
    said = await qemu_cloud.console_until(server_id, r"AIOSTACK-CONFIG-DRIVE uuid=(\S+) admin_pass=(\S+)")
    assert said.groups() == (server_id, "set")
    ran = await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=(\d+) output=(\S+)")
    assert ran.group(1) == "0" and ran.group(2).startswith("user-data-ran-")

    drive = qemu_cloud.node.images.instance_dir(server_id) / "disk.config"
    assert drive.stat().st_mode & 0o777 == 0o600  # it holds the password
    meta = json.loads(config_drive_file(drive, "meta_data.json"))
    assert (meta["uuid"], meta["admin_pass"], meta["meta"]) == (server_id, "Secret-Pass-1", {"role": "web"})
    assert meta["public_keys"] == {"mine": key["public_key"]}
    assert config_drive_file(drive, "user_data").decode() == script
    network = json.loads(config_drive_file(drive, "network_data.json"))
    [address] = (await client.server(server_id))["addresses"]["default"]
    assert network["links"][0]["ethernet_mac_address"] == address["OS-EXT-IPS-MAC:mac_addr"]
    assert network["networks"][0]["ip_address"] == address["addr"]

    await client.server_action(server_id, "delete", wait=True)
    assert not drive.exists()


@pytest.mark.full_size
async def test_a_real_guests_snapshot_holds_what_it_wrote_and_boots(qemu_cloud: QemuCloud) -> None:
    client = qemu_cloud.client

    async def boot(name: str, image: str, script: str) -> str:
        return await boot_running_script(client, {"name": name, "imageRef": image}, script)

    writer = await boot(
        "writer",
        qemu_cloud.images["disk"],
        "printf SNAPSHOT-STAMP | dd of=/dev/vda bs=1 seek=4096 conv=notrunc,fsync",
    )
    await qemu_cloud.console_until(writer, r"AIOSTACK-USER-DATA exit=0")
    await client.request(
        "POST", f"/compute/v2.1/servers/{writer}/action", {"createImage": {"name": "stamped"}}
    )
    async with asyncio.timeout(GUEST_DEADLINE):
        while True:
            images = (await client.request("GET", "/image/v2/images?name=stamped"))["images"]
            if images and images[0]["status"] == "active":
                break
            await asyncio.sleep(0.5)
    snapshot = images[0]
    assert snapshot["disk_format"] == "qcow2" and snapshot["instance_uuid"] == writer
    reader = await boot("reader", snapshot["id"], "dd if=/dev/vda bs=1 skip=4096 count=14 2>/dev/null")
    read = await qemu_cloud.console_until(reader, r"AIOSTACK-USER-DATA exit=0 output=(\S+)")
    assert read.group(1) == "SNAPSHOT-STAMP"
    assert not (qemu_cloud.node.images.instance_dir(writer) / "snapshot.qcow2").exists()
    for server_id in (writer, reader):
        await client.server_action(server_id, "delete", wait=True)


@pytest.mark.full_size
async def test_a_real_guest_boots_from_a_volume_whose_writes_outlive_the_server(
    qemu_cloud: QemuCloud,
) -> None:
    client, project = qemu_cloud.client, qemu_cloud.client.project_id
    volumes = f"/volume/v3/{project}/volumes"
    volume = (
        await client.request("POST", volumes, {"volume": {"size": 1, "imageRef": qemu_cloud.images["disk"]}})
    )["volume"]
    async with asyncio.timeout(GUEST_DEADLINE):
        while (shown := (await client.request("GET", f"{volumes}/{volume['id']}"))["volume"])[
            "status"
        ] == "creating":
            await asyncio.sleep(0.2)
    assert shown["status"] == "available" and shown["bootable"] == "true", shown

    async def boot(name: str, script: str) -> str:
        mapping = {"uuid": volume["id"], "source_type": "volume", "destination_type": "volume"}
        server = {"name": name, "block_device_mapping_v2": [{**mapping, "boot_index": 0}]}
        return await boot_running_script(client, server, script)

    writer = await boot(
        "bfv-writer", "printf VOLUME-STAMP | dd of=/dev/vda bs=1 seek=4096 conv=notrunc,fsync"
    )
    root = await qemu_cloud.console_until(writer, r"AIOSTACK-DISK name=vda bytes=(\d+)")
    assert int(root.group(1)) == 1024**3  # its root disk is the 1 GiB volume, not the image's 8 MiB
    await qemu_cloud.console_until(writer, r"AIOSTACK-USER-DATA exit=0")
    assert not (qemu_cloud.node.images.instance_dir(writer) / "disk").exists()
    await client.server_action(writer, "delete", wait=True)
    kept = (await client.request("GET", f"{volumes}/{volume['id']}"))["volume"]
    assert kept["status"] == "available" and kept["attachments"] == []

    reader = await boot("bfv-reader", "dd if=/dev/vda bs=1 skip=4096 count=12 2>/dev/null")
    read = await qemu_cloud.console_until(reader, r"AIOSTACK-USER-DATA exit=0 output=(\S+)")
    assert read.group(1) == "VOLUME-STAMP"  # what the first server wrote, read by the second
    await client.server_action(reader, "delete", wait=True)
    await client.request("DELETE", f"{volumes}/{volume['id']}")


@pytest.mark.full_size
async def test_a_guest_that_powers_itself_off_becomes_shutoff_without_any_call(
    qemu_cloud: QemuCloud, test_guest: TestGuest
) -> None:
    client = qemu_cloud.client
    properties = {
        "kernel_id": qemu_cloud.images["kernel"],
        "ramdisk_id": qemu_cloud.images["ramdisk"],
        "os_command_line": f"{test_guest.cmdline} aiostack.poweroff_after=1",
    }
    await client.upload_image("self-stopping", test_guest.disk, properties=properties)
    async with client.subscribe(("instance",)) as stream:
        server = await client.create_server("guest-2", image="self-stopping", flavor="m1.tiny", wait=True)
        async with asyncio.timeout(GUEST_DEADLINE):
            async for event in stream:
                if event["id"] == server["id"] and event["type"] == "instance.shutoff":
                    break
    assert event["state"]["cause"]["domain_event"] == "STOPPED"
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-POWEROFF reason=self")
    assert (await client.server(server["id"]))["status"] == "SHUTOFF"
    await client.server_action(server["id"], "delete", wait=True)


@pytest.mark.full_size
async def test_a_guest_that_ignores_acpi_is_destroyed_after_the_shutdown_timeout(
    start_actor, config, gateway_url, test_guest
) -> None:
    async for cloud in qemu_cloud_of(start_actor, config, gateway_url, test_guest, shutdown_timeout=2.0):
        client = cloud.client
        server = await client.create_server("no-os", image=TINY_NAME, flavor="m1.tiny", wait=True)
        await client.server_action(server["id"], "stop", wait=True)
        assert (await client.server(server["id"]))["status"] == "SHUTOFF"
        assert not qemu_running(server["id"])
        await client.server_action(server["id"], "delete", wait=True)


@pytest.mark.full_size
async def test_a_suspended_guest_is_deleted_with_its_managed_save_image(qemu_cloud: QemuCloud) -> None:
    """Suspend is libvirt's managed save (the guest's memory in a file, QEMU gone); libvirt refuses
    a plain undefine while that file exists, so the delete must take it with the domain."""
    client, node = qemu_cloud.client, qemu_cloud.node
    server = await client.create_server("saved", image=TINY_NAME, flavor="m1.tiny", wait=True)
    await client.request("POST", f"/compute/v2.1/servers/{server['id']}/action", {"suspend": None})
    domain = await asyncio.to_thread(node.hypervisor.connection.lookupByUUIDString, server["id"])
    # QEMU's save sends SUSPENDED (it pauses the guest to write it out), then STOPPED: SUSPENDED
    # is a step of the suspend, not a pause, so the instance ends SUSPENDED
    async with asyncio.timeout(GUEST_DEADLINE):
        while (shown := await client.server(server["id"]))["OS-EXT-STS:task_state"] is not None:
            await asyncio.sleep(0.2)
    assert shown["status"] == "SUSPENDED"
    assert await asyncio.to_thread(domain.hasManagedSaveImage, 0)
    saved = Path("/var/lib/libvirt/qemu/save") / f"instance-{server['id']}.save"
    assert saved.exists() and not qemu_running(server["id"])
    await client.server_action(server["id"], "delete", wait=True)
    assert await node.hypervisor.domain(server["id"]) is None
    assert not saved.exists()
    assert not node.images.instance_dir(server["id"]).exists()
    assert server["id"] not in await node.records.uuids()


@pytest.mark.full_size
async def test_a_guest_keeps_running_and_active_across_a_libvirtd_restart(qemu_cloud: QemuCloud) -> None:
    client, node = qemu_cloud.client, qemu_cloud.node
    server = await client.create_server("guest-3", image="test-guest", flavor="m1.tiny", wait=True)
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-READY")
    old_connection = node.hypervisor.conn
    await asyncio.to_thread(stop_libvirtd)
    await asyncio.to_thread(ensure_libvirtd)
    async with asyncio.timeout(60):
        while node.hypervisor.conn is None or node.hypervisor.conn is old_connection:
            await asyncio.sleep(0.1)
    assert qemu_running(server["id"])
    assert (await client.server(server["id"]))["status"] == "ACTIVE"
    domain = await asyncio.to_thread(node.hypervisor.connection.lookupByUUIDString, server["id"])
    assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    # the callbacks were registered again: the stop's STOPPED event reaches the conductor
    await client.server_action(server["id"], "stop", wait=True)
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-POWEROFF reason=acpi")
    await client.server_action(server["id"], "delete", wait=True)
    assert not qemu_running(server["id"])


async def test_a_real_guest_resized_sees_its_new_memory_and_disk_and_a_revert_gives_the_old_back(
    qemu_cloud: QemuCloud,
) -> None:
    client = qemu_cloud.client
    script = (
        "printf '%s-%s' $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) $(cat /sys/block/vda/size)"
    )
    server_id = await boot_running_script(
        client, {"name": "grower", "imageRef": qemu_cloud.images["disk"]}, script
    )
    before = (await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=0 output=(\S+)")).group(1)
    memory_kb, sectors = (int(value) for value in before.split("-"))
    assert memory_kb < 512 * 1024 and sectors == 1024**3 // 512  # m1.tiny: 512 MB, 1 GB

    resized = await client.servers.resize(server_id, "m1.small", timeout=GUEST_DEADLINE)
    assert resized.status == "VERIFY_RESIZE"
    after = await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=0 output=(\S+)", count=2)
    memory_kb, sectors = (int(value) for value in after.group(1).split("-"))
    assert 512 * 1024 < memory_kb <= 2048 * 1024 and sectors == 20 * 1024**3 // 512  # m1.small
    disk_dir = qemu_cloud.node.images.instance_dir(server_id)
    assert (disk_dir / "disk.resize-backup").exists()

    reverted = await client.servers.revert_resize(server_id, timeout=GUEST_DEADLINE)
    assert reverted.status == "ACTIVE" and reverted.flavor_id == "1"
    again = await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=0 output=(\S+)", count=3)
    memory_kb, sectors = (int(value) for value in again.group(1).split("-"))
    assert memory_kb < 512 * 1024 and sectors == 1024**3 // 512
    assert not (disk_dir / "disk.resize-backup").exists()
    await client.server_action(server_id, "delete", wait=True)


async def guest_size(cloud: QemuCloud, server_id: str, wanted: Callable[[int, int], bool]) -> tuple[int, int]:
    """The CPUs online and ``MemTotal`` (kB) the guest last printed, once ``wanted`` says yes to them."""
    size = (0, 0)
    try:
        async with asyncio.timeout(GUEST_DEADLINE):
            while True:
                sizes = re.findall(
                    r"AIOSTACK-SIZE cpus=(\d+) mem_kb=(\d+)", await cloud.client.console_output(server_id)
                )
                if sizes and wanted(*(size := (int(sizes[-1][0]), int(sizes[-1][1])))):
                    return size
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"the guest's last size: {size}") from None


async def test_a_real_guest_sees_vcpus_hot_plugged_and_its_balloon_moved_live(
    qemu_cloud: QemuCloud, gateway_url: str
) -> None:
    async with Client(gateway_url) as admin:
        await admin.login("admin", ADMIN_PASSWORD, "admin")
        maxima = {"aiostack:max_vcpus": "2", "aiostack:max_ram_mb": "1024"}
        await admin.request("POST", "/compute/v2.1/flavors/1/os-extra_specs", {"extra_specs": maxima})
    client = qemu_cloud.client
    server = await client.create_server("sized", image="test-guest", flavor="m1.tiny", wait=True)
    size = await guest_size(qemu_cloud, server["id"], lambda cpus, kb: kb < 512 * 1024)
    assert size[0] == 1  # of 2: one to plug in; 512 of 1024 MB: the balloon holds the rest

    changed = await client.servers.set_resources(server["id"], vcpus=2, ram=1024, timeout=GUEST_DEADLINE)
    assert (changed.status, changed.vcpus, changed.ram) == ("ACTIVE", 2, 1024)
    await guest_size(qemu_cloud, server["id"], lambda cpus, kb: cpus == 2 and kb > 768 * 1024)

    changed = await client.servers.set_resources(server["id"], ram=512, timeout=GUEST_DEADLINE)
    assert (changed.vcpus, changed.ram) == (2, 512)
    size = await guest_size(qemu_cloud, server["id"], lambda cpus, kb: kb < 512 * 1024)
    assert size[0] == 2
    await client.server_action(server["id"], "delete", wait=True)


async def test_a_real_guest_sees_a_hot_plugged_nic_come_with_its_address_and_go(
    qemu_cloud: QemuCloud,
) -> None:
    client = qemu_cloud.client
    server = await client.create_server("nic-guest", image="test-guest", flavor="m1.tiny", wait=True)
    await qemu_cloud.console_until(server["id"], r"AIOSTACK-READY ip=")
    network = (await client.request("POST", "/network/v2.0/networks", {"network": {"name": "second"}}))[
        "network"
    ]
    subnet = {"network_id": network["id"], "cidr": "10.77.0.0/24", "ip_version": 4}
    await client.request("POST", "/network/v2.0/subnets", {"subnet": subnet})
    body = {"interfaceAttachment": {"net_id": network["id"], "fixed_ips": [{"ip_address": "10.77.0.20"}]}}
    nic = (await client.request("POST", f"/compute/v2.1/servers/{server['id']}/os-interface", body))[
        "interfaceAttachment"
    ]
    added = await qemu_cloud.console_until(server["id"], r"AIOSTACK-NIC-ADDED dev=(\S+) mac=(\S+)")
    assert added.group(2) == nic["mac_addr"]
    lease = await qemu_cloud.console_until(server["id"], rf"AIOSTACK-NIC-IP dev={added.group(1)} addr=(\S*)")
    assert lease.group(1) == "10.77.0.20/24"  # the network's DHCP gave the hot-plugged port its address
    assert (await qemu_cloud.dhcp_entries(network["id"])).get(nic["mac_addr"]) == "10.77.0.20"
    port = (await client.request("GET", f"/network/v2.0/ports/{nic['port_id']}"))["port"]
    assert port["binding:vif_type"] == "bridge" and port["binding:host_id"] == qemu_cloud.node.host
    stored = await qemu_cloud.node.records.stored_xml(server["id"])
    assert stored is not None and tap_name(nic["port_id"]) in stored
    assert tap_name(nic["port_id"]) in await nft_ruleset()  # its security groups filter its tap

    await client.request("DELETE", f"/compute/v2.1/servers/{server['id']}/os-interface/{nic['port_id']}")
    await qemu_cloud.console_until(server["id"], rf"AIOSTACK-NIC-REMOVED dev={added.group(1)}")
    assert nic["mac_addr"] not in await qemu_cloud.node.interfaces.list_interfaces(server["id"])
    assert tap_name(nic["port_id"]) not in await nft_ruleset()
    with pytest.raises(NotFound):
        await client.request("GET", f"/network/v2.0/ports/{nic['port_id']}")
    await client.server_action(server["id"], "delete", wait=True)
    assert not qemu_running(server["id"])


async def test_a_real_guest_shelved_and_unshelved_finds_what_it_wrote_on_its_disk(
    qemu_cloud: QemuCloud,
) -> None:
    """Shelved (powered off by ACPI, its disk uploaded as an image, offloaded at once: the
    conductor's default), then unshelved from that image: the guest reads back the stamp it wrote
    before, and the shelved image is gone."""
    client = qemu_cloud.client
    stamp = "SHELVE-STAMPED"
    script = (
        f"v=$(dd if=/dev/vda bs=1 skip=8192 count={len(stamp)} 2>/dev/null | tr -d '\\000');"
        f" printf {stamp} | dd of=/dev/vda bs=1 seek=8192 conv=notrunc,fsync 2>/dev/null;"
        " printf 'read=%s.' \"$v\""
    )
    server_id = await boot_running_script(
        client, {"name": "shelf", "imageRef": qemu_cloud.images["disk"]}, script
    )
    first = await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=0 output=(\S+)")
    assert first.group(1) == "read=."
    await qemu_cloud.console_until(server_id, r"AIOSTACK-READY")  # its acpid is up: the power button works
    shelved = await client.servers.shelve(server_id, timeout=GUEST_DEADLINE)
    assert shelved.status == "SHELVED_OFFLOADED"
    assert not qemu_running(server_id)
    assert not qemu_cloud.node.images.instance_dir(server_id).exists()  # the host keeps nothing of it
    [image] = (await client.request("GET", "/image/v2/images?name=shelf-shelved"))["images"]
    assert image["status"] == "active" and image["disk_format"] == "qcow2"
    unshelved = await client.servers.unshelve(server_id, timeout=GUEST_DEADLINE)
    assert unshelved.status == "ACTIVE" and qemu_running(server_id)
    again = await qemu_cloud.console_until(server_id, r"AIOSTACK-USER-DATA exit=0 output=(\S+)", count=1)
    assert again.group(1) == f"read={stamp}."  # the new console log: what the first boot wrote survived
    assert (await client.request("GET", "/image/v2/images?name=shelf-shelved"))["images"] == []
    await client.server_action(server_id, "delete", wait=True)
    assert not qemu_running(server_id)


@pytest.mark.full_size
async def test_without_a_bridge_a_guest_falls_back_to_user_mode_networking_and_its_port_says_so(
    start_actor, config, gateway_url, test_guest
) -> None:
    """``qemu:///embed`` (QEMU driven in-process, no libvirtd) has no network driver.

    Its root is short: QEMU's monitor socket path lives under it (108 characters at most). Once a
    process has used the embedded driver, its ``qemu:///system`` connections fail: this test runs
    after every other test of the process that needs libvirtd (the files of those sort before
    this one's).
    """
    embed_root = Path(tempfile.mkdtemp(prefix="aioemb-", dir="/tmp"))
    (embed_root / "etc").mkdir()
    (embed_root / "etc" / "qemu.conf").write_text('user = "root"\ngroup = "root"\n')
    for actor_class in (IdentityActor, SchedulerActor, ConductorActor, ImageActor, NetActor, VolumeActor):
        await start_actor(actor_class, config, secure=True)
    node = await start_actor(
        NodeActor, config, host="embed-1", libvirt_uri=f"qemu:///embed?root={embed_root}", secure=True
    )
    await node.report_capacity()
    async with Client(gateway_url) as client:
        await client.login("demo", DEMO_PASSWORD, "demo")
        await register_test_guest(client, test_guest, name="test-guest")
        server = await client.create_server("guest-4", image="test-guest", flavor="m1.tiny", wait=True)
        assert server["status"] == "ACTIVE", server
        port = (await client.request("GET", f"/network/v2.0/ports?device_id={server['id']}"))["ports"][0]
        assert port["binding:vif_type"] == "user"
        assert "no bridge" in port["binding:vif_details"]["fallback_reason"]
        cloud = QemuCloud(client, node, {})
        await cloud.console_until(server["id"], r"AIOSTACK-READY ip=10\.0\.2\.15 ")
        await client.server_action(server["id"], "delete", wait=True)
        assert not qemu_running(server["id"])
    await node.stop()
    shutil.rmtree(embed_root)
