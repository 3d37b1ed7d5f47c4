"""``python -m supie_gateway``: run one gateway against external NATS/Redis."""

from __future__ import annotations

from supie_common.service import run_service

from .config import GatewaySettings
from .service import GatewayService


def main() -> None:
    run_service(
        lambda s, p: GatewayService(s, p),
        GatewaySettings,
        "gateway",
    )


if __name__ == "__main__":
    main()
