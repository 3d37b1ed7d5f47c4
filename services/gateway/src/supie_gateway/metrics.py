"""Prometheus metrics of one gateway process (served on ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "supie_gateway_open_connections", "open device connections", registry=r
        )
        self.connections_total = Counter(
            "supie_gateway_accepted_connections", "device connections accepted", registry=r
        )
        self.frames_in = Counter(
            "supie_gateway_frames_in_total", "binary frames from devices", registry=r
        )
        self.frames_out = Counter(
            "supie_gateway_frames_out_total", "binary frames to devices", registry=r
        )
        self.messages_in = Counter(
            "supie_gateway_messages_in_total", "JSON messages from devices", ["type"], registry=r
        )
        self.messages_out = Counter(
            "supie_gateway_messages_out_total", "JSON messages to devices", ["type"], registry=r
        )
        self.errors = Counter(
            "supie_gateway_errors_total", "errors answered to devices", ["code"], registry=r
        )
        self.http_requests = Counter(
            "supie_gateway_http_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
