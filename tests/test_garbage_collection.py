"""What a started process tells CPython's garbage collector (``deploy.run.settle_garbage_collection``):
what it made while starting is left out of every later collection, and its young objects are
collected in batches of ``YOUNG_OBJECTS_PER_COLLECTION``."""

from __future__ import annotations

import gc
from typing import Any

from deploy.run import YOUNG_OBJECTS_PER_COLLECTION, settle_garbage_collection


def _collected(thing: Any) -> bool:
    """Whether a collection would look at ``thing`` (it is in one of the three generations)."""
    return any(tracked is thing for tracked in gc.get_objects())


def test_a_started_process_freezes_what_it_made_and_collects_young_objects_in_batches() -> None:
    threshold = gc.get_threshold()
    made_while_starting: dict[str, list[str]] = {"routes": []}
    assert _collected(made_while_starting)
    try:
        settle_garbage_collection()
        assert not _collected(made_while_starting)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_OBJECTS_PER_COLLECTION, *threshold[1:])
        made_later: dict[str, list[str]] = {"page": []}
        assert any(tracked is made_later for tracked in gc.get_objects(generation=0))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
