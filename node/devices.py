"""A device added to or taken from a domain: live (``AFFECT_LIVE``) while it runs, and always in its
persistent definition (``AFFECT_CONFIG``); a driver without device hot-plug (libvirt's test driver)
gets the persistent definition changed and defined again. Hot-plugged volumes (``node.volumes``)
and NICs (``node.interfaces``) go through here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from node.hypervisor import Hypervisor

SameDevice = Callable[[ET.Element, ET.Element], bool]
"""Whether an element of the domain's ``<devices>`` is the device being taken away."""


async def change_device(
    hypervisor: Hypervisor, domain: libvirt.virDomain, device_xml: str, *, attach: bool, same: SameDevice
) -> bool:
    """Attach or detach ``device_xml``; whether it was changed live (the domain runs)."""
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    live = await hypervisor.is_running(domain)
    if live:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    change = domain.attachDeviceFlags if attach else domain.detachDeviceFlags
    try:
        await hypervisor.virt(change, device_xml, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        await _redefine_with_device(hypervisor, domain, device_xml, attach=attach, same=same)
        return False
    return live


async def _redefine_with_device(
    hypervisor: Hypervisor, domain: libvirt.virDomain, device_xml: str, *, attach: bool, same: SameDevice
) -> None:
    """For drivers without device hot-plug (the test driver): change the persistent definition."""
    root = ET.fromstring(await hypervisor.persistent_xml(domain))
    devices = root.find("devices")
    assert devices is not None
    device = ET.fromstring(device_xml)
    if attach:
        devices.append(device)
    else:
        for element in list(devices):
            if element.tag == device.tag and same(element, device):
                devices.remove(element)
    await hypervisor.define(ET.tostring(root, encoding="unicode"))
