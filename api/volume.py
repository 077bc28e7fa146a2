"""The volume service's API (Cinder): volumes (files on the volume host), their attachments,
snapshots and volume types.

A volume is made ``creating`` and becomes ``available`` (or ``error``, with a ``fault``, when
its file cannot be made). The conductor drives the attach protocol; a node does the libvirt
part and calls ``reserve``/``attach_complete`` itself when it attaches volumes at boot:

    reserve -> attach_complete        available -> attaching -> in-use
    unreserve                         attaching -> available   (the node failed)
    begin_detach -> detach_complete   in-use -> detaching -> available
    roll_detaching                    detaching -> in-use      (the node failed)
    detach_all                        every volume of a deleted instance -> available

``extend`` goes available -> extending -> available, ``reserve_volume`` (a user's ``os-reserve``)
available -> attaching with no instance, ``begin_detaching`` in-use -> detaching, as Cinder's
actions do. A snapshot (a copy of an available volume's file on its storage host) goes creating ->
available; deleting -> gone. A volume with snapshots is not deleted.

``delete`` goes deleting -> gone (or ``error_deleting`` when the file cannot be removed; such a
volume may be deleted again). Users see their project's volumes (another project's is
``NotFound``); admins every project's with ``all_tenants``; services all.

Facets, by caller: ``VolumeAttacher`` (compute nodes, each as its own host:
``volume.host.<host>``, for the instances placed on it only), ``VolumeAttachments`` (the
conductor: the whole attach protocol), ``Volumes`` (the whole API, as the gateway reaches
it: ``VolumeRecords``, create, get, list, update, delete and more, and ``VolumeQuotas``) and
``VolumeStorage`` (the volume actors: the files of the storage host a volume lives on,
``volume.storage.<host>``).

Quotas (Cinder's quota sets): a project's ``volumes``, ``gigabytes`` (its volumes' and snapshots'
sizes) and ``snapshots``, and ``per_volume_gigabytes``, its own limits or ``DEFAULT_VOLUME_QUOTAS``.
They are checked in the store transaction that records a new volume (whatever its source), a
snapshot or an extend, against usage counted from the project's rows there: concurrent creates
never pass a limit, and a deleted volume stops counting once its row is gone. Past one,
``QuotaExceeded`` (its message Cinder's, its exception's name first).

Version history: 1 - initial; 2 - ``VolumeAttacher`` is served per calling host (the host from
the subject, no longer ``attach_complete``'s body) and checked against the conductor's records;
3 - a ``Connection`` says its ``transport``: a file, or an NBD export per attachment (a volume
host with an NBD address), reached from any host; volumes live on storage hosts
(``VolumeStorage``), each volume actor a replica over the shared records; 4 - what Cinder's API
has besides: metadata (``set_metadata``, ``delete_metadata``), the volume actions (``set_bootable``,
``set_readonly`` with ``Connection.readonly``, ``extend``, ``reserve_volume``, ``begin_detaching``),
volume types, snapshots (their lists sorted and paged as volumes'), volumes made from a snapshot
or a volume (``create``'s ``snapshot_id``, ``source_volid``, ``volume_type``; ``size`` may then be
left out) or an image (``image_id``; the volume's ``image_metadata``), ``list``'s filters, sort
and page; ``VolumeStorage.copy_file``, ``copy_image`` (the storage host reads the image from the
image service as the caller sees it), ``extend_file``, and ``connect``'s and ``keep_exports``'
read-only exports. 5 - quotas: ``VolumeQuotas`` (shown, set, deleted; usage counted
from the rows) and ``QuotaExceeded`` from ``create``, ``create_snapshot`` and ``extend``; the
actor's own handlers are ``VolumeRecords``, and ``Volumes`` is both facets. 6 -
``VolumeAttacher.reattach_all``: an evacuated instance's attachments made again for its new host.
7 - ``list_attachments``' ``server_ids`` (the attachments of these servers alone).
7 - ``VolumeAttachments.release_host``: a shelved instance's attachments released from its host
when it is offloaded (``reattach_all`` makes them the unshelving host's), and ``attach_offloaded``:
a volume attached to an offloaded instance, with no host.
8 - ``VolumeAttachments.attach_arriving`` and ``drop_arriving``: a live migration's destination
gets an attachment of its own (``AttachStatus`` ``arriving``) beside the source's, which
``VolumeAttacher.reattach_all`` on the destination makes the one (the source's ended) and on the
source drops (Cinder's second attachment during a live migration).

Events (kind ``volume``, on ``evt.volume.<project>.<id>``): ``volume.<status>`` at every status
change (``volume.deleted`` last), with the volume as users see it (no ``path``, no ``format``).
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, TypedDict

from msgspec import Meta

from api.fields import HostName, Id, Name
from bus.api import ServiceAPI, call

MAX_SIZE_GIB = 1024
MAX_TEXT = 255

VolumeFormat = Literal["raw", "qcow2"]
VolumeStatus = Literal[
    "creating",
    "available",
    "attaching",
    "in-use",
    "detaching",
    "extending",
    "deleting",
    "error",
    "error_deleting",
]
SnapshotStatus = Literal["creating", "available", "deleting", "error", "error_deleting"]
SortKey = Literal["id", "name", "status", "size", "created_at", "updated_at", "availability_zone", "bootable"]
"""What volume lists sort by (snapshot lists: ``SNAPSHOT_SORT_KEYS``)."""
SNAPSHOT_SORT_KEYS = ("id", "name", "status", "size", "created_at", "updated_at")
SortDirection = Literal["asc", "desc"]
DEFAULT_TYPE = "__DEFAULT__"
"""The volume type of a volume asked for without one (Cinder's default type, which is always there)."""
MAX_PAGE = 1000
COPY_TIMEOUT = 300.0
"""How long making a volume's file as a copy (of a volume, a snapshot or an image) may take: the
calls that do wait as long (the bus's 10 s otherwise)."""
AttachStatus = Literal["reserved", "attached", "detaching", "arriving"]
"""An attachment row: reserved (its volume attaching), attached (in-use), detaching; arriving: a
live migration's destination's attachment beside the source's (``attach_arriving``), never shown
in the volume's ``attachments``."""

Size = Annotated[int, Meta(ge=1, le=MAX_SIZE_GIB)]
"""A volume's size in GiB."""
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
"""A name, description or metadata value: at most 255 characters, possibly empty."""
MetadataKey = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT)]
Metadata = dict[MetadataKey, Text]
PageSize = Annotated[int, Meta(ge=0, le=2**31 - 1)]
"""A page's size asked for: a list gives at most ``MAX_PAGE`` (as Cinder's ``osapi_max_limit``)."""
Offset = Annotated[int, Meta(ge=0, le=2**31 - 1)]
VolumeQuotaResource = Literal["volumes", "gigabytes", "snapshots", "per_volume_gigabytes"]
"""What volume quotas limit: a project's volumes, the GiB of its volumes and snapshots, its
snapshots, and the size of any one of its volumes."""
DEFAULT_VOLUME_QUOTAS: dict[str, int] = {
    "volumes": -1,
    "gigabytes": -1,
    "snapshots": -1,
    "per_volume_gigabytes": -1,
}
"""The limits of a project with none of its own (-1: unlimited). Cinder's are 10 volumes, 1000 GiB
and 10 snapshots; here they are open until an admin sets a project's, as compute's instances are
(``api.conductor.DEFAULT_QUOTAS``): tests/actors/test_volume.py makes 12 volumes in one project, and
the contract run (``deploy.contract``: schemathesis, whose positive-data check takes no 413) makes
as many volumes and snapshots in the admin's project as it draws, each of up to ``MAX_SIZE_GIB``
(1024 GiB, past Cinder's 1000 alone). ``per_volume_gigabytes`` is Cinder's (-1)."""
QuotaLimit = Annotated[int, Meta(ge=-1, le=2**31 - 1)]
"""A limit; -1: unlimited."""


class Attachment(TypedDict):
    """An attachment as a volume shows it (its ``id`` is the volume's, as in Cinder)."""

    id: str
    attachment_id: str
    volume_id: str
    server_id: str
    host_name: str | None
    device: str | None
    attached_at: str | None


class AttachmentRecord(Attachment):
    """An attachment as ``list_attachments`` shows it, in whatever state it is."""

    attach_status: AttachStatus
    project_id: str | None
    """The volume's project."""


class Volume(TypedDict):
    """A volume record: its own fields, Cinder's fixed ones, its attachments (attached or
    detaching), and the storage host's ``host``, ``path`` and ``format`` (the gateway does not
    show those)."""

    id: str
    name: str
    description: str
    size: int
    status: VolumeStatus
    format: VolumeFormat
    path: str
    host: str
    """The storage host its file is on (``VolumeStorage``)."""
    user_id: str | None
    project_id: str | None
    metadata: dict[str, str]
    fault: str | None
    """What went wrong with the volume's file (status ``error`` or ``error_deleting``)."""
    created_at: str
    updated_at: str
    availability_zone: str
    bootable: str
    encrypted: bool
    multiattach: bool
    volume_type: str
    """The volume type's name."""
    readonly: bool | None
    """Attached read-only; None: never set, read-write (once set, Cinder shows it as
    ``metadata.readonly``, ``"True"`` or ``"False"``)."""
    snapshot_id: str | None
    source_volid: str | None
    image_metadata: dict[str, str] | None
    """What a volume made from an image shows of it (Cinder's ``volume_image_metadata``)."""
    attachments: list[Attachment]


class Sort(TypedDict):
    """One key of a list's order."""

    key: SortKey
    direction: SortDirection


class VolumeType(TypedDict):
    """A volume type (one storage backend serves them all: a type names, it selects nothing)."""

    id: str
    name: str
    description: str | None
    is_public: bool
    extra_specs: dict[str, str]


class Snapshot(TypedDict):
    """A snapshot: a copy of a volume's file on the volume's storage host (``host``, ``format``:
    not shown by the gateway), ``size`` GiB as its volume was."""

    id: str
    volume_id: str
    name: str
    description: str
    size: int
    status: SnapshotStatus
    metadata: dict[str, str]
    user_id: str | None
    project_id: str | None
    fault: str | None
    created_at: str
    updated_at: str
    host: str
    format: VolumeFormat


class Connection(TypedDict):
    """How a node reaches a volume: its file (``transport`` ``file``: ``path`` in ``format``), or
    an NBD export of it on the volume host (``nbd``: ``host``, ``port`` and the attachment's own
    ``export`` name; the stream is raw, ``path`` empty)."""

    transport: Literal["file", "nbd"]
    path: str
    format: VolumeFormat
    host: str
    port: int
    export: str
    readonly: NotRequired[bool]
    """The volume is attached read-only (the guest's disk, and its NBD export, refuse writes);
    absent (as version 3 sent it): read-write."""


class Connected(TypedDict):
    """The volume after a step of the attach protocol, and its connection."""

    volume: Volume
    connection: Connection


class Reattached(TypedDict):
    """A volume attached to an instance, as its (new) host's node reaches it now."""

    volume: Volume
    device: str
    connection: Connection


class Detached(TypedDict):
    """The ids of the volumes freed."""

    detached: list[str]


class VolumeQuotaSet(TypedDict):
    """A project's volume limits (-1: unlimited)."""

    volumes: int
    gigabytes: int
    snapshots: int
    per_volume_gigabytes: int


class VolumeQuotaUsage(TypedDict):
    """One limit and what the project holds of it now."""

    limit: int
    in_use: int
    """Counted from the project's rows (``per_volume_gigabytes``: 0, a limit on each volume)."""
    reserved: int
    """GiB that extends under way will add (``gigabytes``; 0 for the others)."""


class VolumeQuotaUsages(TypedDict):
    volumes: VolumeQuotaUsage
    gigabytes: VolumeQuotaUsage
    snapshots: VolumeQuotaUsage
    per_volume_gigabytes: VolumeQuotaUsage


class VolumeAttacher(ServiceAPI, address="volume.host.{host}", caller="host"):
    """What compute nodes call, each as its own host (``volume.host.<host>``, the host from the
    subject): attaching the volumes of a boot, freeing those of a deleted instance, for instances
    placed on that host only (where an instance is, whose, and which volumes it boots with, the
    volume actor asks the conductor: ``ConductorForOwners.placement``). Anything else is
    ``NotFound`` and changes nothing."""

    @call
    async def reserve(self, *, volume_id: Id, instance_uuid: Id) -> Connected:
        """Claim a volume the instance boots with, of its project: available -> attaching.

        :raises NotFound: no such instance on the calling host, or a volume it does not boot with.
        :raises Conflict: the volume is not available (in-use, attaching, ...).
        """
        ...

    @call
    async def attach_complete(self, *, volume_id: Id, instance_uuid: Id, device: Name) -> Volume:
        """The node attached the volume as ``device`` on the calling host: attaching -> in-use.

        :raises NotFound: as ``reserve``, or the volume is not reserved for the instance.
        :raises Conflict: the volume is not attaching.
        """
        ...

    @call(idempotent=True)
    async def reattach_all(self, *, instance_uuid: Id) -> list[Reattached]:
        """The volumes attached to the instance (on the calling host: an evacuate moved it here),
        each attachment made again for this host: its ``host_name`` the calling host, and a new
        NBD export in place of the old host's (which is ended). They stay in-use throughout.
        Idempotent: an attachment already this host's keeps its export. A live migration's
        arriving attachment (``VolumeAttachments.attach_arriving``) on this host becomes the
        attachment (the other ended); one on another host is dropped.

        :raises NotFound: no such instance on the calling host.
        """
        ...

    @call(idempotent=True)
    async def detach_all(self, *, instance_uuid: Id) -> Detached:
        """Free every volume attached, attaching or detaching to the instance (on the calling
        host); idempotent.

        :raises NotFound: no such instance on the calling host.
        """
        ...


class VolumeAttachments(ServiceAPI, address="volume"):
    """What the conductor calls: the whole attach protocol, a volume's state, every attachment."""

    @call
    async def reserve(self, *, volume_id: Id, instance_uuid: Id) -> Connected:
        """Claim an available volume for ``instance_uuid``: available -> attaching.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available (in-use, attaching, ...).
        """
        ...

    @call
    async def attach_complete(
        self, *, volume_id: Id, instance_uuid: Id, host: HostName, device: Name
    ) -> Volume:
        """The node attached the volume as ``device`` on ``host``: attaching -> in-use.

        :raises NotFound: no such volume visible to the caller, or not reserved for the instance.
        :raises Conflict: the volume is not attaching.
        """
        ...

    @call(idempotent=True)
    async def detach_all(self, *, instance_uuid: Id) -> Detached:
        """Free every volume attached, attaching or detaching to a deleted instance; idempotent."""
        ...

    @call
    async def attach_offloaded(self, *, volume_id: Id, instance_uuid: Id) -> Volume:
        """The volume reserved for a shelved-offloaded instance attached to it with no host or
        device, its export ended (attaching -> in-use): its node attaches it when the instance is unshelved
        (``VolumeAttacher.reattach_all``).

        :raises NotFound: no such volume visible to the caller, or not reserved for the instance.
        :raises Conflict: the volume is not attaching.
        """
        ...

    @call(idempotent=True)
    async def attach_arriving(self, *, instance_uuid: Id, host: HostName) -> list[Reattached]:
        """A live migration's destination ``host`` gets an attachment of its own of each volume
        attached to the instance (Cinder's attachment for the destination host), ``arriving``
        beside the source's: the same device, its own NBD export of the same open volume, which
        its QEMU holds inactive until the guest runs there. ``VolumeAttacher.reattach_all`` from
        the host the migration ends on settles them: the destination's made the one, or dropped
        on the source; ``drop_arriving`` drops them. Idempotent (an arriving attachment is
        answered as it is).

        :raises Conflict: a volume could not be exported for the host.
        """
        ...

    @call(idempotent=True)
    async def drop_arriving(self, *, instance_uuid: Id) -> list[str]:
        """The instance's arriving attachments (``attach_arriving``: a live migration that did not
        happen) removed, their exports ended; the source's untouched. Answers their volumes;
        idempotent."""
        ...

    @call(idempotent=True)
    async def release_host(self, *, instance_uuid: Id) -> list[str]:
        """Release the instance's attachments from their host (a shelved instance offloaded): each
        stays attached to the instance (the volume in-use) with no host, its export ended (Cinder's
        attachment without a connector); ``VolumeAttacher.reattach_all`` makes them a host's again.
        Answers the volumes; idempotent."""
        ...

    @call(policy="volume:read", idempotent=True)
    async def get(self, *, volume_id: Id) -> Volume:
        """One volume.

        :raises NotFound: no such volume visible to the caller.
        """
        ...

    @call(idempotent=True)
    async def unreserve(self, *, volume_id: Id) -> Volume:
        """Roll back a reserve (the node failed): attaching -> available; idempotent.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is neither attaching nor available.
        """
        ...

    @call
    async def begin_detach(self, *, volume_id: Id, instance_uuid: Id) -> Connected:
        """Start detaching from ``instance_uuid``: in-use -> detaching.

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is not in-use (attaching, detaching, ...).
        """
        ...

    @call(idempotent=True)
    async def roll_detaching(self, *, volume_id: Id) -> Volume:
        """Roll back a begin_detach (the node failed): detaching -> in-use; idempotent.

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is neither detaching nor in-use.
        """
        ...

    @call(idempotent=True)
    async def detach_complete(self, *, volume_id: Id, instance_uuid: Id) -> Volume:
        """The node detached the volume: detaching -> available, attachment removed; idempotent.

        :raises NotFound: no such volume visible to the caller, or not attached to the instance.
        :raises Conflict: the volume is attached to the instance but not detaching.
        """
        ...

    @call(idempotent=True)
    async def list_attachments(self, *, server_ids: list[Id] | None = None) -> list[AttachmentRecord]:
        """Every attachment the caller may see (all for admins and services), by volume id;
        ``server_ids``: of these servers alone."""
        ...


class VolumeRecords(VolumeAttachments, address="volume"):
    """What users do to volumes, snapshots and volume types, and the attach protocol: the volume
    actor's own handlers."""

    @call(policy="volume:write", timeout=COPY_TIMEOUT)
    async def create(
        self,
        *,
        size: Size | None = None,
        name: Text = "",
        description: Text = "",
        volume_format: VolumeFormat = "raw",
        metadata: Metadata | None = None,
        volume_type: Name | None = None,
        snapshot_id: Id | None = None,
        source_volid: Id | None = None,
        image_id: Id | None = None,
    ) -> Volume:
        """Make a volume for the caller's project: creating -> available, or error (with a
        ``fault``) when its file cannot be made. Empty, of ``size`` GiB; or a copy of a snapshot
        (``snapshot_id``) or of an available volume (``source_volid``), made on the storage host
        of its source, in its format, at least as big (``size`` left out: as big); or an active
        image the caller sees (``image_id``) converted to the volume's format, bootable (error,
        with a ``fault``, when the image is bigger than ``size``).

        :raises InvalidRequest: no size and no source (or no size with an image); two sources;
            qcow2 (or an image) asked for where qemu-img is not installed.
        :raises NotFound: no such volume type (by name or id), snapshot, volume or image visible
            to the caller.
        :raises Conflict: the source is not available (an image: not active), or bigger than
            ``size`` (an image: its ``min_disk``).
        :raises QuotaExceeded: the project would pass its ``volumes`` or ``gigabytes`` quota, or
            the volume its ``per_volume_gigabytes``; nothing is recorded.
        """
        ...

    @call(policy="volume:write")
    async def update(
        self,
        *,
        volume_id: Id,
        name: Text | None = None,
        description: Text | None = None,
        metadata: Metadata | None = None,
    ) -> Volume:
        """Rename or redescribe a volume, replace its metadata (None leaves a field as it is).

        :raises NotFound: no such volume visible to the caller.
        """
        ...

    @call(policy="volume:write")
    async def set_metadata(
        self, *, volume_id: Id, metadata: Metadata, replace: bool = False
    ) -> dict[str, str]:
        """Merge ``metadata`` into the volume's (``replace``: make it exactly ``metadata``); the
        volume's metadata after.

        :raises NotFound: no such volume visible to the caller.
        """
        ...

    @call(policy="volume:write")
    async def delete_metadata(self, *, volume_id: Id, key: MetadataKey) -> None:
        """Remove one metadata item.

        :raises NotFound: no such volume visible to the caller, or it has no such item.
        """
        ...

    @call(policy="volume:write")
    async def set_bootable(self, *, volume_id: Id, bootable: bool) -> Volume:
        """Mark a volume bootable or not (``os-set_bootable``).

        :raises NotFound: no such volume visible to the caller.
        """
        ...

    @call(policy="volume:write")
    async def set_readonly(self, *, volume_id: Id, readonly: bool) -> Volume:
        """Have the volume attached read-only, or read-write, from its next attachment on
        (``os-update_readonly_flag``).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available.
        """
        ...

    @call(policy="volume:write")
    async def extend(self, *, volume_id: Id, new_size: Size) -> Volume:
        """Grow an available volume's file to ``new_size`` GiB: available -> extending ->
        available (``os-extend``).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available (or being copied), ``new_size`` is not
            bigger, or the storage host could not grow the file (the volume is as it was).
        :raises QuotaExceeded: the volume's project would pass its ``gigabytes`` quota, or
            ``new_size`` its ``per_volume_gigabytes``; the volume is as it was. While the file
            grows, the growth counts as the project's reserved gigabytes.
        """
        ...

    @call(policy="volume:write")
    async def reserve_volume(self, *, volume_id: Id) -> Volume:
        """Mark an available volume attaching, for no instance (``os-reserve``; ``unreserve``
        undoes it).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available (or being copied).
        """
        ...

    @call(policy="volume:write")
    async def begin_detaching(self, *, volume_id: Id) -> Volume:
        """Mark an in-use volume detaching (``os-begin_detaching``; ``roll_detaching`` undoes it).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not in-use.
        """
        ...

    @call(policy="volume:write")
    async def delete(self, *, volume_id: Id) -> None:
        """Remove a volume and its file: deleting -> gone (published as ``volume.deleted``).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available, error or error_deleting (in-use, ...), has
            snapshots or is being copied.
        :raises AiostackError: the file could not be removed; the volume is left error_deleting.
        """
        ...

    # -- volume types ---------------------------------------------------------------------

    @call(policy="volume:read", idempotent=True)
    async def list_types(self) -> list[VolumeType]:
        """Every volume type, the default (``__DEFAULT__``) first."""
        ...

    @call(policy="volume:read", idempotent=True)
    async def get_type(self, *, type_id: Id) -> VolumeType:
        """One volume type, by id or name.

        :raises NotFound: no such type.
        """
        ...

    @call(policy="volume:write")
    async def create_type(
        self,
        *,
        name: Name,
        description: Text | None = None,
        is_public: bool = True,
        extra_specs: Metadata | None = None,
    ) -> VolumeType:
        """A new volume type (admins only).

        :raises Forbidden: the caller is no admin.
        :raises Conflict: a type of that name exists.
        """
        ...

    @call(policy="volume:write")
    async def delete_type(self, *, type_id: Id) -> None:
        """Remove a volume type (admins only).

        :raises Forbidden: the caller is no admin.
        :raises NotFound: no such type.
        :raises Conflict: it is the default type, or volumes are of it.
        """
        ...

    # -- snapshots ------------------------------------------------------------------------

    @call(policy="volume:write", timeout=COPY_TIMEOUT)
    async def create_snapshot(
        self,
        *,
        volume_id: Id,
        name: Text = "",
        description: Text = "",
        metadata: Metadata | None = None,
    ) -> Snapshot:
        """Copy an available volume's file on its storage host: creating -> available (or error,
        with a ``fault``). The volume stays available; it is not attached while it is copied
        (``reserve``, ``extend`` and ``delete`` refuse while a copy of it is being made).

        :raises NotFound: no such volume visible to the caller.
        :raises Conflict: the volume is not available.
        :raises QuotaExceeded: the caller's project would pass its ``snapshots`` or ``gigabytes``
            quota (a snapshot counts its volume's size); nothing is recorded.
        """
        ...

    @call(policy="volume:read", idempotent=True)
    async def get_snapshot(self, *, snapshot_id: Id) -> Snapshot:
        """One snapshot.

        :raises NotFound: no such snapshot visible to the caller.
        """
        ...

    @call(policy="volume:write")
    async def update_snapshot(
        self,
        *,
        snapshot_id: Id,
        name: Text | None = None,
        description: Text | None = None,
        metadata: Metadata | None = None,
        replace_metadata: bool = True,
    ) -> Snapshot:
        """Rename or redescribe a snapshot; replace (``replace_metadata``) or merge its metadata.

        :raises NotFound: no such snapshot visible to the caller.
        """
        ...

    @call(policy="volume:write")
    async def delete_snapshot_metadata(self, *, snapshot_id: Id, key: MetadataKey) -> None:
        """Remove one metadata item of a snapshot.

        :raises NotFound: no such snapshot visible to the caller, or it has no such item.
        """
        ...

    @call(policy="volume:write")
    async def delete_snapshot(self, *, snapshot_id: Id) -> None:
        """Remove a snapshot and its file: deleting -> gone (``error_deleting`` when the file
        cannot be removed; it may be deleted again).

        :raises NotFound: no such snapshot visible to the caller.
        :raises Conflict: the snapshot is creating or deleting, or a volume is being made from it.
        :raises AiostackError: the file could not be removed.
        """
        ...

    @call(policy="volume:read", idempotent=True)
    async def list_snapshots(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        volume_id: str | None = None,
        all_tenants: bool = False,
        sort: list[Sort] | None = None,
        limit: PageSize | None = None,
        marker: Id | None = None,
        offset: Offset = 0,
    ) -> list[Snapshot]:
        """The caller's snapshots (every project's for an admin with ``all_tenants``), filtered
        by ``name``, ``status`` and ``volume_id``, sorted and paged as ``list`` (their keys:
        ``SNAPSHOT_SORT_KEYS``).

        :raises InvalidRequest: a sort key snapshots do not have.
        :raises NotFound: ``marker`` is no snapshot of the list.
        """
        ...

    # last: below its definition, ``list`` in the class's scope would be this method
    @call(policy="volume:read", idempotent=True)
    async def list(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        metadata: dict[str, str] | None = None,
        bootable: bool | None = None,
        availability_zone: str | None = None,
        all_tenants: bool = False,
        sort: list[Sort] | None = None,
        limit: PageSize | None = None,
        marker: Id | None = None,
        offset: Offset = 0,
    ) -> list[Volume]:
        """The caller's volumes (every project's for an admin with ``all_tenants``; all for a
        service), filtered (``metadata``: volumes that have each of these items), in ``sort``'s
        order (each key ascending or descending; then newest first, then by id), from the one
        after ``marker`` (or the ``offset``-th), at most ``limit`` and ``MAX_PAGE``.

        :raises NotFound: ``marker`` is no volume of the list.
        """
        ...


class VolumeQuotas(ServiceAPI, address="volume"):
    """Cinder's quota sets: how many volumes and snapshots a project may have, how many GiB they may
    take together, how big one volume may be. Enforced where each is recorded, in the store
    transaction that records it: concurrent creates never pass a limit."""

    @call(policy="volume:read", idempotent=True)
    async def get_quotas(self, *, project_id: Id) -> VolumeQuotaSet:
        """The project's limits (the defaults where it has none of its own).

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="volume:read", idempotent=True)
    async def get_default_quotas(self) -> VolumeQuotaSet:
        """The limits of a project with none of its own (``DEFAULT_VOLUME_QUOTAS``)."""
        ...

    @call(policy="volume:read", idempotent=True)
    async def get_quota_usage(self, *, project_id: Id) -> VolumeQuotaUsages:
        """The project's limits and what it holds now.

        :raises Forbidden: another project's, and the caller is no admin.
        """
        ...

    @call(policy="volume:write", idempotent=True)
    async def set_quotas(
        self, *, project_id: Id, limits: dict[VolumeQuotaResource, QuotaLimit]
    ) -> VolumeQuotaSet:
        """Set some of the project's limits (admins); its limits after.

        :raises Forbidden: the caller is no admin.
        :raises Conflict: a limit (but ``per_volume_gigabytes``) below what the project holds and
            reserves; nothing is changed.
        """
        ...

    @call(policy="volume:write", idempotent=True)
    async def delete_quotas(self, *, project_id: Id) -> None:
        """Back to the defaults (admins). :raises Forbidden: the caller is no admin."""
        ...


class Volumes(VolumeRecords, VolumeQuotas, address="volume"):
    """The whole volume API, as the gateway reaches it: what users do to volumes, and quotas."""


LOCAL_STORAGE = "local"
"""The storage host of a one-machine cloud's volume actor (a cluster's: each controller's name)."""
ExportName = Annotated[str, Meta(pattern=r"^e[0-9a-f]{24}$")]
"""An attachment's NBD export name (``e`` and 96 random bits in hex)."""


class StoredVolume(TypedDict):
    """Which volume file a storage host is asked about: the volume's id and format (a snapshot's
    file is named for the snapshot's id alike)."""

    volume_id: Id
    volume_format: VolumeFormat


class VolumeStorage(ServiceAPI, address="volume.storage.{host}"):
    """The files of one storage host (Cinder's volume service on a host, ``volume.storage.<host>``):
    what the volume actors, on any controller, ask the host a volume lives on to do. Only volume
    actors call it; each keeps the records, the storage host the files and their NBD exports."""

    @call(idempotent=True)
    async def make_file(self, *, volume: StoredVolume, size: Size) -> str:
        """Make the volume's file (a sparse raw file, or qcow2 with ``qemu-img``); its path.

        :raises Conflict: the file could not be made (the reason, without the pool's path).
        """
        ...

    @call(idempotent=True, timeout=COPY_TIMEOUT)
    async def copy_file(self, *, source: StoredVolume, volume: StoredVolume, size: Size) -> str:
        """Make the volume's file a copy of ``source``'s (a volume's or a snapshot's, in the same
        format), grown to ``size`` GiB; its path. The source must not be written meanwhile.

        :raises Conflict: the copy could not be made (nothing is left of it).
        """
        ...

    @call(idempotent=True, timeout=COPY_TIMEOUT)
    async def copy_image(self, *, image_id: Id, volume: StoredVolume, size: Size) -> str:
        """Make the volume's file from an active image the caller sees: its bytes read from the
        image service (``ImageReader``, checked against its checksums), converted to the volume's
        format by ``qemu-img``, grown to ``size`` GiB; its path.

        :raises Conflict: the image could not be read, is corrupt, is in a format qemu-img does
            not read, or is bigger than ``size`` (nothing is left of the file).
        """
        ...

    @call
    async def extend_file(self, *, volume: StoredVolume, size: Size) -> None:
        """Grow the volume's file to ``size`` GiB (it must not be in use).

        :raises Conflict: the file could not be grown.
        """
        ...

    @call(idempotent=True)
    async def remove_file(self, *, volume: StoredVolume) -> None:
        """Remove the volume's file (nothing if it is gone).

        :raises Conflict: the file could not be removed.
        """
        ...

    @call(idempotent=True)
    async def connect(
        self, *, volume: StoredVolume, export: ExportName | Literal[""], readonly: bool = False
    ) -> Connection:
        """How a node reaches the volume for one attachment: its NBD export ``export`` (made now
        if it is not yet; ``readonly``: refusing writes) where the host serves NBD, else its file
        (a node of this host only).

        :raises Conflict: the export could not be made.
        """
        ...

    @call(idempotent=True)
    async def unexport(self, *, export: ExportName) -> None:
        """End an attachment's export: its clients are cut off (nothing if there is none)."""
        ...

    @call(idempotent=True)
    async def keep_exports(
        self, *, exports: dict[ExportName, StoredVolume], readonly: list[ExportName] | None = None
    ) -> None:
        """Make the host's exports exactly these (a volume actor's start: the attachments it
        records), those named in ``readonly`` refusing writes."""
        ...
