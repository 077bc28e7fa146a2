"""The node's image cache ages, as Nova's image cache manager does: a cached image no domain of the
node uses goes once unused for longer than the maximum age, with fetches left unfinished as long
ago; one in use, recently used, being fetched or having an overlay made on it stays. Real files
on disk; ``age`` directly, and the node actor's own periodic round on a test-driver node."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from api.node import Node
from bus import ActorState, Bus
from node.actor import NodeActor
from node.domain import Disk, DomainSpec, domain_xml
from node.images import ImageCache
from node.testnode import write_test_node_file

MAX_AGE = 60.0
LONG_AGO = 3600.0
"""How long ago an "old" file was last used: far past ``MAX_AGE``."""


class GatedReader:
    """The image actor's side of a fetch (``ImageForNodes.read_chunk``): ``data``, each read
    once ``gate`` is set; ``reading`` is set when the first read has begun."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()

    async def read_chunk(self, *, image_id: str, instance_uuid: str, offset: int, length: int) -> bytes:
        self.reading.set()
        await self.gate.wait()
        return self.data[offset : offset + length]


def image_record(image_id: str, data: bytes) -> dict[str, Any]:
    """An active image's record, as ``ImageForNodes.get`` answers it."""
    return {
        "id": image_id,
        "status": "active",
        "size": len(data),
        "checksum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        "disk_format": "raw",
        "properties": {},
    }


def cached(path: Path, data: bytes = bytes(4096), *, ago: float = 0.0) -> Path:
    """A file of ``data`` at ``path``, last changed ``ago`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - ago
    os.utime(path, (when, when))
    return path


def spec(instance_uuid: str, **devices: Any) -> DomainSpec:
    return DomainSpec(
        uuid=instance_uuid, name="vm", project_id="p", flavor_name="m1", vcpus=1, memory_mb=64, **devices
    )


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(GatedReader(b""), tmp_path / "state")  # type: ignore[arg-type]


async def test_an_unused_image_past_the_maximum_age_is_removed(
    cache: ImageCache, caplog: pytest.LogCaptureFixture
) -> None:
    old = cached(cache.base_dir / "old-image", bytes(12345), ago=LONG_AGO)
    with caplog.at_level(logging.INFO, logger="node.images"):
        assert await cache.age(set(), MAX_AGE) == ["old-image"]
    assert not old.exists()
    [message] = [r.getMessage() for r in caplog.records if r.name == "node.images"]
    assert "old-image" in message
    assert "12345 bytes freed" in message


async def test_an_unused_image_used_recently_is_kept(cache: ImageCache) -> None:
    recent = cached(cache.base_dir / "recent-image")
    assert await cache.age(set(), MAX_AGE) == []
    assert recent.exists()


async def test_an_image_in_use_is_kept_however_old_and_marked_used_now(cache: ImageCache) -> None:
    in_use = cached(cache.base_dir / "used-image", ago=LONG_AGO)
    assert await cache.age({"used-image"}, MAX_AGE) == []
    assert in_use.exists()
    assert time.time() - in_use.stat().st_mtime < MAX_AGE  # its age counts from this round on
    assert await cache.age(set(), MAX_AGE) == []  # no longer in use, but used a moment ago
    assert in_use.exists()


async def test_an_unfinished_fetch_left_long_ago_is_removed_a_recent_one_kept(
    cache: ImageCache, caplog: pytest.LogCaptureFixture
) -> None:
    base = cached(cache.base_dir / "image-a", ago=LONG_AGO)
    leftover = cached(cache.base_dir / "image-a.part", bytes(777), ago=LONG_AGO)
    fresh = cached(cache.base_dir / "image-b.part")
    with caplog.at_level(logging.INFO, logger="node.images"):
        assert await cache.age({"image-a"}, MAX_AGE) == []  # .part files are no cached images
    assert base.exists()
    assert not leftover.exists()
    assert fresh.exists()
    assert any("image-a" in r.getMessage() and "777 bytes freed" in r.getMessage() for r in caplog.records)


async def test_an_image_being_fetched_is_never_removed(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    reader = GatedReader(data)
    cache = ImageCache(reader, tmp_path / "state")  # type: ignore[arg-type]
    fetch = asyncio.create_task(cache.base(image_record("image-x", data), "instance-1"))  # type: ignore[arg-type]
    await asyncio.wait_for(reader.reading.wait(), 10)
    partial = cache.base_dir / "image-x.part"
    os.utime(partial, (time.time() - LONG_AGO,) * 2)  # as old as a leftover: only the lock protects it
    assert await cache.age(set(), MAX_AGE) == []
    assert partial.exists()
    reader.gate.set()
    base = await asyncio.wait_for(fetch, 10)
    assert base.read_bytes() == data
    assert await cache.age(set(), MAX_AGE) == []  # handed out just now: used
    assert base.exists()


async def test_handing_a_cached_image_out_marks_it_used(cache: ImageCache) -> None:
    data = b"kernel bytes"
    base = cached(cache.base_dir / "kernel-image", data, ago=LONG_AGO)
    assert await cache.base(image_record("kernel-image", data), "instance-1") == base  # type: ignore[arg-type]
    assert await cache.age(set(), MAX_AGE) == []
    assert base.exists()


async def test_the_images_a_domain_uses_are_its_kernel_initrd_and_the_bases_of_its_overlays(
    cache: ImageCache, tmp_path: Path
) -> None:
    kernel = cached(cache.base_dir / "kernel-image")
    ramdisk = cached(cache.base_dir / "ramdisk-image")
    volume = cached(tmp_path / "volumes" / "v-1.raw")
    boot = spec(str(uuid.uuid4()), kernel=str(kernel), initrd=str(ramdisk), disks=(Disk(str(volume), "vdb"),))
    never_built = spec(  # a test-driver domain: its disk file does not exist
        str(uuid.uuid4()), disks=(Disk(str(cache.instance_dir("gone") / "disk"), "vda"),)
    )
    assert await cache.used_by([domain_xml(boot), domain_xml(never_built)]) == {
        "kernel-image",
        "ramdisk-image",
    }


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
async def test_an_overlay_made_on_a_cached_image_keeps_it_in_use(cache: ImageCache) -> None:
    data = os.urandom(64 * 1024)
    instance_uuid = str(uuid.uuid4())
    base = cached(cache.base_dir / "disk-image", data, ago=LONG_AGO)
    disk = await cache.create_root_disk(instance_uuid, image_record("disk-image", data), 1)  # type: ignore[arg-type]
    xml = domain_xml(spec(instance_uuid, disks=(Disk(str(disk), "vda", format="qcow2"),)))
    in_use = await cache.used_by([xml])
    assert in_use == {"disk-image"}
    os.utime(base, (time.time() - LONG_AGO,) * 2)
    assert await cache.age(in_use, MAX_AGE) == []
    assert base.exists()
    cache.remove_instance(instance_uuid)
    assert await cache.used_by([xml]) == set()


async def until_gone(path: Path) -> None:
    async with asyncio.timeout(20):
        while path.exists():
            await asyncio.sleep(0.02)


async def test_the_node_ages_its_cache_every_interval_and_rides_out_a_failed_round(
    start_actor, config, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    host = "aging-1"
    state_dir = config.data_dir / "nodes" / host
    uri = write_test_node_file(state_dir / "testnode.xml", vcpus=4, memory_mb=4096)
    base_dir = state_dir / "images" / "_base"
    cached(base_dir)  # a file where the cache's directory should be: every round fails at first
    caplog.set_level(logging.WARNING, logger="node.actor")
    node = await start_actor(
        NodeActor, config, host=host, libvirt_uri=uri, image_cache_interval=0.02, image_cache_max_age=MAX_AGE
    )
    assert isinstance(node, NodeActor)
    async with asyncio.timeout(20):
        while not any("image cache aging postponed" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
    instance_uuid = str(uuid.uuid4())
    kernel_path = base_dir / "kernel-image"
    await node.records.save(instance_uuid, "p", domain_xml(spec(instance_uuid, kernel=str(kernel_path))))
    base_dir.unlink()
    kernel = cached(kernel_path, ago=LONG_AGO)
    recent = cached(base_dir / "recent-image")
    unused = cached(base_dir / "unused-image", ago=LONG_AGO)
    leftover = cached(base_dir / "unused-image.part", ago=LONG_AGO)
    await until_gone(unused)
    await until_gone(leftover)
    later = cached(base_dir / "later-image", ago=LONG_AGO)
    await until_gone(later)  # a whole round ran after the one that removed `unused`
    assert kernel.exists()
    assert time.time() - kernel.stat().st_mtime < MAX_AGE
    assert recent.exists()
    assert node.state is ActorState.RUNNING
    assert await Node.client(bus, host=host).list_domains() == []
