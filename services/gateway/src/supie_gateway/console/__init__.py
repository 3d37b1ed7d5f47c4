"""The web console at ``/console/``: static pages (plain ES modules, no build step) and a live
endpoint fed from the bus (Server-Sent Events)."""

from .live import LiveTopics, live_router
from .pages import console_router

__all__ = ["LiveTopics", "console_router", "live_router"]
