"""Supie workflow service: working mode's shared task lists (SPEC §7)."""

from .config import WorkflowSettings
from .service import WorkflowService

__all__ = ["WorkflowService", "WorkflowSettings"]
