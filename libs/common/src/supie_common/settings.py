"""Configuration: one YAML file plus ``SUPIE_<SECTION>__<KEY>`` environment overrides.

Section models live here so every service validates the same keys the same way; each service
composes the sections it needs into its own settings class (a :class:`SupieSettings` subclass)
and loads it once at its entry point with :func:`load_settings`.
"""

from __future__ import annotations

import contextvars
import difflib
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "KNOWN_SECTIONS",
    "ArchiveSection",
    "CodingSection",
    "ConfigError",
    "DispatcherSection",
    "Section",
    "WorkflowSection",
    "pick_language",
    "secret_value",
    "NatsSection",
    "RedisSection",
    "LogSection",
    "AuthSection",
    "ServerSection",
    "LlmProvider",
    "LlmByMode",
    "AsrSection",
    "WebhookEndpoint",
    "WebhookSection",
    "MeetingSection",
    "SupieSettings",
    "load_settings",
    "config_path_from_env",
    "clamp",
]

S = TypeVar("S", bound="SupieSettings")

_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_yaml_path", default=None)


# Every top-level key of the config file, across all services: a service validates the sections
# it reads and skips the others, but a key no service knows is refused (a typo, most likely).
KNOWN_SECTIONS = (
    "data_dir",
    "nats",
    "redis",
    "log",
    "llm",
    "llm_by_mode",
    "server",
    "asr",
    "meeting",
    "webhook",
    "workflow",
    "coding",
    "console",
    "services",
)


class Section(BaseModel):
    """A config section: unknown keys are refused (``ws_prot: 9000`` must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


def secret_value(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret (for the one place that uses it, never for logs)."""
    return secret.get_secret_value() if secret is not None else None


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


class NatsSection(Section):
    url: str | None = Field(
        default=None,
        description="external NATS (a cluster: comma-separated seed URLs); None = embedded",
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="replicas of Supie's JetStream streams (3 on a cluster)"
    )
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 5.0
    max_outage_s: float = Field(
        default=60.0, gt=0, description="disconnected longer than this: the process exits 1"
    )


class RedisSection(Section):
    url: str | None = Field(default=None, description="external Redis; None = embedded Valkey")
    max_outage_s: float = Field(
        default=60.0, gt=0, description="unreachable longer than this: the process exits 1"
    )


class LogSection(Section):
    level: str = "INFO"
    max_message_length: int = Field(default=2000, ge=100)
    json_lines: bool = False
    file: str | None = None

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return v


class AuthSection(Section):
    enabled: bool = False
    tokens: list[SecretStr] = Field(default_factory=list, description="static bearer tokens")
    auth_key: SecretStr | None = Field(default=None, description="HMAC key for <sig>.<ts> tokens")
    ota_activation_secret: SecretStr | None = Field(
        default=None,
        description="with auth on, OTA mints a token only for allowed devices or requests that "
        "carry this secret (header Activation-Secret)",
    )
    expire_seconds: int = 30 * 24 * 3600
    allowed_devices: list[str] = Field(default_factory=list)

    @field_validator("allowed_devices")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().strip("'\"").lower() for d in v]


class ServerSection(Section):
    ip: str = "0.0.0.0"
    ws_port: int = Field(default=8004, ge=0, le=65535)
    http_port: int = Field(default=8003, ge=0, le=65535)
    websocket: str | None = Field(default=None, description="ws URL advertised by OTA")
    advertise_ip: str | None = None
    api_token: SecretStr | None = Field(default=None, description="token for the HTTP API")
    api_rate_limit: float = Field(default=10.0, description="requests/s per client; 0 disables")
    api_rate_burst: int = 20
    secret: SecretStr | None = Field(default=None, description="secret for device update_config")
    max_frame_bytes: int = Field(default=64 * 1024, ge=256)
    max_json_depth: int = Field(default=32, ge=2, le=256, description="deeper JSON is refused")
    max_device_id_len: int = Field(
        default=64, ge=8, le=256, description="longer Device-Id / Client-Id: 400 at the handshake"
    )
    http_max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger bodies: 413")
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="a client slower than this to send its request is cut off"
    )
    http_keepalive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections")
    accept_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="how long the gateway retries handing a device message to its service "
        "before the badge gets an UNAVAILABLE error",
    )
    ping_interval_s: float | None = Field(
        default=20.0, description="WebSocket pings; null disables them (app-level ping still works)"
    )
    ping_timeout_s: float = 50.0
    app_keepalive_s: float = Field(
        default=60.0,
        ge=0,
        description="send a harmless system keepalive when nothing went to the badge this long "
        "(firmware drops its channel after 120 s without an incoming message); 0 disables",
    )
    close_timeout_s: float = 5.0
    takeover_close_delay_s: float = 1.5
    presence_ttl_s: int = 30
    listen_debounce_ms: int = 300
    close_connection_no_voice_time: float = Field(
        default=600, gt=0, description="no-voice close threshold, s"
    )
    idle_close_grace_seconds: float = Field(default=15, description="warning lead, clamped 5..30")
    idle_mode_multiplier: float = Field(default=3.0, ge=1, description="x in meeting/working")
    hard_close_extra_s: float = Field(default=60.0, ge=0, description="hard close after threshold+")
    hard_close_wait_s: float = Field(default=10.0, ge=0, description="wait after timeout_warning")
    idle_check_interval_s: float = Field(default=1.0, gt=0)
    config_watch_interval_s: float = Field(default=2.0, ge=0, description="0 = no file watch")
    drain_timeout_s: float = Field(default=5.0, ge=0, description="SIGTERM: flush before close")

    def no_voice_threshold_s(self, mode: str | None) -> float:
        """Layer-1 threshold: ``close_connection_no_voice_time``, x3 in meeting/working modes."""
        base = self.close_connection_no_voice_time
        return base * self.idle_mode_multiplier if mode in ("meeting", "working") else base

    def idle_grace_s(self, threshold_s: float) -> float:
        """Warning lead: clamped to 5..30 s, and never more than half the threshold (so scaled-
        down thresholds in tests still warn before they close)."""
        return min(float(clamp(int(self.idle_close_grace_seconds), 5, 30)), threshold_s / 2)

    firmware_version: str = "1.0.0"
    firmware_url: str = ""
    timezone_offset: int = 8
    auth: AuthSection = Field(default_factory=AuthSection)


class LlmProvider(Section):
    base_url: str
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    timeout_s: float = 20.0
    max_tokens: int = 800
    temperature: float = 0.2


class LlmByMode(Section):
    default: str | None = None
    meeting: str | None = None
    coding: str | None = None
    working: str | None = None
    intent: str | None = None

    def alias_for(self, purpose: str) -> str | None:
        return getattr(self, purpose, None) or self.default


class AsrSection(Section):
    engine: str = "faster-whisper"
    model: str = Field(
        default="tiny.en",
        description="model of English streams: tiny.en (bundled), base (bundled multilingual), "
        "any faster-whisper name or a directory",
    )
    language: str = Field(
        default="en", description="default stream language: en, zh, ... or auto (detect)"
    )
    device_languages: dict[str, str] = Field(
        default_factory=dict,
        description="device id or id prefix -> language; the longest matching prefix wins",
    )
    auto_languages: list[str] = Field(
        default_factory=lambda: ["zh", "en"],
        min_length=1,
        description="what 'auto' may detect (robotic or noisy audio must not come out as Thai)",
    )
    multilingual_model: str | None = Field(
        default="base",
        validate_default=True,
        description="model of every other language and of auto; None = English only",
    )
    models_dir: Path | None = Field(
        default=None, description="where bundled models are unpacked; None = <data_dir>/models"
    )
    chinese_script: Literal["simplified", "traditional"] = "simplified"
    initial_prompts: dict[str, str] = Field(
        default_factory=lambda: {"zh": "以下是普通话的句子。"},
        description="language -> text whisper is primed with (style and script of the output)",
    )
    condition_on_previous_text: bool = Field(
        default=True, description="prime each utterance with the stream's previous finals"
    )
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        min_length=1,
        description="decoding temperatures tried in turn while a result fails the checks below",
    )
    compression_ratio_threshold: float = Field(default=2.4, gt=1)
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = Field(
        default=0.6, gt=0, le=1, description="no speech when above this and log_prob too low"
    )
    no_speech_alone_threshold: float = Field(
        default=0.9, gt=0, le=1, description="no speech when above this, however probable"
    )
    compute_type: str = "int8"
    cpu_threads: int = 2
    num_workers: int = 1
    beam_size: int = Field(default=1, ge=1, description="beam of an English-only model")
    multilingual_beam_size: int = Field(
        default=5, ge=1, description="beam of a multilingual model (greedy loops on Mandarin)"
    )
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_silence_ms: int = Field(default=500, ge=50)
    speech_pad_ms: int = Field(default=100, ge=0)
    min_speech_ms: int = Field(default=250, ge=0)
    max_utterance_s: float = Field(default=30.0, gt=1)
    partials: bool = False
    decode_ahead: bool = Field(
        default=True,
        description="decode an utterance once its audio is in, while the end-of-speech silence "
        "is still being waited out (its final comes ~200 ms sooner; a pause that turns out "
        "shorter wastes that decode)",
    )
    partial_interval_ms: int = 1000
    heartbeat_ms: int = 500
    max_buffer_s: float = Field(default=60.0, gt=1, description="per-stream backlog before drops")
    batch_max: int = Field(default=8, ge=1, description="utterances batched per inference call")
    decode_margin_ms: int = Field(
        default=200, ge=0, description="extra audio either side of an utterance given to whisper"
    )
    min_context_s: float = Field(
        default=10.0,
        ge=3.0,
        le=30.0,
        description="shortest encoder window; whisper pads to 30 s, shorter is faster",
    )
    heartbeat_timeout_ms: int = Field(
        default=2000, ge=200, description="gateway re-opens a stream after this without heartbeat"
    )
    replay_s: float = Field(
        default=10.0, ge=0, description="gateway keeps unacknowledged audio this long for re-open"
    )
    stream_idle_s: float = Field(
        default=600.0, gt=0, description="asr releases a stream with no audio or control this long"
    )
    stall_flush_ms: int = Field(
        default=1500,
        ge=100,
        description="an open utterance is finalized when no audio arrives for this long",
    )
    error_events_per_s: float = Field(default=1.0, gt=0, description="rate limit of error events")

    @field_validator("model", mode="before")
    @classmethod
    def _model_default(cls, v: Any) -> Any:
        return "tiny.en" if v is None else v  # older configs: null meant the bundled model

    @field_validator("language", mode="before")
    @classmethod
    def _language_default(cls, v: Any) -> Any:
        return "auto" if v is None else v  # older configs: null meant detect

    @field_validator("language")
    @classmethod
    def _language_code(cls, v: str) -> str:
        return AsrSection._check_language(v, allow_auto=True)

    @field_validator("device_languages")
    @classmethod
    def _device_language_codes(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for device, lang in v.items():
            try:
                out[device.lower()] = AsrSection._check_language(lang, allow_auto=True)
            except ValueError as exc:
                raise ValueError(f"{device}: {exc}") from None
        return out

    @field_validator("auto_languages")
    @classmethod
    def _auto_language_codes(cls, v: list[str]) -> list[str]:
        return [AsrSection._check_language(lang, allow_auto=False) for lang in v]

    @field_validator("multilingual_model")
    @classmethod
    def _languages_have_a_model(cls, v: str | None, info: Any) -> str | None:
        """Any non-English language needs a multilingual model: refuse at start otherwise."""
        model = info.data.get("model", "tiny.en")
        if v is not None or not AsrSection.english_only_name(model):
            return v
        wanted = {"default (asr.language)": info.data.get("language", "en")}
        for device, lang in (info.data.get("device_languages") or {}).items():
            wanted[f"asr.device_languages[{device!r}]"] = lang
        bad = {where: lang for where, lang in wanted.items() if lang != "en"}
        if bad:
            where = ", ".join(f"{lang!r} for {w}" for w, lang in bad.items())
            raise ValueError(
                f"{where} needs a multilingual model, but asr.model={model!r} is English-only "
                "and asr.multilingual_model is null: set asr.multilingual_model (e.g. 'base') "
                "or use language 'en'"
            )
        return v

    @staticmethod
    def _check_language(v: str, *, allow_auto: bool) -> str:
        code = v.strip().lower()
        if code == "auto" and allow_auto:
            return code
        if not (2 <= len(code) <= 3 and code.isascii() and code.isalpha()) and code != "haw":
            expected = "a language code (en, zh, ...)" + (" or 'auto'" if allow_auto else "")
            raise ValueError(f"expected {expected}, got {v!r}")
        return code

    @staticmethod
    def english_only_name(model: str) -> bool:
        """Whether a model name is an English-only whisper (``tiny.en``, ``small.en``, ...)."""
        return model.rstrip("/").endswith(".en")

    def language_for(self, device_id: str) -> str:
        """The language of a device's streams (see :func:`pick_language`). May be ``auto``."""
        return pick_language(self.device_languages, self.language, device_id)


def pick_language(device_languages: dict[str, str], default: str, device_id: str) -> str:
    """``device_languages`` (lower-case keys: an exact id, else the longest matching id prefix),
    else ``default``."""
    key = device_id.lower()
    if key in device_languages:
        return device_languages[key]
    best = ""
    for prefix in device_languages:
        if key.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return device_languages[best] if best else default


class WebhookEndpoint(Section):
    url: str
    secret: SecretStr | None = Field(default=None, description="None = requests are not signed")
    previous_secrets: list[SecretStr] = Field(
        default_factory=list, description="rotation: also sign with these (webhook-signature)"
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra request headers (values may be credentials)"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return v

    def signing_secrets(self) -> list[str]:
        """Current secret first, then the previous ones (empty: unsigned)."""
        if self.secret is None:
            return []
        return [s.get_secret_value() for s in (self.secret, *self.previous_secrets)]

    def header_values(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.headers.items()}


class WebhookSection(Section):
    """``meeting.webhook``: where finalized meetings are delivered, and how they are signed."""

    url: str | None = None
    secret: SecretStr | None = None
    previous_secrets: list[SecretStr] = Field(
        default_factory=list, description="rotation: also sign"
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    timeout_s: float = Field(default=5.0, gt=0, description="per attempt, whole request")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return v or None

    def all_endpoints(self) -> list[WebhookEndpoint]:
        eps = list(self.endpoints)
        if self.url:
            eps.insert(
                0,
                WebhookEndpoint(
                    url=self.url,
                    secret=self.secret,
                    previous_secrets=list(self.previous_secrets),
                    headers=self.headers,
                ),
            )
        return eps


class DispatcherSection(Section):
    """Top-level ``webhook``: the dispatcher's internals (services/webhook)."""

    durable: str = Field(default="webhook", description="JetStream consumer shared by replicas")
    start_from: Literal["all", "new"] = Field(
        default="all", description="where a newly created consumer starts in the events stream"
    )
    concurrency: int = Field(default=32, ge=1, description="events delivered at once per replica")
    ack_wait_s: float = Field(default=30.0, ge=1, description="redelivery if a replica goes silent")
    dead_letter_key: str = Field(default="supie:webhook:dead", description="Redis hash")
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="delay before each attempt (Standard Webhooks / Svix schedule); then the "
        "dead letter",
    )

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or any(d < 0 for d in v):
            raise ValueError("expected a non-empty list of delays in seconds, each >= 0")
        return v


class ArchiveSection(Section):
    """``meeting.archive``: where finalized meetings are kept."""

    backend: Literal["files", "nats"] = Field(
        default="files",
        description="files: <data_dir>/meetings (one host); nats: JetStream Object Store + KV "
        "(shared by every replica on every host)",
    )
    bucket: str = Field(default="supie_meetings", description="nats backend: bucket prefix")
    replicas: int = Field(default=1, ge=1, le=5, description="nats backend: stream replicas")


class MeetingSection(Section):
    disable_tts: bool = True
    prefer_device_vad: bool = True
    transcript_push_interval_ms: int = 5000
    checkpoint_interval_min: float = 10
    min_duration_ms: int = 5000
    manual_listen_fallback_ms: int = 5000
    snippet_max_bytes: int = 2048
    snippets_per_second: int = 10
    dedup_window_s: int = 60
    max_pending: int = 200
    lease_ms: int = 3000
    retention: int = 100
    summary_transcript_max_chars: int = 4000
    llm_max_tokens: int = Field(default=800, description="summary max_tokens, clamped 256..4000")
    checkpoint_max_tokens: int = Field(default=400, description="checkpoint summary max_tokens")
    llm_timeout_s: float | None = Field(default=None, gt=0, description="None = provider's")
    finalize_lock_ms: int = Field(
        default=3000,
        ge=500,
        description="finalize lock TTL, renewed every third of it: a dead generation is taken "
        "over this fast",
    )
    scan_interval_ms: int = Field(default=1000, ge=100, description="lease / stuck-finalize scan")
    state_ttl_s: int = Field(default=86400, ge=60, description="Redis state kept after finalize")
    orphan_sweep_min_age_s: int = Field(default=600, ge=0, description="unindexed file age")
    archive_empty: bool = Field(
        default=False, description="archive (and send the webhook of) meetings with no content"
    )
    abandon_after_s: float = Field(
        default=600, gt=0, description="a meeting whose device is gone this long is finalized"
    )
    finalize_per_minute: int = Field(
        default=10, ge=1, description="finalize requests accepted per device per minute"
    )
    finalize_repeat_window_s: float = Field(
        default=300,
        ge=0,
        description="a finalize from a device whose meeting was finalized this recently gets "
        "that meeting's ACK and summary again (idempotent: a retry after a lost ACK); 0 = off",
    )
    summary_deadline_s: float = Field(
        default=30.0, gt=0, description="an LLM summary slower than this falls back to local"
    )
    checkpoint_deadline_s: float = Field(
        default=10.0, gt=0, description="an LLM checkpoint slower than this falls back to local"
    )
    redeliver_summary_s: float = Field(
        default=3600,
        ge=0,
        description="a summary that never reached the badge is resent on "
        "reconnect within this window",
    )
    archive: ArchiveSection = Field(default_factory=ArchiveSection)
    webhook: WebhookSection = Field(default_factory=WebhookSection)

    @property
    def push_interval_ms(self) -> int:
        return clamp(self.transcript_push_interval_ms, 3000, 15000)

    @property
    def max_tokens(self) -> int:
        return clamp(self.llm_max_tokens, 256, 4000)


class WorkflowSection(Section):
    """``workflow``: working mode's shared task lists (SPEC §7)."""

    device_groups: dict[str, str] = Field(
        default_factory=dict, description="device id -> group key (default: device id[:8])"
    )
    device_alias: dict[str, str] = Field(
        default_factory=dict, description="device id -> owner name used by assign"
    )
    snapshot_debounce_ms: int = Field(default=1500, ge=0)
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60, description="requestId memory")
    max_tasks_per_group: int = Field(default=500, ge=1)

    def group_of(self, device_id: str) -> str:
        """The device's group: configured, else the first 8 characters of its id."""
        return self.device_groups.get(device_id) or device_id[:8]

    def alias_of(self, device_id: str) -> str:
        return self.device_alias.get(device_id) or device_id


class CodingSection(Section):
    """``coding``: build/test logs turned into insights (SPEC §8)."""

    insight_enabled: bool = True
    insight_debounce_ms: int = Field(default=1200, description="clamped >= 300")
    per_message_max_len: int = Field(default=512, ge=32)
    history_max_lines: int = Field(default=200, ge=10)
    insight_max_chars: int = Field(default=1600, ge=200)
    insight_max_items: int = Field(default=5, ge=1)
    summary_max_items: int = Field(default=6, ge=1)
    llm_timeout_s: float = Field(default=8.0, gt=0)

    @property
    def debounce_ms(self) -> int:
        return max(300, self.insight_debounce_ms)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by the loader (or ``SUPIE_CONFIG``)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _yaml_path.get()
        self._data: dict[str, Any] = {}
        if path is not None and path.exists():
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of sections at the top level")
            unknown = [str(k) for k in loaded if k not in KNOWN_SECTIONS]
            if unknown:
                raise ConfigError(
                    f"{path}: " + "; ".join(_unknown_key(k, KNOWN_SECTIONS) for k in unknown)
                )
            self._data = loaded

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class SupieSettings(BaseSettings):
    """Sections every service needs. Services subclass it to add their own sections."""

    # Top-level keys are checked against KNOWN_SECTIONS by the file source (a service skips the
    # sections of other services); inside a section, unknown keys are errors (Section).
    model_config = SettingsConfigDict(
        env_prefix="SUPIE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Path("./data")
    nats: NatsSection = Field(default_factory=NatsSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    log: LogSection = Field(default_factory=LogSection)
    llm: dict[str, LlmProvider] = Field(default_factory=dict)
    llm_by_mode: LlmByMode = Field(default_factory=LlmByMode)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def config_path_from_env() -> Path:
    return Path(os.environ.get("SUPIE_CONFIG", "config.yaml"))


def _unknown_key(key: str, known: tuple[str, ...] | list[str], prefix: str = "") -> str:
    hint = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    where = f"{prefix}{key}"
    return f"{where}: unknown key" + (f" (did you mean {prefix}{hint[0]}?)" if hint else "")


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the section a config error points into (for "did you mean")."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _format_errors(err: ValidationError, model: type[BaseModel]) -> str:
    """One line per bad key: where and why. Never the input value: it may be a secret."""
    lines = []
    for e in err.errors(include_url=False, include_input=False):
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden" and loc:
            parent = ".".join(str(p) for p in loc[:-1])
            lines.append(
                _unknown_key(
                    str(loc[-1]), _fields_at(model, loc[:-1]), f"{parent}." if parent else ""
                )
            )
        else:
            lines.append(f"{key}: {e['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(cls: type[S], path: str | Path | None = None, **overrides: Any) -> S:
    """Build ``cls`` from defaults < YAML file < environment < ``overrides``.

    Raises :class:`ConfigError` naming each invalid key (``section.key: why``).
    """
    token = _yaml_path.set(Path(path) if path is not None else config_path_from_env())
    try:
        return cls(**overrides)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, cls)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file is not valid YAML: {err}") from None
    finally:
        _yaml_path.reset(token)
