"""``python -m supie_coding``: run one coding service replica."""

from __future__ import annotations

from supie_common.service import run_service

from .config import CodingSettings
from .service import CodingService


def main() -> None:
    run_service(
        lambda settings, path: CodingService(settings, config_path=path),
        CodingSettings,
        CodingService.name,
    )


if __name__ == "__main__":
    main()
