"""``python -m supie_webhook`` runs the service; with a subcommand, a one-shot command (cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from supie_common.service import run_service

from .cli import main as cli_main
from .config import WebhookSettings
from .service import WebhookService


def _factory(settings: WebhookSettings, path: Path | None) -> WebhookService:
    return WebhookService(settings, config_path=path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] != "--check-config":
        sys.exit(cli_main(sys.argv[1:]))
    run_service(_factory, WebhookSettings, "webhook")


if __name__ == "__main__":
    main()
