"""`aiostack server add port|network SERVER X [--fixed-ip IP]` and `aiostack server remove port SERVER P`:
hot-plug a NIC into a server and take it out (Nova's os-interface); volumes keep their own
`add volume` / `remove volume`."""

from __future__ import annotations

import argparse

from aiostack.client import Client

NIC_KINDS = ("port", "network")


async def run_interface_change(client: Client, args: argparse.Namespace) -> int:
    """Attach (``add port|network``) or detach (``remove port``); prints the port's line after an attach.

    :raises SystemExit: ``remove network`` (a port is what is taken out), or ``--fixed-ip`` with a port.
    """
    if args.action == "remove":
        if args.kind != "port":
            raise SystemExit("aiostack: remove a NIC by its port: aiostack server remove port SERVER PORT")
        await client.servers.detach_interface(args.server, args.target)
        return 0
    if args.fixed_ip and args.kind != "network":
        raise SystemExit("aiostack: --fixed-ip goes with a network: aiostack server add network SERVER NET")
    attached = await client.servers.attach_interface(
        args.server,
        port=args.target if args.kind == "port" else None,
        network=args.target if args.kind == "network" else None,
        fixed_ip=args.fixed_ip,
    )
    print(f"{attached.port_id} {attached.mac_addr} {','.join(attached.ip_addresses)} {attached.port_state}")
    return 0
