"""A crash dump triggered in a guest: an NMI injected into its domain (libvirt's ``injectNMI``).

A guest kernel configured for it (kdump, ``kernel.unknown_nmi_panic``) dumps its memory and
reboots; what it does is the guest's business, so no state changes here. libvirt's answers
become Nova's: a driver without NMI injection is ``InvalidRequest`` ("Triggering crash dump is not
supported"), a domain that is not running ``Conflict``.
"""

from __future__ import annotations

import libvirt

from bus import Conflict, InvalidRequest
from node.hypervisor import Hypervisor

NOT_SUPPORTED = "Triggering crash dump is not supported"
"""Nova's ``TriggerCrashDumpNotSupported``."""


async def inject_nmi(hypervisor: Hypervisor, instance_uuid: str) -> None:
    """Inject an NMI into the instance's running domain.

    :raises NotFound: libvirt has no domain for it.
    :raises Conflict: the domain is not running.
    :raises InvalidRequest: the driver cannot inject an NMI.
    """
    domain = await hypervisor.existing(instance_uuid)
    try:
        await hypervisor.virt(domain.injectNMI, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            raise InvalidRequest(NOT_SUPPORTED) from None
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            raise Conflict(f"Instance {instance_uuid} is not running.") from None
        raise
