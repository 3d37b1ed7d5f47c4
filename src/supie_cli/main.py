"""``supie``: run the whole stack, one service, or a simulated device.

supie up [--ws-port 8004] [--http-port 8003] [--data-dir ./data] [--config config.yaml]
         [--nats-port N] [--valkey-port N] [--ready-timeout 300]
supie gateway|asr|meeting|webhook [service args...]
supie device --url ws://127.0.0.1:8004/supie/v1/ [--wav f.wav] [--mode meeting] [--send JSON]
supie coding pipe --device <id> [--url ws://...] [-- COMMAND...]   (or: CMD | supie coding pipe)
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "SERVICES"]

SERVICES = ("gateway", "asr", "meeting", "workflow", "coding", "webhook")


def _run_service(name: str, args: list[str]) -> None:
    """Replace this process with ``python -m supie_<name>`` (one service, external NATS/Redis)."""
    os.execv(sys.executable, [sys.executable, "-m", f"supie_{name}", *args])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["coding", "pipe"]:  # before the services: `supie coding` runs the service
        from .coding_pipe import run_pipe

        raise SystemExit(run_pipe(argv[2:]))
    if argv and argv[0] in SERVICES:
        _run_service(argv[0], argv[1:])
        return
    parser = argparse.ArgumentParser(
        prog="supie", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack on the embedded NATS and Valkey")
    up.add_argument("--ws-port", type=int, default=None, help="device WebSocket port (8004)")
    up.add_argument("--http-port", type=int, default=None, help="HTTP port (8003)")
    up.add_argument("--data-dir", default=None, help="data folder (./data)")
    up.add_argument("--config", default=None, help="YAML config file (config.yaml)")
    up.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated services to run"
    )
    up.add_argument("--nats-port", type=int, default=0, help="embedded NATS port (0 = free)")
    up.add_argument("--valkey-port", type=int, default=0, help="embedded Valkey port (0 = free)")
    up.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for the stack (300)"
    )

    dev = sub.add_parser("device", help="a simulated badge speaking the firmware protocol")
    dev.add_argument("--url", default="ws://127.0.0.1:8004/supie/v1/")
    dev.add_argument("--device-id", default="aa:bb:cc:dd:ee:01")
    dev.add_argument("--client-id", default=None)
    dev.add_argument("--token", default=None)
    dev.add_argument("--protocol-version", type=int, default=1, choices=(1, 2, 3))
    dev.add_argument("--wav", action="append", default=[], help="WAV file(s) to stream")
    dev.add_argument("--mode", choices=("meeting", "working", "coding"), default=None)
    dev.add_argument("--listen-mode", choices=("auto", "manual", "realtime"), default="auto")
    dev.add_argument("--send", action="append", default=[], help="JSON message to send")
    dev.add_argument("--finalize", action="store_true", help="finalize the meeting at the end")
    dev.add_argument("--wait", type=float, default=3.0, help="seconds to keep listening at the end")
    dev.add_argument("--frame-ms", type=int, default=60, choices=(20, 60))

    for name in SERVICES:
        sub.add_parser(name, help=f"run the {name} service against external NATS/Redis")

    args = parser.parse_args(argv)
    if args.command == "up":
        from .up import run_up

        raise SystemExit(run_up(args))
    if args.command == "device":
        from .device import run_device

        raise SystemExit(run_device(args))


if __name__ == "__main__":
    main()
