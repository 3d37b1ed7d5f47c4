"""Configuration hygiene: unknown keys refused with a hint, secrets never shown, --check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger
from supie_common.settings import (
    KNOWN_SECTIONS,
    ConfigError,
    DispatcherSection,
    MeetingSection,
    ServerSection,
    SupieSettings,
    load_settings,
)

SECRETS = {
    "api_key": "sk-live-THE-API-KEY",
    "webhook": "whsec_THEWEBHOOKSECRET",
    "token": "THE-API-TOKEN",
    "auth": "THE-HMAC-KEY",
    "header": "Bearer THE-HEADER-VALUE",
}


class AllSettings(SupieSettings):
    server: ServerSection = ServerSection()
    meeting: MeetingSection = MeetingSection()
    webhook: DispatcherSection = DispatcherSection()


def _config_with_secrets(extra: str = "") -> str:
    return f"""
llm:
  main: {{base_url: "http://127.0.0.1:1/v1", api_key: "{SECRETS["api_key"]}"}}
server:
  api_token: "{SECRETS["token"]}"
  secret: "{SECRETS["token"]}-device"
  auth: {{enabled: true, auth_key: "{SECRETS["auth"]}", tokens: ["{SECRETS["token"]}-2"]}}
meeting:
  webhook:
    url: http://127.0.0.1:1/hook
    secret: "{SECRETS["webhook"]}"
    previous_secrets: ["{SECRETS["webhook"]}-old"]
    headers: {{Authorization: "{SECRETS["header"]}"}}
{extra}
"""


def _assert_no_secret(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text, f"a secret leaked: {text[:500]}"


def test_a_misspelled_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  ws_prot: 9000\n")
    with pytest.raises(
        ConfigError, match=r"server\.ws_prot: unknown key \(did you mean server\.ws_port\?\)"
    ):
        load_settings(AllSettings, cfg)
    cfg.write_text("meeting:\n  webhook:\n    ulr: http://x/\n")
    with pytest.raises(
        ConfigError,
        match=r"meeting\.webhook\.ulr: unknown key \(did you mean meeting\.webhook\.url\?\)",
    ):
        load_settings(AllSettings, cfg)


def test_an_unknown_section_is_refused_with_a_hint(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("sever:\n  ws_port: 9000\n")
    with pytest.raises(ConfigError, match=r"sever: unknown key \(did you mean server\?\)"):
        load_settings(AllSettings, cfg)


def test_a_section_another_service_reads_is_skipped_not_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("asr:\n  beam_size: 1\nworkflow:\n  device_groups: {}\n")
    settings = load_settings(AllSettings, cfg)  # AllSettings has no asr/workflow section
    assert settings.server.ws_port == 8004
    assert "asr" in KNOWN_SECTIONS and "workflow" in KNOWN_SECTIONS


def test_a_misspelled_environment_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPIE_SERVER__WS_PROT", "9000")
    with pytest.raises(ConfigError, match=r"server\.ws_prot: unknown key"):
        load_settings(AllSettings, "/nonexistent.yaml")


def test_keys_nothing_reads_are_gone(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  hello_timeout_s: 10\n")
    with pytest.raises(ConfigError, match=r"server\.hello_timeout_s: unknown key"):
        load_settings(AllSettings, cfg)


def test_an_invalid_entry_never_prints_a_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    # an invalid value next to the secrets: the old error printed the whole section
    cfg.write_text(_config_with_secrets().replace("url: http://127.0.0.1:1/hook", "url: ftp://x"))
    with pytest.raises(ConfigError) as info:
        load_settings(AllSettings, cfg)
    assert "meeting.webhook.url" in str(info.value)
    _assert_no_secret(str(info.value))
    cfg.write_text(_config_with_secrets().replace('api_key: "', 'timeout_s: "soon", api_key: "'))
    with pytest.raises(ConfigError) as info:
        load_settings(AllSettings, cfg)
    assert "llm.main.timeout_s" in str(info.value)
    _assert_no_secret(str(info.value))


def test_secrets_never_appear_in_repr_dumps_or_logs(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(_config_with_secrets())
    settings = load_settings(AllSettings, cfg)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        logger.info("settings: {}", settings)
        logger.info("server: {!r}", settings.server)
    finally:
        logger.remove(sink)
    _assert_no_secret(repr(settings) + str(settings) + settings.model_dump_json() + "".join(lines))
    # the values are still there for the one place that needs them
    hook = settings.meeting.webhook.all_endpoints()[0]
    assert hook.signing_secrets()[0] == SECRETS["webhook"]
    assert hook.header_values()["Authorization"] == SECRETS["header"]
    assert settings.llm["main"].api_key is not None
    assert settings.llm["main"].api_key.get_secret_value() == SECRETS["api_key"]


@pytest.mark.parametrize("service", ["gateway", "meeting", "asr", "workflow", "coding", "webhook"])
def test_check_config_names_the_key_and_exits_2(tmp_path: Path, service: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(_config_with_secrets("log:\n  levl: DEBUG\n"))
    env = {"PATH": "/usr/bin:/bin", "SUPIE_CONFIG": str(cfg)}
    bad = subprocess.run(
        [sys.executable, "-m", f"supie_{service}", "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2, bad.stderr
    assert "log.levl: unknown key (did you mean log.level?)" in bad.stderr
    _assert_no_secret(bad.stdout + bad.stderr)
    cfg.write_text(_config_with_secrets())
    good = subprocess.run(
        [sys.executable, "-m", f"supie_{service}", "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "configuration ok" in good.stdout
