"""The gateway over HTTPS (`--tls-cert generate` makes a CA the clients are told to trust), and behind a
trusted reverse proxy (`--trusted-proxy`: the URLs it hands out follow X-Forwarded-Proto and -Host)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from aiostack.client import Client
from deploy.launch import aiostack_up

PASSWORDS = {"AIOSTACK_ADMIN_PASSWORD": "admin-secret", "AIOSTACK_DEMO_PASSWORD": "demo-secret"}
OPENSTACK = str(Path(sys.executable).with_name("openstack"))


async def test_a_generated_ca_signs_the_gateway_and_every_client_trusts_it_and_nothing_else(
    tmp_path: Path,
) -> None:
    async with aiostack_up(tmp_path, "--tls-cert", "generate", env=PASSWORDS) as cloud:
        url = cloud.gateway_url
        ca = tmp_path / "tls" / "gateway-ca" / "ca.pem"
        assert url.startswith("https://127.0.0.1:") and f"signed by {ca}" in cloud.banner
        assert (tmp_path / "tls" / "gateway-ca" / "ca.key").stat().st_mode & 0o777 == 0o600

        async with Client(url, ca_file=ca) as client:
            await client.login("demo", "demo-secret", "demo")
            server = await client.servers.create("tls-vm", image="aiostack-tiny", flavor="m1.tiny")
            assert server.status == "ACTIVE"  # the wait rode the websocket, its requests relayed over TLS
            await client.servers.delete(server)

        async with Client(url) as untrusting:  # the system's CAs do not know this one
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await untrusting.login("demo", "demo-secret", "demo")
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                await plain.get(
                    url.replace("https://", "http://") + "/", timeout=aiohttp.ClientTimeout(total=10)
                )

        env = {
            **os.environ,
            "OS_CLIENT_CONFIG_FILE": str(tmp_path / "clouds.yaml"),
            "OS_CLOUD": "aiostack-demo",
        }
        env.pop("OS_CACERT", None)
        listed = await asyncio.to_thread(
            subprocess.run, [OPENSTACK, "flavor", "list", "-f", "value", "-c", "Name"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert listed.returncode == 0 and "m1.tiny" in listed.stdout, listed.stderr
        ours = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aiostack.cli", "flavor", "list", "-f", "value", "-c", "Name"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ours.returncode == 0 and "m1.tiny" in ours.stdout, ours.stderr
        openrc = (tmp_path / "openrc").read_text()
        assert f"export OS_CACERT={ca}" in openrc and "export AIOSTACK_URL=https://" in openrc
        context = ssl.create_default_context(cafile=ca)
        host, port = url.removeprefix("https://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        assert writer.get_extra_info("ssl_object").version() in {"TLSv1.2", "TLSv1.3"}
        writer.close()
        await writer.wait_closed()
        del reader


async def test_up_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiostack.cli", "up", "--data-dir", str(tmp_path),
        "--tls-cert", str(tmp_path / "c.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 2 and b"--tls-cert FILE needs --tls-key FILE" in output
    assert list(tmp_path.iterdir()) == []  # a refused start writes no settings


async def catalog_urls(url: str, headers: dict[str, str]) -> set[str]:
    """The endpoint URLs of the token's catalog a demo login gets, sent with ``headers``."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": "demo-secret"}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/identity/v3/auth/tokens", json=body, headers=headers) as answer,
    ):
        assert answer.status == 201, await answer.text()
        catalog = (await answer.json())["token"]["catalog"]
    return {endpoint["url"] for service in catalog for endpoint in service["endpoints"]}


async def test_behind_a_trusted_proxy_the_catalog_names_the_scheme_and_host_the_client_used(
    tmp_path: Path,
) -> None:
    forwarded = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "cloud.example.org:8443"}
    async with aiostack_up(tmp_path / "proxied", "--trusted-proxy", "127.0.0.0/8", env=PASSWORDS) as cloud:
        urls = await catalog_urls(cloud.gateway_url, forwarded)
        assert urls and all(u.startswith("https://cloud.example.org:8443/") for u in urls), urls
        bogus = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil/path@x"}
        ignored = await catalog_urls(cloud.gateway_url, bogus)
        assert all(u.startswith(cloud.gateway_url + "/") for u in ignored)
    async with aiostack_up(tmp_path / "direct", env=PASSWORDS) as cloud:
        urls = await catalog_urls(cloud.gateway_url, forwarded)
        assert urls and all(u.startswith(cloud.gateway_url + "/") for u in urls), urls
