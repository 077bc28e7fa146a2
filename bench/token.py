"""Identity benchmark on the real stack (`aiostack up`: real nats-server, the identity actor in a process).

Prints: password logins/s at the chosen scrypt cost (REST, 50 at once); validations/s
uncached (``TokenValidation.validate`` over the bus, 64 in flight) and cached
(``runtime.auth.TokenValidator``, the cache the gateway and every actor use); the p99 latency
of cached validations, and of uncached ones, while 50 password logins run at once (scrypt must
run off the identity actor's event loop). Ends with one RESULT line.

    python bench/token.py [--logins 200] [--uncached 5000] [--cached 200000]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where bench/token.py would shadow the
# standard library's token module: put the repository there instead.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import argparse
import asyncio
import statistics
import tempfile
import time

import aiohttp

from aiostack.client import password_auth
from api.identity import TokenValidation
from bus import Bus
from deploy.launch import aiostack_up
from runtime.auth import TokenValidator

PASSWORD = "bench-secret"
STORM = 50


async def login(session: aiohttp.ClientSession, url: str) -> str:
    body = password_auth("demo", PASSWORD, "demo")
    async with session.post(f"{url}/identity/v3/auth/tokens", json=body) as response:
        if response.status != 201:
            raise RuntimeError(f"login failed: {response.status} {await response.text()}")
        return response.headers["X-Subject-Token"]


def from_address(lane: int) -> aiohttp.ClientSession:
    """A client of its own loopback address (127.0.1.N): the identity service checks a few logins
    at once per address, so each lane of a storm is a client of its own, as real ones would be."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.1.{lane + 1}", 0)))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--uncached", type=int, default=5000)
    parser.add_argument("--cached", type=int, default=200_000)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        async with (
            aiostack_up(
                data_dir,
                "--log-level",
                "WARNING",
                env={"AIOSTACK_ADMIN_PASSWORD": PASSWORD, "AIOSTACK_DEMO_PASSWORD": PASSWORD},
            ) as cloud,
            aiohttp.ClientSession() as session,
        ):
            url, nats_url = cloud.gateway_url, cloud.nats_url
            credentials = cloud.admin_credentials
            async with await Bus.connect(nats_url, name="bench-token", credentials=credentials) as bus:
                identity = TokenValidation.client(bus)
                token = await login(session, url)
                remaining = args.logins

                async def login_lane(lane: int) -> None:
                    nonlocal remaining
                    async with from_address(lane) as own:
                        while remaining > 0:
                            remaining -= 1
                            await login(own, url)

                began = time.perf_counter()
                await asyncio.gather(*(login_lane(lane) for lane in range(STORM)))
                results["logins_per_s"] = args.logins / (time.perf_counter() - began)

                remaining = args.uncached

                async def validate_lane() -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        await identity.validate(token=token)

                began = time.perf_counter()
                await asyncio.gather(*(validate_lane() for _ in range(64)))
                results["uncached_per_s"] = args.uncached / (time.perf_counter() - began)

                validator = TokenValidator(bus)
                await validator.start()
                await validator.validate(token)
                began = time.perf_counter()
                for _ in range(args.cached):
                    await validator.validate(token)
                results["cached_per_s"] = args.cached / (time.perf_counter() - began)

                storm_over = asyncio.Event()

                async def storm(lane: int) -> None:
                    async with from_address(lane) as own:
                        while not storm_over.is_set():
                            await login(own, url)

                storms = [asyncio.create_task(storm(lane)) for lane in range(STORM)]
                await asyncio.sleep(0.5)
                cached, uncached = [], []
                for _ in range(400):
                    t0 = time.perf_counter()
                    await validator.validate(token)
                    cached.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await identity.validate(token=token)
                    uncached.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.005)
                storm_over.set()
                await asyncio.gather(*storms)
                results["cached_p99_ms_storm"] = percentile(cached, 0.99) * 1000
                results["uncached_p50_ms_storm"] = statistics.median(uncached) * 1000
                results["uncached_p99_ms_storm"] = percentile(uncached, 0.99) * 1000

    print(f"password logins/s (scrypt n=2**14 r=8 p=1, {STORM} at once, REST): {results['logins_per_s']:.0f}")
    print(
        f"validations/s: uncached over the bus {results['uncached_per_s']:.0f}, "
        f"cached {results['cached_per_s']:.0f}"
    )
    print(
        f"during {STORM} concurrent logins: cached validation p99 {results['cached_p99_ms_storm']:.3f} ms; "
        f"uncached p50 {results['uncached_p50_ms_storm']:.2f} ms, "
        f"p99 {results['uncached_p99_ms_storm']:.2f} ms"
    )
    goal_met = results["cached_per_s"] >= 20_000 and results["cached_p99_ms_storm"] <= 5
    print(
        f"RESULT logins_per_s={results['logins_per_s']:.0f} uncached_per_s={results['uncached_per_s']:.0f} "
        f"cached_per_s={results['cached_per_s']:.0f} "
        f"cached_p99_ms_storm={results['cached_p99_ms_storm']:.3f} "
        f"uncached_p99_ms_storm={results['uncached_p99_ms_storm']:.2f} goal_met={'yes' if goal_met else 'no'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
