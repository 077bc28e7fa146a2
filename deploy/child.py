"""Entry point of the processes `aiostack up` starts: ``python -m deploy.child ACTOR [options]``.

It is `aiostack run ACTOR` with one difference: actor and node processes never speak HTTP,
and nats-py imports aiohttp only for its optional websocket transport, so aiohttp is kept
out of them (about 10 MB less resident memory per process).
"""

import sys

if sys.argv[1:2] != ["gateway"]:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]

import argparse

from deploy.cli import run


def main(argv: list[str]) -> int:
    commands = argparse.ArgumentParser(prog="aiostack").add_subparsers(dest="command", required=True)
    runner = run(commands)
    return runner(commands.choices["run"].parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
