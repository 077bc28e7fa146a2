"""Entry point of the processes `aiostack up` starts: ``python -m aiostack.child ACTOR [options]``.

It is `aiostack run ACTOR` with one difference: actor and node processes never speak HTTP,
and nats-py imports aiohttp only for its optional websocket transport, so aiohttp is kept
out of them (about 10 MB less resident memory per process).
"""

import sys

if sys.argv[1:2] != ["gateway"]:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]

from aiostack.cli import main

main(["run", *sys.argv[1:]])
