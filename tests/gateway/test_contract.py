"""The gateway keeps the contract it publishes: schemathesis, with all its checks, against a real
``aiostack up``, finds no server error and no contract failure (deploy/contract.py).

CI-sized: a few examples per operation and phase; ``--full`` runs more, ``bench/contract.py`` more
still. Every operation the gateway serves is tried (the route registry holds them all: identity, compute,
image, network, volume, the event socket). What ran and what was found is printed (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.contract import run_contract

CI_EXAMPLES = 6
FULL_EXAMPLES = 25


@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_failure_on_any_operation(tmp_path: Path, full_size: bool) -> None:
    examples = FULL_EXAMPLES if full_size else CI_EXAMPLES
    result = await run_contract(tmp_path, max_examples=examples, seed=12)
    print(result.summary())
    assert result.operations == result.selected > 100, result.summary()
    assert not result.errors, f"{result.summary()}\n{result.details()[:20000]}"
    assert not result.failures, f"{result.summary()}\n{result.details()[:20000]}"
    assert result.clean, result.output[-4000:]
