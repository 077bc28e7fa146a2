"""The image service's API (Glance): image records, and image bytes uploaded and read in chunks.

An image is created ``queued``; its bytes arrive in chunks at increasing offsets (the first
turns it ``saving``) and ``finish_upload`` hashes them (md5 and sha512) and makes it
``active``; ``abort_upload`` takes a half-done upload back to ``queued``. Only active images
are read, in chunks; ``deactivate`` makes an active image ``deactivated`` (its bytes are then
read by admins and services only) and ``reactivate`` makes it active again. Every chunk travels
in one bus message, so none is over ``CHUNK_MAX``.
Private and shared images are seen by their owner's project only (a lookup by another is
``NotFound``); public and community ones by everyone; admins and services see all.

Facets: ``ImageReader`` (what the conductor calls to check an image before a boot: ``get``,
``read_chunk``), ``Images`` (the whole API, as users reach it through the gateway) and
``ImageForNodes`` (what compute nodes call, each as its own host: ``get`` and ``read_chunk``
for an instance placed on that host, of the image it boots from and that image's kernel and
ramdisk only, as the instance's project sees them; where an instance is and whose, the image
actor asks the conductor: ``ConductorForOwners.placement``).

Version history: 1 - initial; 2 - ``ImageForNodes`` (nodes no longer call ``ImageReader``);
3 - images carry ``os_hidden`` (``create`` takes it), their ``name`` may be None (``create``
without one, as Glance) and their status ``deactivated``; ``Images.update`` (Glance's JSON-patch
changes), ``add_tag``, ``remove_tag``, ``deactivate`` and ``reactivate``; ``list`` takes Glance's
filters (``owner``, formats, sizes, ``tags``, ``protected``, ``os_hidden``) and ``sort``;
``ImageForNodes.upload_snapshot``, ``finish_snapshot`` and ``discard_snapshot`` (createImage).

Events (kind ``image``, with the image as ``get`` shows it): ``image.queued`` (created),
``image.active`` (its upload finished; also the default image's, at the first start),
``image.updated`` (``update``, ``add_tag``, ``remove_tag``), ``image.deactivated`` (and
``image.active`` again when reactivated), ``image.deleted``.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from msgspec import Meta

from api.fields import Amount, Id
from bus.api import ServiceAPI, call

CHUNK_MAX = 512 * 1024
"""The most bytes one ``upload_chunk``, ``upload`` or ``read_chunk`` message carries."""

DiskFormat = Literal["raw", "qcow2", "ami", "ari", "aki", "vhd", "vmdk", "vdi", "iso"]
ContainerFormat = Literal["bare", "ami", "ari", "aki", "ovf", "ova", "docker"]
Visibility = Literal["public", "private", "shared", "community"]
ImageStatus = Literal["queued", "saving", "active", "killed", "deleted", "deactivated"]

DISK_FORMATS: tuple[str, ...] = typing.get_args(DiskFormat)
CONTAINER_FORMATS: tuple[str, ...] = typing.get_args(ContainerFormat)
ROOTFS_FORMATS = ("docker", "raw")
"""``(container_format, disk_format)`` of the images containers boot (``node.lxc``): a root
filesystem tar (Glance's ``docker``: "a tar archive of the container filesystem")."""
VISIBILITIES: tuple[str, ...] = typing.get_args(Visibility)
STATUSES: tuple[str, ...] = typing.get_args(ImageStatus)

ImageName = Annotated[str, Meta(max_length=255)]
"""An image's name: at most 255 characters (Glance allows an empty one)."""
Tag = Annotated[str, Meta(min_length=1, max_length=255)]
PropertyName = Annotated[str, Meta(min_length=1, max_length=255)]
"""The name of an extra property (one of the image's own fields is refused: ``create``)."""
Offset = Annotated[int, Meta(ge=0)]
"""A byte offset or count in an image (images may be larger than 2 GiB)."""
Chunk = Annotated[bytes, Meta(max_length=CHUNK_MAX)]
"""Bytes of an image, at most ``CHUNK_MAX`` in one message."""
PropertyValue = Annotated[str, Meta(max_length=255)]
"""The value of an extra property."""
Owner = Annotated[str, Meta(max_length=255)] | None
"""The owning project (None: no project's, as a service's images)."""

UPDATABLE: dict[str, Any] = {
    "name": ImageName | None,
    "visibility": Visibility,
    "protected": bool,
    "os_hidden": bool,
    "min_disk": Amount,
    "min_ram": Amount,
    "tags": list[Tag],
    "container_format": ContainerFormat,
    "disk_format": DiskFormat,
    "owner": Owner,
}
"""The image's own fields an ``update`` may set, each with the type of its value (any other name is
an extra property, a ``PropertyValue``). ``owner`` is for admins only; the formats only while the
image is ``queued``."""
READ_ONLY = (
    "id", "status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size",
    "created_at", "updated_at", "self", "file", "schema", "direct_url",
)  # fmt: skip
"""Fields no ``update`` changes (Glance's read-only attributes: Forbidden)."""
RESERVED = ("location", "locations", "deleted", "deleted_at", "properties")
RESERVED_PREFIX = "os_glance"
"""Names no extra property may have (nor start with ``RESERVED_PREFIX``): Forbidden."""

PatchOp = Literal["add", "remove", "replace"]
SortKey = Literal[
    "name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"
]
"""What image lists sort by (Glance's sort keys)."""
SortDirection = Literal["asc", "desc"]


class Image(TypedDict):
    """An image record, with Glance v2's field names (the gateway adds links and flattens
    ``properties`` to the top level)."""

    id: str
    name: str | None
    status: ImageStatus
    visibility: Visibility
    protected: bool
    os_hidden: bool
    """Left out of lists unless they ask for hidden images."""
    checksum: str | None
    """md5 of the bytes, hex; None until the upload finishes (and ``os_hash_*`` too)."""
    os_hash_algo: str | None
    os_hash_value: str | None
    owner: str | None
    """The owning project; None for an image a service created."""
    size: int | None
    virtual_size: int | None
    min_disk: int
    min_ram: int
    disk_format: DiskFormat
    container_format: ContainerFormat
    created_at: str
    updated_at: str
    tags: list[str]
    properties: dict[str, str]


class Change(TypedDict):
    """One change of ``update``: a JSON-patch operation on one of the image's ``UPDATABLE`` fields
    or on an extra property (``name``: the path's one token, decoded). ``add`` and ``replace``
    carry a ``value``; ``remove`` (of an extra property only) none."""

    op: PatchOp
    name: PropertyName
    value: NotRequired[Any]


class Sort(TypedDict):
    """One sort key of a list and its direction."""

    key: SortKey
    direction: SortDirection


class Received(TypedDict):
    """The bytes of an image received so far (the offset of the next chunk)."""

    size: int


class ImageReader(ServiceAPI, address="image"):
    """Reading an image as the caller sees it (the conductor, to check an image before a boot)."""

    @call(policy="image:read", idempotent=True)
    async def get(self, *, image_id: Id) -> Image:
        """One image.

        :raises NotFound: no such image, deleted, or another project's private/shared image.
        """
        ...

    @call(policy="image:read", idempotent=True)
    async def read_chunk(self, *, image_id: Id, offset: Offset, length: Offset) -> bytes:
        """Up to ``length`` bytes (at most ``CHUNK_MAX``) of an active image from ``offset``;
        empty past its end.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image is deactivated and the caller is no admin (nor a service).
        :raises Conflict: the image is neither ``active`` nor ``deactivated``.
        """
        ...


class ImageForNodes(ServiceAPI, address="image.host.{host}", caller="host"):
    """What compute nodes call, each as its own host (``image.host.<host>``, the host from the
    subject): the image an instance placed on that host boots from (and the kernel and ramdisk
    that image names), as the instance's project sees it. Any other image, or an instance not
    on the calling host, is ``NotFound``."""

    @call(idempotent=True)
    async def get(self, *, image_id: Id, instance_uuid: Id) -> Image:
        """One image the instance uses.

        :raises NotFound: no such instance on the calling host, an image it does not use, or one
            its project cannot see.
        """
        ...

    @call(idempotent=True)
    async def read_chunk(self, *, image_id: Id, instance_uuid: Id, offset: Offset, length: Offset) -> bytes:
        """Up to ``length`` bytes (at most ``CHUNK_MAX``) from ``offset`` of an active image the
        instance uses; empty past its end.

        :raises NotFound: as ``get``.
        :raises Forbidden: the image is deactivated.
        :raises Conflict: the image is neither ``active`` nor ``deactivated``.
        """
        ...

    @call
    async def upload_snapshot(
        self, *, image_id: Id, instance_uuid: Id, offset: Offset, data: Chunk, disk_format: DiskFormat
    ) -> Received:
        """Write one chunk of a snapshot of the instance (an image whose ``instance_uuid``
        property names it, queued or saving); the first one sets its ``disk_format``.

        :raises NotFound: no such instance on the calling host, or no snapshot of it being made.
        :raises Conflict: ``offset`` is not the bytes received.
        """
        ...

    @call
    async def finish_snapshot(self, *, image_id: Id, instance_uuid: Id) -> Image:
        """Make the uploaded snapshot ``active``.

        :raises NotFound: as ``upload_snapshot``.
        :raises Conflict: nothing was uploaded.
        """
        ...

    @call(idempotent=True)
    async def discard_snapshot(self, *, image_id: Id, instance_uuid: Id) -> None:
        """Delete a snapshot that could not be made.

        :raises NotFound: as ``upload_snapshot``.
        """
        ...


class Images(ImageReader, address="image"):
    """The whole image API, as users reach it through the gateway: records and uploads."""

    @call(policy="image:write")
    async def create(
        self,
        *,
        name: ImageName | None = None,
        disk_format: DiskFormat = "raw",
        container_format: ContainerFormat = "bare",
        visibility: Visibility = "private",
        min_disk: Amount = 0,
        min_ram: Amount = 0,
        protected: bool = False,
        os_hidden: bool = False,
        tags: list[Tag] | None = None,
        properties: dict[PropertyName, str] | None = None,
        id: str | None = None,
    ) -> Image:
        """Register a ``queued`` image owned by the caller's project (duplicate tags dropped).

        :raises InvalidRequest: a property named like one of the image's own fields, or an
            ``id`` that is not a UUID.
        :raises Forbidden: a property of a ``RESERVED`` name (or prefix).
        :raises Forbidden: someone other than an admin or a service asks for a public image.
        :raises Conflict: an image with this ``id`` exists (or existed).
        """
        ...

    @call(policy="image:write")
    async def update(self, *, image_id: Id, changes: list[Change], strict_add: bool = False) -> Image:
        """Apply ``changes`` in order, all or none, as Glance's PATCH does: ``add`` and ``replace``
        set a field or an extra property (duplicate tags dropped), ``remove`` drops a property.
        ``strict_add`` (Glance's older v2.0 patch dialect): an ``add`` of what exists is Conflict.

        :raises NotFound: the caller cannot see the image.
        :raises InvalidRequest: a value not of its field's type (a property's: a string).
        :raises Forbidden: not the owner's project (nor an admin); a ``READ_ONLY`` field or a
            ``RESERVED`` name; a removal of one of the image's own fields; ``owner`` or a public
            ``visibility`` asked by someone other than an admin; a format of an image that is
            not ``queued``.
        :raises Conflict: a ``replace`` or ``remove`` of a property the image lacks (or an
            ``add`` of one it has, with ``strict_add``).
        """
        ...

    @call(policy="image:write")
    async def add_tag(self, *, image_id: Id, tag: Tag) -> Image:
        """Tag the image (a tag it has already stays once).

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: not the owner's project (nor an admin).
        """
        ...

    @call(policy="image:write")
    async def remove_tag(self, *, image_id: Id, tag: Tag) -> Image:
        """Take a tag off the image.

        :raises NotFound: the caller cannot see the image, or it has no such tag.
        :raises Forbidden: not the owner's project (nor an admin).
        """
        ...

    @call(policy="image:write")
    async def deactivate(self, *, image_id: Id) -> Image:
        """Make an active image ``deactivated`` (one already deactivated stays so).

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: not the owner's project (nor an admin), or the image is neither
            active nor deactivated.
        """
        ...

    @call(policy="image:write")
    async def reactivate(self, *, image_id: Id) -> Image:
        """Make a deactivated image ``active`` again (one already active stays so).

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: not the owner's project (nor an admin), or the image is neither
            active nor deactivated.
        """
        ...

    @call(policy="image:write")
    async def delete(self, *, image_id: Id) -> None:
        """Mark the image deleted and remove its bytes.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: not the owner's project (nor an admin), or the image is protected.
        """
        ...

    @call(policy="image:write")
    async def upload_chunk(self, *, image_id: Id, offset: Offset, data: Chunk) -> Received:
        """Write one chunk at ``offset``, which must be the bytes received so far (a queued
        image turns ``saving``); answer the new total.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not queued/saving, or ``offset`` is not the bytes received.
        """
        ...

    @call(policy="image:write")
    async def finish_upload(self, *, image_id: Id) -> Image:
        """Hash the uploaded bytes and make the image ``active``.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not ``saving``.
        """
        ...

    @call(policy="image:write")
    async def upload(self, *, image_id: Id, data: Chunk) -> Image:
        """One-shot upload of a small image: one chunk at offset 0, then ``finish_upload``.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not queued, or another upload of it is under way.
        """
        ...

    @call(policy="image:write")
    async def abort_upload(self, *, image_id: Id) -> Image:
        """Drop a half-done upload: ``saving`` back to ``queued``, bytes removed, so it can restart.

        :raises NotFound: the caller cannot see the image.
        :raises Forbidden: the image belongs to another project.
        :raises Conflict: the image is not ``saving``.
        """
        ...

    # last: below its definition, ``list`` in the class's scope would be this method
    @call(policy="image:read", idempotent=True)
    async def list(
        self,
        *,
        name: str | None = None,
        status: ImageStatus | None = None,
        visibility: Visibility | Literal["all"] | None = None,
        owner: str | None = None,
        container_format: ContainerFormat | None = None,
        disk_format: DiskFormat | None = None,
        size: Offset | None = None,
        size_min: Offset | None = None,
        size_max: Offset | None = None,
        tags: list[Tag] | None = None,
        protected: bool | None = None,
        os_hidden: bool = False,
        sort: list[Sort] | None = None,
        limit: Amount | None = None,
        marker: str | None = None,
    ) -> list[Image]:
        """The images the caller may see but deleted (and killed) ones, filtered: each filter
        given must match (``size_min``/``size_max`` bound the size, every one of ``tags`` must
        be the image's; ``os_hidden``: hidden images only, else none of them). In ``sort``'s
        order (default: newest first), then by ``created_at`` and ``id`` (in the direction of
        the one sort key given, else descending); at most ``limit``, after the image ``marker``
        when given. As Glance: without ``visibility``, community images are left out but the
        caller's project's own (another project's never shadows a name); ``all`` is every
        image the caller may see.

        :raises InvalidRequest: a marker the caller cannot see.
        """
        ...
