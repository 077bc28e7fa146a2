"""Which QEMU accelerator a node's guests get: KVM only where KVM can really run a guest.

"vmx/svm in /proc/cpuinfo" and "/dev/kvm exists" are not enough: a nested or paravirtual KVM
may accept a domain that then never boots, or lack CPU features the guest's CPU model needs.
The probe runs QEMU itself under KVM on a 64 KiB firmware whose reset vector writes to the
``isa-debug-exit`` port: QEMU exits with a known status only if guest code really ran, and
any "host doesn't support requested feature" warning means the guest CPU model cannot be
given. Anything short of that means TCG (``type='qemu'``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

VIRT_TYPES = ("auto", "kvm", "qemu")
PROBE_EXIT_STATUS = (0x2A << 1) | 1
# mov al, 0x2a; out 0xf4, al; hlt; jmp $  -- at the reset vector F000:FFF0
RESET_VECTOR_CODE = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class VirtTypeChoice:
    domain_type: str
    reason: str


def probe_firmware() -> bytes:
    firmware = bytearray(b"\xf4" * 65536)
    firmware[0xFFF0 : 0xFFF0 + len(RESET_VECTOR_CODE)] = RESET_VECTOR_CODE
    return bytes(firmware)


async def kvm_problem(emulator: str = "qemu-system-x86_64") -> str | None:
    """Why KVM cannot run a guest here, or None when it can."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not accessible"
    binary = shutil.which(emulator)
    if binary is None:
        return f"{emulator} is not installed"
    with tempfile.TemporaryDirectory(prefix="aiostack-kvm-probe-") as directory:
        firmware = Path(directory) / "probe.rom"
        firmware.write_bytes(probe_firmware())
        process = await asyncio.create_subprocess_exec(
            binary, "-machine", "pc,accel=kvm", "-nodefaults", "-display", "none", "-no-user-config",
            "-bios", str(firmware), "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                _, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return f"a KVM guest did not run its first instruction within {PROBE_TIMEOUT:.0f} s"
    message = stderr.decode(errors="replace").strip()
    if process.returncode != PROBE_EXIT_STATUS:
        return f"QEMU could not run a KVM guest (exit {process.returncode}): {message[:300]}"
    if "doesn't support requested feature" in message:
        missing = message.splitlines()[0].split("feature:", 1)[-1].strip()
        return f"KVM lacks CPU features the guest CPU model needs ({missing})"
    return None


async def choose_virt_type(requested: str, *, local: bool) -> VirtTypeChoice:
    """``kvm`` or ``qemu`` for ``requested`` (auto|kvm|qemu); auto probes a local host."""
    if requested not in VIRT_TYPES:
        raise ValueError(f"virt type must be one of {', '.join(VIRT_TYPES)}, not {requested!r}")
    if requested != "auto":
        return VirtTypeChoice(requested, f"asked for {requested}")
    if not local:
        return VirtTypeChoice("qemu", "auto on a remote libvirt: KVM cannot be probed from here, using TCG")
    problem = await kvm_problem()
    if problem is None:
        return VirtTypeChoice("kvm", "KVM ran a probe guest with the default CPU model")
    return VirtTypeChoice("qemu", f"TCG, because {problem}")
