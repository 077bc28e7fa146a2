"""Contract fuzzing on the real stack: schemathesis against `aiostack up`, every check, more examples.

The same run as tests/gateway/test_contract.py (deploy/contract.py: a cloud with two
test-driver nodes, an admin token, every check on every operation of the route registry, which
holds every route the gateway serves), with more examples per operation. Prints what
schemathesis found, each failure's details, and ends with one RESULT line; the goal is 0
failures of every check and 0 errors.

    python bench/contract.py [--max-examples 100] [--seed N] [--keep DIR]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import re
import tempfile
from pathlib import Path

from deploy.contract import WORKERS, run_contract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiostack-contract-") as scratch:
        workdir = options.keep or Path(scratch)
        result = asyncio.run(
            run_contract(
                workdir, max_examples=options.max_examples, workers=options.workers, seed=options.seed
            )
        )
    print(result.details())
    print(result.summary())
    for name, operations in result.failed_operations.items():
        print(f"  {name}: {', '.join(operations)}")
    for error in result.errors:
        print(f"  error: {error}")
    seed = re.search(r"Seed: (\d+)", result.output)
    print(
        f"RESULT operations={result.operations} test_cases={result.test_cases}"
        f" failures={sum(result.failures.values())} errors={len(result.errors)}"
        f" seed={seed.group(1) if seed else options.seed} goal_met={'yes' if result.clean else 'no'}"
    )


if __name__ == "__main__":
    main()
