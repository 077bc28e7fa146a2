"""nft scripts run in this process through libnftables, the library the ``nft`` command is made of
(Debian's ``libnftables1``, which the ``nftables`` package depends on), instead of one ``nft -f``
process per change.

Why: starting ``nft`` and its exit cost about 20 ms of wall time per change on this machine, most
of it the kernel closing the process's netlink socket. A context kept open in this process applies
a small ruleset in under a millisecond, and so takes about 20 ms off each real guest's boot (its
security group refresh is on the boot's path).

Every call runs on one thread of its own (a libnftables context is not thread-safe; ctypes lets
the event loop run meanwhile). The host's context lives as long as the process. A script for a
named network namespace (``ip netns``) gets a context opened in that namespace, by a thread that
enters it (``node.netns.call_in``), for that call only: its socket would keep a deleted namespace
alive, or miss one made again under the same name.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor

from node import netns


class NftError(Exception):
    """libnftables refused a script (its message says why); the ruleset is as it was."""


class _Library:
    """libnftables' functions, typed for ctypes (``nftables/libnftables.h``)."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError as exc:
            raise NftError(f"libnftables is missing (apt-get install nftables): {exc}") from exc
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib

    def open(self) -> int:
        """A new context, its output and errors kept for us (nothing printed); its netlink socket
        opened in the calling thread's network namespace."""
        ctx = self.lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("libnftables could not make a context")
        self.lib.nft_ctx_buffer_output(ctx)
        self.lib.nft_ctx_buffer_error(ctx)
        self.run(ctx, "")  # opens the socket here, whether the library does so at once or lazily
        return int(ctx)

    def run(self, ctx: int, script: str) -> None:
        if self.lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
            message = (self.lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            raise NftError(message or "nft refused the script")

    def free(self, ctx: int) -> None:
        self.lib.nft_ctx_free(ctx)


class _Nftables:
    """The one thread that runs scripts, and the host's context."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nftables")
        self._host_ctx: int | None = None

    @functools.cached_property
    def _library(self) -> _Library:
        return _Library()

    async def run(self, script: str, namespace: str | None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._run, script, namespace)

    def _run(self, script: str, namespace: str | None) -> None:
        library = self._library
        if namespace is None:
            if self._host_ctx is None:
                self._host_ctx = library.open()
            library.run(self._host_ctx, script)
            return
        try:
            netns.call_in(namespace, functools.partial(self._run_once, script))
        except OSError as exc:
            raise NftError(str(exc)) from exc

    def _run_once(self, script: str) -> None:
        """``script`` on a context of its own, opened in the calling thread's namespace."""
        ctx = self._library.open()
        try:
            self._library.run(ctx, script)
        finally:
            self._library.free(ctx)


_NFTABLES = _Nftables()


async def run(script: str, namespace: str | None = None) -> None:
    """Run ``script`` (``nft -f`` syntax) in one transaction: in this process's network namespace,
    or in the named one (``ip netns``).

    :raises NftError: it was refused, or libnftables is missing; nothing changed.
    """
    await _NFTABLES.run(script, namespace)
