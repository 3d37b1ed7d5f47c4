"""``python -m supie_workflow [--check-config] [CONFIG]`` runs the workflow service."""

from __future__ import annotations

from pathlib import Path

from supie_common.service import run_service

from .config import WorkflowSettings
from .service import WorkflowService


def _factory(settings: WorkflowSettings, path: Path | None) -> WorkflowService:
    return WorkflowService(settings, config_path=path)


def main() -> None:
    run_service(_factory, WorkflowSettings, "workflow")


if __name__ == "__main__":
    main()
