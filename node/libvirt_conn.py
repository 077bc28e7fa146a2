"""libvirt plumbing for a node: the process-wide event loop registration and the test driver's node file."""

from __future__ import annotations

import asyncio
import logging

import libvirt
import libvirtaio

log = logging.getLogger(__name__)

_registered_loop: asyncio.AbstractEventLoop | None = None


def register_event_loop() -> None:
    """Register libvirtaio on the running loop, once per process, before any ``libvirt.open``.

    libvirt allows one event implementation per process; a second loop cannot take over.
    """
    global _registered_loop
    loop = asyncio.get_running_loop()
    if _registered_loop is loop:
        return
    if _registered_loop is not None:
        raise RuntimeError("libvirt events are registered on another event loop of this process")
    libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
    _registered_loop = loop
    log.info("libvirt events run on the asyncio loop")


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; aiostack logs them where they are handled."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
