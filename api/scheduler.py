"""The scheduler's API (nova-scheduler + Placement): host capacity, liveness and claims.

Version history: 1 - initial; 2 - hosts are enabled or disabled by an operator
(``set_host_enabled``, with a reason ``HostView`` shows): a disabled host gets no new instances;
3 - a resize holds two claims until it is confirmed or reverted (``claim_resize``,
``confirm_resize``, ``revert_resize``; ``Allocation.resize_held``); 4 - an evacuate moves an
instance's claim off its (down) host in one transaction (``claim_evacuate``); 5 - a live change of
vCPUs and RAM sets an instance's claim to another size on its host (``set_claim_size``); 6 -
``claim_resize`` claims on another host (``elsewhere``, ``host``: a cold or live migration); 7 -
``list_host_liveness``: each host's liveness alone (no allocation is counted), for the conductor's
periodic refresh; 8 - ``select_destinations``' ``hypervisor_type`` (``lxc``: a container, which
only hosts of containers take, and they take nothing else; an instance moving with
``claim_resize`` or ``claim_evacuate`` stays on hosts of its kind).

Events (kind ``node``): ``node.up`` (a host reported for the first time, or again after
``node.down``) and ``node.down`` (its last report is older than the service down time),
with the host's view as state; each transition is published once.
"""

from __future__ import annotations

from typing import Annotated, NotRequired, TypedDict

from msgspec import Meta

from api.fields import Amount, HostName, Id, Name, PositiveAmount
from bus.api import ServiceAPI, Topic, call


class HostView(TypedDict):
    """A host as the scheduler sees it: totals, used and free (after allocation ratios)."""

    host: str
    hypervisor_type: str
    enabled: bool
    disabled_reason: str | None
    alive: bool
    last_seen: float
    generation: int
    instances: int
    vcpus: int
    vcpus_used: int
    vcpus_free: int
    memory_mb: int
    memory_mb_used: int
    memory_mb_free: int
    disk_gb: int
    disk_gb_used: int
    disk_gb_free: int


class HostLiveness(TypedDict):
    """Whether a host is alive (it reported within the service down time)."""

    host: str
    alive: bool


class Allocation(TypedDict):
    """What one instance holds on its host."""

    instance_uuid: str
    host: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    created_at: str
    resize_held: NotRequired[bool]
    """True: the claim of the flavor a resize leaves, held until it is confirmed or reverted (the
    instance's other claim is the new flavor's)."""


class Destination(TypedDict):
    host: str


class Released(TypedDict):
    released: bool


class Capacity(TypedDict):
    """A node's heartbeat: its totals (the host is the heartbeat subject's, never the body's)."""

    vcpus: Amount
    memory_mb: Amount
    disk_gb: Amount
    hypervisor_type: Name


Reason = Annotated[str, Meta(max_length=255)]
"""Why a host was disabled (Nova's ``disabled_reason``: at most 255 characters)."""

HEARTBEAT = Topic("hb.{host}", Capacity)
CONTAINER_HYPERVISOR_TYPE = "lxc"
"""The ``hypervisor_type`` of the hosts that run containers (``node.lxc``), and of the flavors whose
instances are containers (their extra spec ``capabilities:hypervisor_type``)."""
"""Each node requests on ``hb.<its host>``, a subject only it may publish to; the scheduler
answers with the host's ``HostView``."""


class SchedulerReader(ServiceAPI, address="scheduler"):
    """What anyone may read of the scheduler: hosts and allocations."""

    @call(idempotent=True)
    async def list_hosts(self) -> list[HostView]:
        """Every host, by name."""
        ...

    @call(idempotent=True)
    async def list_host_liveness(self) -> list[HostLiveness]:
        """Every host and whether it is alive: the hosts alone, however many instances they hold."""
        ...

    @call(idempotent=True)
    async def list_allocations(self) -> list[Allocation]:
        """Every allocation, oldest first."""
        ...

    @call(idempotent=True)
    async def get_allocation(self, *, instance_uuid: Id) -> Allocation:
        """One instance's allocation.

        :raises NotFound: the instance has no allocation.
        """
        ...


class Scheduler(SchedulerReader, address="scheduler"):
    """What the conductor asks the scheduler: claims and their release."""

    @call(idempotent=True)
    async def select_destinations(
        self,
        *,
        instance_uuid: Id,
        vcpus: PositiveAmount,
        memory_mb: PositiveAmount,
        disk_gb: Amount,
        exclude_hosts: list[HostName] | None = None,
        hypervisor_type: Name | None = None,
    ) -> Destination:
        """Pick the alive, enabled, not excluded host with room and the most free RAM, and claim on it.
        ``hypervisor_type`` ``lxc`` (the flavor's ``capabilities:hypervisor_type``) picks among the
        hosts that run containers (``Capacity.hypervisor_type`` ``lxc``); anything else, or none,
        among the others.

        Idempotent: an instance that already has an allocation gets its host again.

        :raises NoValidHost: no host passes the filters; the message counts why each failed.
        :raises Conflict: the chosen host's generation kept changing under the claim.
        """
        ...

    @call(idempotent=True)
    async def release(self, *, instance_uuid: Id) -> Released:
        """Delete an instance's allocation and give its usage back; idempotent.

        :raises Conflict: the host's generation kept changing under the release.
        """
        ...

    @call(idempotent=True)
    async def claim_resize(
        self,
        *,
        instance_uuid: Id,
        vcpus: PositiveAmount,
        memory_mb: PositiveAmount,
        disk_gb: Amount,
        elsewhere: bool = False,
        host: HostName | None = None,
    ) -> Destination:
        """Claim the new flavor of a resize on the instance's host, keeping the old claim (held)
        beside it, in one transaction: the host must have room for the new flavor besides what it
        holds. ``elsewhere`` (a cold or live migration): the claim is taken on ``host`` (forced:
        disabled or not) or the best other host, never the instance's, and the old one held on
        its host. Idempotent: a resize already claimed gets its host again.

        :raises NotFound: the instance has no claim; ``host`` is unknown.
        :raises NoValidHost: its host (or ``host``, or every other host) has no room for the new
            flavor (or is down or disabled).
        """
        ...

    @call(idempotent=True)
    async def set_claim_size(
        self, *, instance_uuid: Id, vcpus: PositiveAmount, memory_mb: PositiveAmount
    ) -> Allocation:
        """Make the instance's claim on its host ``vcpus`` and ``memory_mb`` (its disk as it is), in
        one transaction: what grows must fit in what the host has free (what shrinks is given
        back). Idempotent: a claim of that size already is answered as it is.

        :raises NotFound: the instance has no claim.
        :raises NoValidHost: its host has no room for the growth.
        """
        ...

    @call(idempotent=True)
    async def claim_evacuate(
        self,
        *,
        instance_uuid: Id,
        source_host: HostName,
        vcpus: PositiveAmount,
        memory_mb: PositiveAmount,
        disk_gb: Amount,
        host: HostName | None = None,
    ) -> Destination:
        """Move the instance's claim off ``source_host`` (an evacuate), in one transaction: the
        claim is taken on the best other host (or on ``host``, forced: it must be up and have
        room, disabled or not) and given back on the source, a resize's held claim with it; an
        instance with no claim gets one. Idempotent: a claim already off the source stays where
        it is, and its host is answered.

        :raises NotFound: ``host`` is no known compute host.
        :raises NoValidHost: no other host (or not ``host``) is up, enabled and has room.
        """
        ...

    @call(idempotent=True)
    async def confirm_resize(self, *, instance_uuid: Id) -> Released:
        """Give back the held claim of a resize (the new one stays); idempotent."""
        ...

    @call(idempotent=True)
    async def revert_resize(self, *, instance_uuid: Id) -> Released:
        """Give back the new claim of a resize and make the held one the instance's claim again,
        in one transaction; idempotent."""
        ...

    @call(idempotent=True)
    async def set_host_enabled(
        self, *, host: HostName, enabled: bool, disabled_reason: Reason | None = None
    ) -> HostView:
        """Enable a host, or disable it (with why): ``select_destinations`` passes over a disabled
        host; what runs there stays. Enabling forgets the reason.

        :raises NotFound: no such host has reported.
        """
        ...

    @call(idempotent=True)
    async def report_capacity(
        self,
        *,
        host: HostName,
        vcpus: Amount,
        memory_mb: Amount,
        disk_gb: Amount,
        hypervisor_type: Name = "test",
    ) -> HostView:
        """A host's totals and heartbeat, as ``HEARTBEAT`` carries them (for tools and tests)."""
        ...
