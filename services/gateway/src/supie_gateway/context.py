"""What a device connection is handed: the narrow set of shared collaborators it uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from supie_common.tasks import TaskSet

from .config import GatewaySettings
from .device_state import DeviceStateStore
from .metrics import GatewayMetrics

__all__ = ["ConnectionContext"]


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    nc: NATS
    js: JetStreamContext
    gateway_id: str
    metrics: GatewayMetrics
    store: DeviceStateStore
    tasks: TaskSet  # the gateway's: work that may outlive a socket (queued service messages)
    settings: Callable[[], GatewaySettings]
    config_path: Callable[[], str | None]
