"""Named network namespaces (``ip netns``'s, under ``NETNS_DIR``), and work done inside one by a
thread of its own: ``setns`` moves only the calling thread, and a socket made there stays in that
namespace whoever uses it afterwards."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def _enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``.

    :raises OSError: there is no such namespace, or it could not be entered.
    """
    try:
        handle = open(NETNS_DIR / namespace, "rb")  # noqa: SIM115 (closed below, after setns)
    except OSError as exc:
        raise OSError(exc.errno, f"no network namespace {namespace}: {exc.strerror}") from None
    with handle:
        if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns into {namespace}: {os.strerror(code)}")


def call_in(namespace: str, work: Callable[[], T]) -> T:
    """``work()``, called by a thread of its own inside ``namespace`` (the thread then ends, so
    none goes back); this thread waits for it.

    :raises OSError: the namespace could not be entered; else whatever ``work`` raised.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            _enter(namespace)
            done.set_result(work())
        except BaseException as exc:  # handed to the caller, raised there
            done.set_exception(exc)

    thread = threading.Thread(target=run, name=f"in-{namespace}")
    thread.start()
    thread.join()
    return done.result()
