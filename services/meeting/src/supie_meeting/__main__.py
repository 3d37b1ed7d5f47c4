"""``python -m supie_meeting``: run one meeting service replica."""

from __future__ import annotations

from supie_common.service import run_service

from .config import MeetingSettings
from .service import MeetingService


def main() -> None:
    run_service(
        lambda settings, path: MeetingService(settings, config_path=path),
        MeetingSettings,
        MeetingService.name,
    )


if __name__ == "__main__":
    main()
