"""Supie gateway: the xiaozhi device protocol over WebSocket, bridged to NATS."""

from .config import GatewaySettings
from .router import route_transcript
from .service import GatewayService

__all__ = ["GatewayService", "GatewaySettings", "route_transcript"]
