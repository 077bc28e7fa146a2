"""Token key rotation on a schedule and by command (`aiostack token rotate-keys`).

The identity actor rotates whenever the primary key is a period old, and replicas sharing the key
directory rotate once per period between them; the keys kept cover every token that may still be
valid (a bad combination is refused with what it takes); the command rotates over the bus as the
bus's admin and prints the new layout, and tokens issued before keep working until their key leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from actors.identity.actor import IdentityActor
from actors.identity.keys import KeyRepository, active_keys_needed, max_active_keys_for
from api.identity import Tokens
from bus import Bus, Unauthorized
from deploy.cli import add_run_parser
from deploy.run import actor_factories
from deploy.up import child_specs
from runtime.config import Config
from tests.helpers import DEMO_PASSWORD
from tests.test_config_file import started


def key_numbers(config: Config) -> list[int]:
    return sorted(int(p.name) for p in (config.data_dir / "keys" / "token").iterdir() if p.name.isdigit())


def opens(config: Config, number: int, token: str) -> bool:
    key = (config.data_dir / "keys" / "token" / str(number)).read_bytes()
    try:
        Fernet(key).decrypt(token + "=" * (-len(token) % 4))
    except InvalidToken:
        return False
    return True


async def test_the_identity_actor_rotates_the_keys_whenever_the_primary_is_a_period_old(
    start_actor, config
) -> None:
    await start_actor(IdentityActor, config, token_ttl=1.0, stale_window=1.0, token_key_rotation=1.0)
    assert key_numbers(config)[-1] <= 2  # the first key, or the one rotation a fresh key may see
    async with asyncio.timeout(30):
        while key_numbers(config)[-1] < 5:
            await asyncio.sleep(0.1)
    assert len(key_numbers(config)) == active_keys_needed(1.0, 1.0, 1.0) == 4


async def test_of_replicas_sharing_the_keys_one_rotates_per_period(tmp_path: Path) -> None:
    one, two = KeyRepository(tmp_path / "token", 4), KeyRepository(tmp_path / "token", 4)
    await one.setup()
    await two.setup()
    assert await one.rotate_if_older(3600.0) is None  # the primary was made just now
    assert await one.rotate_if_older(0.0) == {"primary": 2, "keys": [0, 1, 2]}
    assert await two.rotate_if_older(3600.0) is None  # one rotated this period already
    assert await two.refresh() and two.primary == 2


def test_the_keys_kept_cover_every_token_that_may_still_be_valid() -> None:
    day = 24 * 3600.0
    assert active_keys_needed(3600.0, 2 * day, day) == 5  # ceil(49 h / 24 h) + 2
    assert max_active_keys_for(3600.0, 2 * day, day, None) == 5
    assert max_active_keys_for(3600.0, 2 * day, None, None) == 3  # no schedule: the default
    assert max_active_keys_for(3600.0, 2 * day, day, 8) == 8
    with pytest.raises(ValueError, match=r"max_active_keys 4 is too few .* takes 5 keys"):
        max_active_keys_for(3600.0, 2 * day, day, 4)
    with pytest.raises(ValueError, match="must be positive"):
        max_active_keys_for(3600.0, 2 * day, 0.0, None)


def test_up_takes_the_schedule_from_its_flags_or_its_file_and_hands_it_to_identity(tmp_path: Path) -> None:
    args = started(tmp_path / "flags", "--token-key-rotation", "24")
    (identity,) = [spec for spec in child_specs(args) if spec.name == "identity"]
    assert identity.args == ("identity", "--token-key-rotation", "24.0")
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "aiostack.toml").write_text("token-key-rotation = 12\nmax-active-keys = 9\n")
    args = started(tmp_path / "file")
    (identity,) = [spec for spec in child_specs(args) if spec.name == "identity"]
    assert identity.args == ("identity", "--token-key-rotation", "12.0", "--max-active-keys", "9")
    run = add_run_parser(argparse.ArgumentParser().add_subparsers())
    run_args = run.parse_args(["identity", "--nats", "nats://127.0.0.1:1", *identity.args[1:]])
    config = Config(data_dir=tmp_path, nats_url="nats://127.0.0.1:1")
    (factory,) = actor_factories("identity", None, config, run_args)  # type: ignore[arg-type]
    assert factory.keywords == {"token_key_rotation": 12 * 3600.0, "max_active_keys": 9}  # type: ignore[attr-defined]


async def aiostack(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiostack.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_up_refuses_too_few_keys_for_its_schedule_and_a_schedule_in_a_cluster(tmp_path: Path) -> None:
    code, _, err = await aiostack(
        "up", "--data-dir", str(tmp_path), "--token-key-rotation", "24", "--max-active-keys", "3"
    )
    assert code == 2 and "max_active_keys 3 is too few" in err and "takes 5 keys" in err, err
    code, _, err = await aiostack(
        "up", "--data-dir", str(tmp_path), "--cluster", "127.0.0.1", "--database", "postgresql://x@h/d",
        "--token-key-rotation", "24",
    )  # fmt: skip
    assert code == 2 and "each controller of a cluster keeps its own copy" in err, err
    assert not (tmp_path / "keys").exists()


async def test_rotate_keys_by_command_keeps_earlier_tokens_until_their_key_leaves(
    bus: Bus, start_actor, config
) -> None:
    await start_actor(IdentityActor, config)
    tokens = Tokens.client(bus)
    before = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    assert opens(config, 1, before["token"])
    command = ("token", "rotate-keys", "--nats", config.nats_url, "--data-dir", str(config.data_dir))
    code, out, err = await aiostack(*command)
    assert code == 0, err
    assert out.splitlines() == ["primary key: 2", "staged key: 0", "secondary keys: 1"]
    await tokens.validate(token=before["token"])
    after = await tokens.issue(username="demo", password=DEMO_PASSWORD)
    assert opens(config, 2, after["token"]) and not opens(config, 1, after["token"])
    code, out, err = await aiostack(*command, "--json")
    assert code == 0 and json.loads(out) == {"primary": 3, "keys": [0, 2, 3]}, err
    with pytest.raises(Unauthorized):
        await tokens.validate(token=before["token"])  # key 1 left with the second rotation
    await tokens.validate(token=after["token"])
