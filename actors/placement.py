"""Where an instance is and whose it is, as the conductor records it: what the image, net and volume
actors check a compute node's calls against.

A node calls those actors on their node facets (``ImageForNodes``, ``NetForNodes``,
``VolumeAttacher``), as its own host: the subject names it, and only that node's NATS user may
publish there. ``Placements.on_host`` answers the instance's placement only if the conductor
records it on that host, else ``NotFound`` (the same answer as for an instance that does not
exist: a node learns nothing of other hosts' instances); the actor then acts as the
instance's project, whatever the call carries.

Reads on a build's path (an image's chunks, a network's name) may use an answer up to
``PLACEMENT_TTL`` seconds old; what takes or gives back resources (ports made or released,
volumes reserved, attached or freed) always asks the conductor (``fresh=True``), so a node an
instance was just rescheduled away from cannot touch what its new host holds. Plugging in a port
already bound to the calling host (by such a fresh call) uses the kept answer. A kept answer that
names another host than the caller's is never the refusal: the instance may have moved there
since (rescheduled, evacuated), so the conductor is asked again. The reads a live migration's
destination makes while it prepares for a real guest (the image, networks, subnets and its DHCP
port on them) are answered for that host too (``arriving``).
"""

from __future__ import annotations

import time

from api.conductor import ConductorForOwners, Placement
from bus import Bus, Context, NotFound
from runtime.context import caller

PLACEMENT_TTL = 2.0
"""How long a placement is kept for reads."""
CACHE_MAX = 10_000
FACETS = (ConductorForOwners,)
"""What the checks call (their NATS permissions follow from it: deploy/credentials.py)."""


class Placements:
    """The conductor's ``placement`` of instances, kept briefly for reads."""

    def __init__(self, bus: Bus, *, ttl: float = PLACEMENT_TTL) -> None:
        self.conductor = ConductorForOwners.client(bus)
        self.ttl = ttl
        self._kept: dict[str, tuple[float, Placement]] = {}

    async def on_host(
        self, instance_uuid: str, host: str, *, fresh: bool = False, arriving: bool = False
    ) -> Placement:
        """The instance's placement, if it is live and recorded on ``host`` (with ``arriving``:
        or ``host`` is where a live migration copies it now, its node preparing for it).

        :raises NotFound: no such live instance, or it is not on ``host``.
        """

        def there(placement: Placement) -> bool:
            return placement["host"] == host or (arriving and placement.get("arriving") == host)

        kept = None if fresh else self._kept.get(instance_uuid)
        if kept is not None and kept[0] > time.monotonic() and there(kept[1]):
            placement = kept[1]
        else:  # a kept answer naming another host may be stale (the instance moved: asked again)
            try:
                placement = await self.conductor.placement(instance_uuid=instance_uuid)
            except NotFound:
                self._kept.pop(instance_uuid, None)
                raise NotFound(f"Instance {instance_uuid} could not be found on host {host}.") from None
            if len(self._kept) >= CACHE_MAX:
                self._kept.clear()
            self._kept[instance_uuid] = (time.monotonic() + self.ttl, placement)
        if not there(placement):
            raise NotFound(f"Instance {instance_uuid} could not be found on host {host}.")
        return placement


def sees_for(placement: Placement, owner: str | None, *, public: bool = False) -> bool:
    """Whether a resource of project ``owner`` (``public``: everyone's) may be used for the instance:
    its project's own or a public one, or one the user whose call this is may see (the node's calls
    carry the context of the request that made the task: an admin's boot may use what the admin
    sees; a call that carries no user is checked as the instance's project alone)."""
    if public or owner == placement["project_id"]:
        return True
    ctx: Context | None = caller()
    return ctx is not None and ctx.user_id is not None and (ctx.is_admin or ctx.project_id == owner)
