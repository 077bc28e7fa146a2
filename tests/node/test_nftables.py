"""nft scripts run in the node's own process (``node/nftables.py``): in its network namespace with
one context kept open, or in a named namespace; a refused script is a typed error and changes
nothing."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from node import nftables


def _tables(namespace: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    listed = subprocess.run([*prefix, "nft", "list", "tables"], check=True, capture_output=True, text=True)
    return listed.stdout


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"aiostack-test-nft-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


async def test_a_script_runs_in_this_process_namespace_again_and_again_on_one_context() -> None:
    table = f"aiostack_test_{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(3):
            await nftables.run(f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{ }}\n")
            assert f"table inet {table}" in _tables()
    finally:
        await nftables.run(f"table inet {table}\ndelete table inet {table}\n")
    assert table not in _tables()


async def test_a_script_for_a_namespace_changes_that_namespace_only(namespace: str) -> None:
    await nftables.run("table inet only_there { }\n", namespace)

    assert "table inet only_there" in _tables(namespace)
    assert "only_there" not in _tables()
    await nftables.run("table inet here_again { }\ndelete table inet here_again\n")  # the thread came back
    assert "here_again" not in _tables()


async def test_a_refused_script_says_why_and_changes_nothing(namespace: str) -> None:
    script = "table inet half { }\nadd rule inet half missing_chain accept\n"

    with pytest.raises(nftables.NftError, match="No such file or directory"):
        await nftables.run(script, namespace)

    assert "half" not in _tables(namespace)


async def test_a_namespace_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(nftables.NftError, match="no network namespace aiostack-test-nft-absent"):
        await nftables.run("table inet x { }\n", "aiostack-test-nft-absent")
