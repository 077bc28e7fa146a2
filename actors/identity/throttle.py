"""Login throttling and the password-check pool: what keeps logins from being a denial of service.

Nothing here is ever a lockout. Failed logins are counted in memory, over a sliding
``window``, three ways:

* per **(account, source)**: past ``pair_free`` failures that source is refused for that
  account, for 1, 2, 4... seconds (``base``, doubling, at most ``cap``) after each further failure;
* per **source**: past ``source_free`` failures (any accounts) the source is refused for every
  account, with the same growing delays: a password sprayer is slowed, whoever it targets;
* per **account** across sources: past ``account_free`` failures each further *failed* attempt is
  answered after a short growing delay (at most ``tarpit_cap``: a bounded tarpit), while a right
  password is answered at once. So no one, the last admin included, is ever locked out: a
  source that has not been failing always gets its right password accepted at once.

A refusal (``LoginThrottled``: the gateway's 429 with ``Retry-After``) costs no lookup and no
hash check, and is the same whether the account exists or not: an account is the name or id the
login gave, not the user it finds, so throttling says nothing about which users exist. A
success forgets its (account, source) failures, never its source's.

The tables are bounded (``max_entries`` each; the entry that failed least recently goes first)
and hold 16-byte digests, not names, so a flood of invented names cannot exhaust memory; they are
never written to disk, so a restart (or another replica of the actor, which keeps its own) starts
from nothing: at worst an attacker's budget starts again after a restart it cannot cause.

``PasswordChecks`` bounds the hashing: ``threads`` hashing threads of its own; at most
``per_source`` logins in flight from one source (more are refused at once, without hashing, as
``LoginThrottled``); at most ``max_pending`` waiting for or holding a thread in all, each waiting
at most ``max_wait`` seconds (past either: ``Overloaded``, at once or after the wait); at most
``max_tarpit`` failed logins held in the tarpit at once (the rest are answered at once). So a
flood from one source delays a login from another by a few checks at most, and logins never
hold all the actor's workers: validation is still served.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from api.identity import LoginThrottled
from bus import Overloaded
from runtime.holds import BoundedHolds

log = logging.getLogger(__name__)

BUS_SOURCE = "bus"
"""The source of a login that names none (a service on the bus, not the gateway)."""


@dataclass(frozen=True, slots=True)
class Throttling:
    """The throttle's settings (the actor's defaults; tests shorten them)."""

    window: float = 900.0
    """Failures older than this (since the key's last failure) are forgotten."""
    pair_free: int = 5
    """Failures of one account from one source before that source is refused for it."""
    source_free: int = 20
    """Failures from one source (any accounts) before it is refused for every account."""
    base: float = 1.0
    """The first refusal's length; each further failure doubles it."""
    cap: float = 300.0
    """The longest refusal."""
    account_free: int = 10
    """Failures of one account (any sources) before its failed attempts are slowed."""
    tarpit_base: float = 0.25
    tarpit_cap: float = 2.0
    max_entries: int = 100_000
    """Entries per table (about 150 bytes each)."""


def source_key(source: str | None) -> str:
    """Who a login comes from: an IPv4 address, an IPv6 /64 (one host's share of addresses), or
    ``BUS_SOURCE`` when none is given."""
    if not source:
        return BUS_SOURCE
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\0".join(parts).encode(errors="surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class Strikes:
    """One key's recent failures: how many, the last one, and until when it is refused (monotonic)."""

    failures: int
    last: float
    refused_until: float


class StrikeTable:
    """Failures per key within a sliding window, each past ``free`` earning a refusal of ``base``
    seconds doubled per further failure, at most ``cap``; at most ``max_entries`` keys (the least
    recently failed one is dropped first)."""

    def __init__(self, *, free: int, base: float, cap: float, window: float, max_entries: int) -> None:
        self.free, self.base, self.cap, self.window = free, base, cap, window
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Strikes] = OrderedDict()
        # invariant: entries are in the order of their last failure, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def _current(self, key: bytes, now: float) -> Strikes | None:
        strikes = self._entries.get(key)
        if strikes is not None and now - strikes.last > self.window and strikes.refused_until <= now:
            del self._entries[key]
            return None
        return strikes

    def refused_for(self, key: bytes, now: float) -> float:
        """Seconds the key is still refused (0: not refused)."""
        strikes = self._current(key, now)
        return max(0.0, strikes.refused_until - now) if strikes else 0.0

    def failures(self, key: bytes, now: float) -> int:
        strikes = self._current(key, now)
        return strikes.failures if strikes else 0

    def delay(self, failures: int) -> float:
        """What the ``failures``-th failure earns: 0 up to ``free``, then ``base`` doubling to ``cap``."""
        if failures <= self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free - 1, 40))

    def fail(self, key: bytes, now: float) -> float:
        """Count a failure; return the refusal it earns (0: none)."""
        strikes = self._current(key, now)
        if strikes is None:
            strikes = self._entries[key] = Strikes(0, now, 0.0)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        strikes.failures += 1
        strikes.last = now
        refusal = self.delay(strikes.failures)
        strikes.refused_until = max(strikes.refused_until, now + refusal)
        return refusal

    def forget(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def purge(self, now: float) -> None:
        """Drop the keys whose failures are all older than the window and that are not refused."""
        for key in list(self._entries):
            self._current(key, now)


class LoginThrottle:
    """The three failure counts of ``Throttling`` and what they decide."""

    def __init__(self, settings: Throttling, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        window, size = settings.window, settings.max_entries
        self.pairs = StrikeTable(
            free=settings.pair_free, base=settings.base, cap=settings.cap, window=window, max_entries=size
        )
        self.sources = StrikeTable(
            free=settings.source_free, base=settings.base, cap=settings.cap, window=window, max_entries=size
        )
        self.accounts = StrikeTable(
            free=settings.account_free,
            base=settings.tarpit_base,
            cap=settings.tarpit_cap,
            window=window,
            max_entries=size,
        )

    def check(self, account: str, source: str) -> None:
        """:raises LoginThrottled: the source is refused, for every account or for this one."""
        now = self.clock()
        by_source = self.sources.refused_for(_digest(source), now)
        if by_source:
            raise LoginThrottled.after(by_source, "Too many failed logins from this address")
        by_pair = self.pairs.refused_for(_digest(account, source), now)
        if by_pair:
            raise LoginThrottled.after(by_pair, "Too many failed logins for this user from this address")

    def failed(self, account: str, source: str) -> float:
        """Count a failed login; return how long to hold its answer (the tarpit; 0 mostly)."""
        now = self.clock()
        pair = self.pairs.fail(_digest(account, source), now)
        by_source = self.sources.fail(_digest(source), now)
        if pair or by_source:
            log.warning(
                "login: source %s refused for %.0f s (failures: %d for this account, %d in all)",
                source,
                max(pair, by_source),
                self.pairs.failures(_digest(account, source), now),
                self.sources.failures(_digest(source), now),
            )
        return self.accounts.fail(_digest(account), now)

    def succeeded(self, account: str, source: str) -> None:
        """A right password: forget this source's failures for the account (not the source's)."""
        self.pairs.forget(_digest(account, source))

    def purge(self) -> None:
        now = self.clock()
        for table in (self.pairs, self.sources, self.accounts):
            table.purge(now)


class PasswordChecks:
    """Runs password and secret checks on ``threads`` hashing threads of its own, admitting at most
    ``per_source`` logins per source and ``max_pending`` in all."""

    def __init__(
        self,
        *,
        threads: int = 2,
        per_source: int = 4,
        max_pending: int = 64,
        max_wait: float = 10.0,
        max_tarpit: int = 16,
    ) -> None:
        self.per_source = per_source
        self.max_pending = max_pending
        self.max_wait = max_wait
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="password-check")
        self._slots = asyncio.Semaphore(threads)
        self._in_flight: dict[str, int] = {}
        # invariant: _in_flight holds only sources with at least one login in flight
        self.pending = 0
        self.tarpit = BoundedHolds(max_tarpit)
        """Where a failed login's answer is held (``tarpit.hold(delay)``), ``max_tarpit`` at once."""

    def in_flight(self, source: str) -> int:
        return self._in_flight.get(source, 0)

    @asynccontextmanager
    async def admitted(self, source: str) -> AsyncIterator[None]:
        """One login from ``source``, from its lookup to its answer.

        :raises LoginThrottled: ``per_source`` logins from there are in flight already.
        :raises Overloaded: ``max_pending`` logins wait or hash already.
        """
        if self._in_flight.get(source, 0) >= self.per_source:
            raise LoginThrottled.after(1, "Too many logins at once from this address")
        if self.pending >= self.max_pending:
            raise Overloaded("Too many logins at once; try again in a moment.")
        self._in_flight[source] = self._in_flight.get(source, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[source] - 1
            if left:
                self._in_flight[source] = left
            else:
                del self._in_flight[source]

    async def run(self, check: Callable[[str, str], bool], secret: str, stored: str) -> bool:
        """``check(secret, stored)`` on a hashing thread, once one is free (at most ``max_wait``).

        :raises Overloaded: no thread came free in time, or ``max_pending`` checks wait already.
        """
        if self.pending >= self.max_pending:
            raise Overloaded("Too many logins at once; try again in a moment.")
        self.pending += 1
        try:
            try:
                async with asyncio.timeout(self.max_wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise Overloaded("Too many logins at once; try again in a moment.") from None
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, check, secret, stored)
            finally:
                self._slots.release()
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
