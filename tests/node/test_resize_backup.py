"""A resize's root-disk copy (``ImageCache.grow_root_disk`` / ``restore_root_disk``) on real qcow2
files: a revert puts back the disk as this resize found it, and never a copy an older resize left
behind (its confirm lost on the way to the node), which would undo everything written since."""

from __future__ import annotations

import subprocess
from pathlib import Path

from node.images import RESIZE_BACKUP, ImageCache

GIB = 1024**3


def qcow2(path: Path, gib: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{gib}G"], check=True)


def virtual_size(path: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return int(info.split('"virtual-size":')[1].split(",")[0])


def cache_with_disk(tmp_path: Path, gib: int) -> tuple[ImageCache, Path]:
    cache = ImageCache(reader=None, state_dir=tmp_path)  # type: ignore[arg-type]
    disk = cache.instance_dir("vm") / "disk"
    qcow2(disk, gib)
    return cache, disk


async def test_a_revert_puts_back_the_disk_the_resize_grew(tmp_path: Path) -> None:
    cache, disk = cache_with_disk(tmp_path, 1)
    assert await cache.grow_root_disk("vm", 2)
    assert virtual_size(disk) == 2 * GIB and virtual_size(disk.with_name(RESIZE_BACKUP)) == GIB
    assert not await cache.grow_root_disk("vm", 2)  # the step sent again: already grown, copy kept
    await cache.restore_root_disk("vm", 1)
    assert virtual_size(disk) == GIB and not disk.with_name(RESIZE_BACKUP).exists()


async def test_a_copy_an_older_resize_left_is_dropped_not_restored(tmp_path: Path) -> None:
    cache, disk = cache_with_disk(tmp_path, 1)
    assert await cache.grow_root_disk("vm", 2)  # confirmed, but the node never heard
    assert not await cache.grow_root_disk("vm", 2)  # a later resize (2 GiB to 2 GiB): no copy made
    await cache.restore_root_disk("vm", 2)  # and reverted
    assert virtual_size(disk) == 2 * GIB and not disk.with_name(RESIZE_BACKUP).exists()


async def test_a_new_resize_replaces_an_older_copy(tmp_path: Path) -> None:
    cache, disk = cache_with_disk(tmp_path, 1)
    assert await cache.grow_root_disk("vm", 2)  # its confirm lost
    assert await cache.grow_root_disk("vm", 3)
    assert virtual_size(disk.with_name(RESIZE_BACKUP)) == 2 * GIB
    await cache.restore_root_disk("vm", 2)
    assert virtual_size(disk) == 2 * GIB
