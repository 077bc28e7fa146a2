"""Domain XML for an instance: what nova's libvirt driver writes, for the test driver and QEMU alike.

Whatever an instance carries into the XML (its name, an image's kernel command line, a volume's
path) is made fit for XML 1.0 first: ElementTree escapes ``<``, ``&`` and quotes, but writes the
characters XML 1.0 has no place for (NUL and the other C0 controls, lone surrogates, U+FFFE) as
they are, and libvirt's parser then refuses the whole definition. Those characters are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

METADATA_NS = "https://aiostack.dev/xmlns/instance/1"

NOT_IN_XML = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""The characters XML 1.0 cannot carry, escaped or not: the complement of its ``Char`` production."""


class DomainSpecError(ValueError):
    """The instance asks for something no domain can have."""


@dataclass(frozen=True, slots=True)
class Disk:
    path: str
    """A file; or, with ``nbd_host``, the name of an NBD export there."""
    target: str
    format: str = "raw"
    bus: str = "virtio"
    serial: str | None = None
    nbd_host: str | None = None
    nbd_port: int = 0
    readonly: bool = False
    """The guest may not write to it (``<readonly/>``)."""
    device: str = "disk"
    """``disk``, or ``cdrom`` (the config drive)."""


@dataclass(frozen=True, slots=True)
class Nic:
    mac: str
    port_id: str
    network: str | None = None
    """A libvirt network; or"""
    bridge: str | None = None
    """a bridge the node made (``node.overlay``); or neither: user-mode (``user_mode``) or ethernet."""
    user_mode: bool = False
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """Everything the domain XML says about one instance."""

    uuid: str
    name: str
    project_id: str
    flavor_name: str
    vcpus: int
    memory_mb: int
    domain_type: str = "test"
    max_vcpus: int | None = None
    """The vCPUs a live change may bring online (None: ``vcpus``, none to add)."""
    max_memory_mb: int | None = None
    """The memory a live change may give the guest through its balloon (None: ``memory_mb``)."""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    console_log: str | None = None


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (``NOT_IN_XML``)."""
    return NOT_IN_XML.sub("", text)


def _fit_for_xml(root: ET.Element) -> ET.Element:
    """Every text and attribute value under ``root`` made ``xml_safe``."""
    for element in root.iter():
        if element.text:
            element.text = xml_safe(element.text)
        for key, value in element.attrib.items():
            element.attrib[key] = xml_safe(value)
    return root


def domain_name(instance_uuid: str) -> str:
    return f"instance-{instance_uuid}"


def tap_name(port_id: str) -> str:
    """The tap of a bridged NIC, as Neutron names it (libvirt would pick ``vnetN``): the node's
    firewall names it before the guest starts."""
    return f"tap{port_id[:11]}"


def disk_bus(image_properties: dict[str, Any]) -> str:
    """The disk bus an image asks for (``hw_disk_bus``, default virtio); libvirt judges the value."""
    return str(image_properties.get("hw_disk_bus") or "virtio")


def domain_xml(spec: DomainSpec) -> str:
    domain = ET.Element("domain", type=spec.domain_type)
    ET.SubElement(domain, "name").text = domain_name(spec.uuid)
    ET.SubElement(domain, "uuid").text = spec.uuid
    metadata = ET.SubElement(ET.SubElement(domain, "metadata"), f"{{{METADATA_NS}}}instance")
    ET.SubElement(metadata, f"{{{METADATA_NS}}}name").text = spec.name
    ET.SubElement(metadata, f"{{{METADATA_NS}}}project").text = spec.project_id
    ET.SubElement(metadata, f"{{{METADATA_NS}}}flavor").text = spec.flavor_name
    set_size(domain, spec.vcpus, spec.memory_mb, spec.max_vcpus, spec.max_memory_mb)
    os_element = ET.SubElement(domain, "os")
    real_guest = spec.domain_type in ("qemu", "kvm")
    os_type = {"arch": "x86_64", "machine": "pc"} if real_guest else {"arch": "x86_64"}
    ET.SubElement(os_element, "type", os_type).text = "hvm"
    if spec.kernel:
        ET.SubElement(os_element, "kernel").text = spec.kernel
        if spec.initrd:
            ET.SubElement(os_element, "initrd").text = spec.initrd
        if spec.cmdline:
            ET.SubElement(os_element, "cmdline").text = spec.cmdline
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    if real_guest:
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    for disk in spec.disks:
        devices.append(disk_element(disk))
    for nic in spec.nics:
        devices.append(interface_element(nic))
    if spec.console_log:
        serial = ET.SubElement(devices, "serial", type="pty")
        ET.SubElement(serial, "log", file=spec.console_log, append="on")
        ET.SubElement(serial, "target", port="0")
        console = ET.SubElement(devices, "console", type="pty")
        ET.SubElement(console, "target", type="serial", port="0")
    if real_guest:
        ET.SubElement(devices, "memballoon", model="virtio" if spec.max_memory_mb else "none")
    return ET.tostring(_fit_for_xml(domain), encoding="unicode")


def set_size(
    domain: ET.Element, vcpus: int, memory_mb: int, max_vcpus: int | None, max_memory_mb: int | None
) -> None:
    """Give a domain definition its vCPUs and memory. With maxima (a flavor that allows live
    changes): ``<vcpu current='vcpus'>max</vcpu>`` and ``<memory>`` the maximum with
    ``<currentMemory>`` the memory (its balloon: a real guest's ``memballoon`` is virtio); without:
    exactly ``vcpus`` and ``memory_mb``, as a domain of any other flavor is."""
    for tag, amount in (("memory", max_memory_mb or memory_mb), ("currentMemory", memory_mb)):
        element = domain.find(tag)
        if element is None and tag == "currentMemory" and not max_memory_mb:
            continue
        if element is None:
            element = ET.SubElement(domain, tag)
        element.text = str(amount)
        element.attrib = {"unit": "MiB"}
    vcpu = domain.find("vcpu")
    if vcpu is None:
        vcpu = ET.SubElement(domain, "vcpu")
    vcpu.text = str(max_vcpus or vcpus)
    vcpu.attrib = {"current": str(vcpus)} if max_vcpus else {}
    balloon = domain.find("devices/memballoon")
    if balloon is not None and max_memory_mb:
        balloon.set("model", "virtio")


def interface_element(nic: Nic) -> ET.Element:
    kind = "network" if nic.network else "bridge" if nic.bridge else "user" if nic.user_mode else "ethernet"
    interface = ET.Element("interface", type=kind)
    ET.SubElement(interface, "mac", address=nic.mac)
    if nic.network:
        ET.SubElement(interface, "source", network=nic.network)
    elif nic.bridge:
        ET.SubElement(interface, "source", bridge=nic.bridge)
    if nic.network or nic.bridge:
        ET.SubElement(interface, "target", dev=tap_name(nic.port_id))
    if nic.mtu:
        ET.SubElement(interface, "mtu", size=str(nic.mtu))
    ET.SubElement(interface, "model", type="virtio")
    return interface


def interface_xml(nic: Nic) -> str:
    """A NIC as a device to hot-plug: the element a domain built with it has."""
    return ET.tostring(_fit_for_xml(interface_element(nic)), encoding="unicode")


def interface_macs(xml: str) -> list[str]:
    """The MAC addresses of a domain's NICs, in order."""
    return [
        mac.get("address", "")
        for interface in ET.fromstring(xml_safe(xml)).iter("interface")
        if (mac := interface.find("mac")) is not None
    ]


def disk_element(disk: Disk) -> ET.Element:
    element = ET.Element("disk", type="network" if disk.nbd_host else "file", device=disk.device)
    ET.SubElement(element, "driver", name="qemu", type=disk.format)
    if disk.nbd_host:
        source = ET.SubElement(element, "source", protocol="nbd", name=disk.path)
        ET.SubElement(source, "host", name=disk.nbd_host, port=str(disk.nbd_port))
    else:
        ET.SubElement(element, "source", file=disk.path)
    ET.SubElement(element, "target", dev=disk.target, bus=disk.bus)
    if disk.serial:
        ET.SubElement(element, "serial").text = disk.serial[:20]
    if disk.readonly:
        ET.SubElement(element, "readonly")
    return element


def disk_xml(disk: Disk) -> str:
    return ET.tostring(_fit_for_xml(disk_element(disk)), encoding="unicode")


def next_disk_target(used: set[str], bus: str = "virtio") -> str:
    prefix = "vd" if bus == "virtio" else "sd"
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in used:
            return prefix + letter
    raise DomainSpecError("no free disk target left")


def disk_source(disk: ET.Element) -> str:
    """A disk element's file, or the name of its network (NBD) export ("" for neither)."""
    source = disk.find("source")
    if source is None:
        return ""
    return source.get("file") or source.get("name") or ""


def disk_targets(xml: str) -> dict[str, str]:
    """``{target dev: source file or export name}`` of a domain's disks."""
    root = ET.fromstring(xml)
    targets = {}
    for disk in root.iter("disk"):
        target = disk.find("target")
        if target is not None:
            targets[target.get("dev", "")] = disk_source(disk)
    return targets
