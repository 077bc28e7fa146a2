"""Subnet pools (Neutron's subnet allocation): IPv4 prefixes a project's subnets are given their
CIDRs from, none overlapping another subnet of the pool; made by a project (shared ones by an
admin), seen by their project and, when shared, by every project; only their project changes
them, and a pool keeps its subnets' prefixes (its prefixes only grow; it is not deleted while a
subnet of it exists)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Network
from typing import Any

from actors.net.quotas import check_quota
from actors.net.schema import SUBNETPOOL
from actors.net.state import Db, NetState, caller_project, insert, invalid, scope, update
from api.net import SubnetPool, SubnetPools
from bus import Conflict, Forbidden, InvalidRequest
from runtime.context import caller, sees_all
from runtime.stamps import new_uuid
from runtime.store import to_json

MIN_PREFIXLEN = 8
MAX_PREFIXLEN = 32
"""A pool's bounds when it names none (Neutron's for IPv4)."""


class SubnetPoolServant(SubnetPools):
    """Serves ``api.net.SubnetPools``."""

    def __init__(self, state: NetState) -> None:
        self.state = state

    async def create_subnetpool(
        self,
        *,
        prefixes: list[str],
        name: str = "",
        default_prefixlen: int | None = None,
        min_prefixlen: int | None = None,
        max_prefixlen: int | None = None,
        shared: bool = False,
        description: str = "",
    ) -> SubnetPool:
        if shared and not sees_all(caller()):
            raise Forbidden("Only an admin may create a shared subnet pool.")
        low = MIN_PREFIXLEN if min_prefixlen is None else min_prefixlen
        lengths = _lengths(
            low, low if default_prefixlen is None else default_prefixlen, max_prefixlen or MAX_PREFIXLEN
        )
        row: dict[str, Any] = {"id": new_uuid(), "name": name, "project_id": caller_project()}
        row |= {"prefixes": to_json([str(prefix) for prefix in merged(prefixes)]), **lengths}
        row |= {"shared": shared, "description": description}
        async with self.state.writing() as db:
            await check_quota(db, "subnetpool", row["project_id"])
            await insert(db, "subnetpools", row)
            return await self.state.get(SUBNETPOOL, row["id"], None, db)

    async def list_subnetpools(self) -> list[SubnetPool]:
        return await self.state.load(SUBNETPOOL, "1 = 1", [], scope=scope())

    async def get_subnetpool(self, *, subnetpool_id: str) -> SubnetPool:
        return await self.state.get(SUBNETPOOL, subnetpool_id, scope())

    async def update_subnetpool(
        self,
        *,
        subnetpool_id: str,
        name: str | None = None,
        description: str | None = None,
        prefixes: list[str] | None = None,
        default_prefixlen: int | None = None,
        min_prefixlen: int | None = None,
        max_prefixlen: int | None = None,
    ) -> SubnetPool:
        project = scope()
        async with self.state.writing() as db:
            pool = await self.state.get(SUBNETPOOL, subnetpool_id, project, db, owned=True)
            changes: dict[str, Any] = {"name": name, "description": description}
            changes |= _lengths(
                pool["min_prefixlen"] if min_prefixlen is None else min_prefixlen,
                pool["default_prefixlen"] if default_prefixlen is None else default_prefixlen,
                pool["max_prefixlen"] if max_prefixlen is None else max_prefixlen,
            )
            if prefixes is not None:
                grown = merged(prefixes)
                for old in map(IPv4Network, pool["prefixes"]):
                    if not any(old.subnet_of(new) for new in grown):
                        raise InvalidRequest(
                            f"Illegal update to prefixes: prefix {old} of subnet pool {subnetpool_id}"
                            " is left out (prefixes may only grow)."
                        )
                changes["prefixes"] = to_json([str(prefix) for prefix in grown])
            await update(db, "subnetpools", subnetpool_id, changes)
            return await self.state.get(SUBNETPOOL, subnetpool_id, None, db)

    async def delete_subnetpool(self, *, subnetpool_id: str) -> None:
        project = scope()
        async with self.state.writing() as db:
            await self.state.get(SUBNETPOOL, subnetpool_id, project, db, owned=True)
            if await db.fetchone("SELECT 1 FROM subnets WHERE subnetpool_id = ? LIMIT 1", (subnetpool_id,)):
                raise Conflict(f"Subnet pool {subnetpool_id} could not be deleted: subnets use it.")
            await db.execute("DELETE FROM subnetpools WHERE id = ?", (subnetpool_id,))


def merged(prefixes: Iterable[str]) -> list[IPv4Network]:
    """Prefixes checked (IPv4 networks, no host bits set) and merged, lowest first.

    :raises InvalidRequest: one is not.
    """
    networks = []
    for prefix in prefixes:
        try:
            network = ipaddress.ip_network(prefix)
        except ValueError:
            raise invalid("prefixes", f"'{prefix:.60}' is not a valid IP subnet") from None
        if not isinstance(network, IPv4Network):
            raise invalid("prefixes", f"{network} is not an IPv4 subnet")
        networks.append(network)
    return list(ipaddress.collapse_addresses(networks))


def _lengths(low: int, default: int, high: int) -> dict[str, int]:
    """A pool's prefix lengths, as columns.

    :raises InvalidRequest: they are not ordered low <= default <= high.
    """
    if not low <= default <= high:
        raise InvalidRequest(
            f"Illegal prefix bounds: min_prefixlen {low}, default_prefixlen {default}, max_prefixlen {high}"
            " (each at most the next)."
        )
    return {"min_prefixlen": low, "default_prefixlen": default, "max_prefixlen": high}


async def pool_cidr(db: Db, pool: SubnetPool, cidr: str | None, prefixlen: int | None) -> str:
    """The CIDR a new subnet of ``pool`` gets, inside the caller's transaction: ``cidr`` when it is
    inside the pool's prefixes and overlaps none of its subnets, else the lowest free prefix of
    ``prefixlen`` (the pool's default when None).

    :raises InvalidRequest: ``cidr`` is no IPv4 network, or not in the pool; the length is
        outside the pool's bounds.
    :raises Conflict: ``cidr`` overlaps a subnet of the pool; no free prefix of that length.
    """
    taken = [
        IPv4Network(row["cidr"])
        for row in await db.fetchall("SELECT cidr FROM subnets WHERE subnetpool_id = ?", (pool["id"],))
    ]
    prefixes = [IPv4Network(prefix) for prefix in pool["prefixes"]]
    if cidr is not None:
        (asked,) = merged([cidr])
        _within_bounds(pool, asked.prefixlen)
        if not any(asked.subnet_of(prefix) for prefix in prefixes):
            raise InvalidRequest(f"Cidr {asked} is not within the prefixes of subnet pool {pool['id']}.")
        if any(asked.overlaps(other) for other in taken):
            raise Conflict(f"Cidr {asked} overlaps another subnet of subnet pool {pool['id']}.")
        return str(asked)
    length = pool["default_prefixlen"] if prefixlen is None else prefixlen
    _within_bounds(pool, length)
    free = prefixes
    for other in taken:
        free = [piece for block in free for piece in _without(block, other)]
    for block in sorted(free):
        if block.prefixlen <= length:
            return str(next(block.subnets(new_prefix=length)))
    raise Conflict(
        f"Failed to allocate subnet: insufficient prefix space for a /{length} in pool {pool['id']}."
    )


def _within_bounds(pool: SubnetPool, length: int) -> None:
    if not pool["min_prefixlen"] <= length <= pool["max_prefixlen"]:
        raise InvalidRequest(
            f"Illegal prefix bounds: prefixlen {length}, min_prefixlen {pool['min_prefixlen']},"
            f" max_prefixlen {pool['max_prefixlen']}."
        )


def _without(block: IPv4Network, taken: IPv4Network) -> list[IPv4Network]:
    """What is left of ``block`` without ``taken``."""
    if not block.overlaps(taken):
        return [block]
    if block.subnet_of(taken):
        return []
    return list(block.address_exclude(taken))
