"""``python -m supie_cli.probe <service>``: exit 0 when *this host's* replica of ``service``
answers its health request over NATS with ok, 1 otherwise. A container healthcheck: replicas
share one queue group, so the probe asks until the answer comes from an instance named after this
host (``<service>-<hostname>-...``), never trusting another replica's answer."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from loguru import logger
from supie_common.bus import BusError, connect_nats, request
from supie_common.contracts import HealthPing, HealthPong, Subjects

__all__ = ["probe", "main"]


async def probe(nats_url: str, service: str, attempts: int = 20, timeout_s: float = 1.0) -> str:
    """``"ok"`` or why not."""
    mine = f"{service}-{socket.gethostname()}-"
    try:
        nc = await connect_nats(nats_url, f"probe-{service}", connect_timeout_s=timeout_s * 2)
    except Exception as exc:  # nats-py raises several unrelated types for "cannot connect"
        return f"cannot reach NATS at {nats_url}: {type(exc).__name__}"
    why = "no answer"
    try:
        for _ in range(attempts):
            try:
                pong = await request(
                    nc, Subjects.health(service), HealthPing(), HealthPong, timeout=timeout_s
                )
            except BusError as exc:
                why = f"no answer: {exc}"
                continue
            if pong.instance.startswith(mine):
                return "ok" if pong.ok else f"degraded: {pong.detail}"
            why = "only other replicas answered"
    finally:
        await nc.close()
    return why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supie_cli.probe", description=__doc__)
    parser.add_argument("service")
    parser.add_argument("--nats-url", default=os.environ.get("SUPIE_NATS__URL"))
    args = parser.parse_args(argv)
    if not args.nats_url:
        print("probe: no --nats-url and no SUPIE_NATS__URL", file=sys.stderr)
        return 2
    logger.remove()  # connection chatter is noise in a healthcheck's output
    result = asyncio.run(probe(args.nats_url, args.service))
    if result != "ok":
        print(f"probe: {args.service}: {result}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
