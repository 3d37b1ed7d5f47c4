"""``supie device``: a simulated badge. Prints everything the server sends."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from supie_common.device_client import DeviceClient, firmware_hello, opus_packets_for_wav

__all__ = ["run_device"]


def _print(direction: str, msg: Any) -> None:
    text = msg if isinstance(msg, str) else json.dumps(msg, ensure_ascii=False)
    print(f"{direction} {text}", flush=True)


async def _printer(client: DeviceClient) -> None:
    while True:
        msg = await client.inbox.get()
        _print("<<", msg)


async def _session(args: argparse.Namespace) -> int:
    client = DeviceClient(
        args.url,
        args.device_id,
        client_id=args.client_id,
        token=args.token,
        protocol_version=args.protocol_version,
    )
    await client.connect()
    printer = asyncio.create_task(_printer(client))

    async def send(msg: dict[str, Any]) -> None:
        _print(">>", msg)
        await client.send_json(msg)

    try:
        await send(firmware_hello(frame_ms=args.frame_ms))
        for _ in range(100):
            if client.session_id:
                break
            await asyncio.sleep(0.1)
        else:
            print("!! no hello from the server within 10 s", file=sys.stderr)
            return 1
        await send({"type": "ping"})
        if args.mode:
            await send({"type": "mode", "state": "start", "mode": args.mode})
            await asyncio.sleep(0.5)
        for raw in args.send:
            try:
                msg = json.loads(raw)
            except ValueError as exc:
                print(f"!! --send {raw!r} is not JSON: {exc}", file=sys.stderr)
                return 2
            await send(msg)
        for wav in args.wav:
            packets = opus_packets_for_wav(wav, frame_ms=args.frame_ms)
            await send(
                {
                    "type": "listen",
                    "state": "start",
                    "mode": args.listen_mode,
                    "session_id": client.session_id,
                }
            )
            print(
                f".. streaming {wav}: {len(packets)} Opus frames of {args.frame_ms} ms", flush=True
            )
            await client.stream_packets(packets, frame_ms=args.frame_ms)
            await client.stream_silence(1.0, frame_ms=args.frame_ms)
            await send({"type": "listen", "state": "stop", "session_id": client.session_id})
            await asyncio.sleep(0.5)
        if args.finalize:
            await send({"type": "meeting", "phase": "finalize"})
        await asyncio.sleep(args.wait)
        return 0
    finally:
        printer.cancel()
        await client.close()


def run_device(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_session(args))
    except (OSError, TimeoutError) as exc:
        print(f"!! cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
