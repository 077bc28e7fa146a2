"""A real guest's root disk (``ImageCache.create_root_disk``): a qcow2 overlay on the cached base,
as large as the flavor's disk and never smaller than the image, the base's size read once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from node import images
from node.images import ImageCache


class NoReads:
    """The image actor's side of a fetch: never asked (the base is cached already)."""

    async def read_chunk(self, *, image_id: str, instance_uuid: str, offset: int, length: int) -> bytes:
        raise AssertionError("the cached base was fetched again")


def virtual_size(path: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
    )
    return int(json.loads(info.stdout)["virtual-size"])


async def test_overlays_of_one_qcow2_image_read_its_size_once_and_are_never_smaller_than_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ImageCache(NoReads(), tmp_path)  # type: ignore[arg-type]
    cache.base_dir.mkdir(parents=True)
    two_gib = 2 * 1024**3
    base = ["qemu-img", "create", "-q", "-f", "qcow2", str(cache.base_dir / "img"), str(two_gib)]
    subprocess.run(base, check=True)  # noqa: ASYNC221 (the test's own fixture, before anything runs)
    image: Any = {"id": "img", "status": "active", "disk_format": "qcow2", "size": 0, "properties": {}}
    reads: list[Path] = []
    read_size = images._virtual_size

    async def counted(path: Path, disk_format: str) -> int:
        reads.append(path)
        return await read_size(path, disk_format)

    monkeypatch.setattr(images, "_virtual_size", counted)

    small = await cache.create_root_disk("vm-1", image, 1)
    large = await cache.create_root_disk("vm-2", image, 3)

    assert reads == [cache.base_dir / "img"]
    assert virtual_size(small) == two_gib  # the flavor's 1 GiB is less than the image
    assert virtual_size(large) == 3 * 1024**3
