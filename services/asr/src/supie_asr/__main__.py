"""``python -m supie_asr``: run one asr replica."""

from __future__ import annotations

from supie_common.service import run_service

from .config import AsrSettings
from .service import AsrService


def main() -> None:
    run_service(lambda settings, path: AsrService(settings, config_path=path), AsrSettings, "asr")


if __name__ == "__main__":
    main()
