"""The device protocol as pydantic models: every device -> server and server -> device message.

The xiaozhi firmware protocol (``shared/reference/xiaozhi-protocol.md``) plus the Supie extensions
(``fork-protocol.md`` §3), with the decisions of SPEC §3. The gateway parses each text frame once,
at the edge, into :data:`DeviceMessage` (a union discriminated on ``type``, with sub-unions on
``phase`` for meeting and ``event`` for workflow and coding); handlers and services receive
models, never dicts. Everything the server sends is built from an outbound model here and
serialised with :func:`to_frame`.

Inbound models ignore unknown extra fields (firmware builds differ), except tasks, whose unknown
fields are kept (the protocol says so). Field names follow the wire: snake_case where the
xiaozhi protocol has it (``session_id``, ``audio_params``), camelCase where the Supie extensions
have it (``sessionId``, ``groupKey``, ``nextSteps``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    # shared vocabulary
    "AudioParams",
    "CodingLevel",
    "DEVICE_MESSAGE_TYPES",
    "DeviceMessage",
    "ErrorCode",
    "ListenMode",
    "ListenState",
    "Mode",
    "ModeState",
    "TaskStatus",
    "describe_validation_error",
    "to_frame",
    # device -> server
    "Abort",
    "CodingClear",
    "CodingLog",
    "CodingMessage",
    "CodingPhase",
    "CodingStart",
    "CodingStep",
    "CodingStop",
    "FirmwareChatter",
    "Goodbye",
    "Hello",
    "LegacyConfigUpdate",
    "Listen",
    "MeetingFinalize",
    "MeetingMessage",
    "MeetingSnippet",
    "ModeRequest",
    "Ping",
    "ServerContent",
    "ServerRequest",
    "SnippetItem",
    "TaskPatch",
    "WorkflowAssign",
    "WorkflowComplete",
    "WorkflowDelete",
    "WorkflowList",
    "WorkflowMessage",
    "WorkflowUpdate",
    # server -> device
    "AudioTranscription",
    "CodingAck",
    "CodingError",
    "CodingInsight",
    "ConfigUpdateNoop",
    "ErrorMessage",
    "HelloReply",
    "ListenCommand",
    "LlmEmotion",
    "MeetingCommandNotice",
    "MeetingError",
    "MeetingFinalizeAck",
    "MeetingSnippetAck",
    "MeetingSummaryMessage",
    "MeetingTranscriptPush",
    "ModeAck",
    "ModeError",
    "Pong",
    "SERVER_MESSAGES",
    "ServerReply",
    "Stt",
    "SystemMessage",
    "Task",
    "TranscriptItem",
    "Tts",
    "WorkflowAck",
    "WorkflowCommandNotice",
    "WorkflowError",
    "WorkflowSnapshot",
    "validate_server_message",
]


class ErrorCode(StrEnum):
    """Codes of every error the server answers a device with (``code`` on the wire)."""

    BAD_JSON = "BAD_JSON"  # not JSON, not an object, or nested deeper than the limit
    SCHEMA_INVALID = "SCHEMA_INVALID"  # valid JSON, wrong shape: ``field`` names what
    UNKNOWN_TYPE = "UNKNOWN_TYPE"  # ``type`` is not a protocol message type
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"  # above server.max_frame_bytes
    BAD_FRAME = "BAD_FRAME"  # a binary frame that does not match its protocol version
    HELLO_REQUIRED = "HELLO_REQUIRED"  # audio before the hello
    BAD_AUDIO = "BAD_AUDIO"  # audio that cannot be decoded (reported by asr, rate limited)
    RATE_LIMITED = "RATE_LIMITED"  # too many messages of a kind per second
    NO_ACTIVE_MEETING = "NO_ACTIVE_MEETING"  # a meeting message without an active meeting
    NOT_FOUND = "NOT_FOUND"  # an id (task, meeting) that does not exist
    UNAVAILABLE = "UNAVAILABLE"  # no replica of the owning service accepted it in time
    FORBIDDEN = "FORBIDDEN"  # a secret or permission check failed
    NOT_SUPPORTED = "NOT_SUPPORTED"  # a valid request this server does not carry out


Mode = Literal["meeting", "working", "coding"]
ModeState = Literal["start", "end"]
ListenState = Literal["start", "stop", "detect"]
ListenMode = Literal["auto", "manual", "realtime"]
TaskStatus = Literal["open", "done"]
CodingLevel = Literal["info", "warn", "error", "note"]

# -- reusable field types -----------------------------------------------------------------------

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
ShortId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]


def _priority(value: Any) -> int:
    # bool is an int subclass in Python; a badge sending true/1.0/"1" is a bug worth naming.
    if type(value) is not int or not 0 <= value <= 3:
        raise PydanticCustomError("priority", "must be an integer 0..3")
    return value


Priority = Annotated[int, BeforeValidator(_priority)]


def _coding_level(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        return {"warning": "warn", "err": "error", "fatal": "error", "debug": "info"}.get(
            value, value
        )
    return value


class _In(BaseModel):
    """Device -> server: unknown extra fields are ignored, names accepted in either spelling."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Out(BaseModel):
    """Server -> device."""

    model_config = ConfigDict(populate_by_name=True)


class AudioParams(BaseModel):
    """``audio_params`` of a hello (both directions)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["opus", "pcm"] = "opus"
    sample_rate: int = Field(default=16000, ge=8000, le=48000)
    channels: int = Field(default=1, ge=1, le=2)
    frame_duration: int = Field(default=60, ge=10, le=120)


# ================================================================================================
# device -> server
# ================================================================================================


class Hello(_In):
    type: Literal["hello"]
    version: int | None = None
    transport: str | None = None
    audio_params: AudioParams | None = None
    features: dict[str, JsonValue] | None = None


class Listen(_In):
    type: Literal["listen"]
    state: ListenState
    mode: ListenMode | None = None
    text: str | None = Field(default=None, description="typed text / wake word (state detect)")


class Abort(_In):
    type: Literal["abort"]
    reason: str | None = None


class ModeRequest(_In):
    type: Literal["mode"]
    state: ModeState
    mode: Mode


class Ping(_In):
    """JSON ping; the bare text frames ``ping`` / ``keepalive`` mean the same."""

    type: Literal["ping", "keepalive"]


class ServerContent(_In):
    secret: SecretStr | None = None


class ServerRequest(_In):
    type: Literal["server"]
    action: Literal["update_config", "restart"]
    content: ServerContent | None = None
    secret: SecretStr | None = Field(default=None, description="older clients put it here")

    def given_secret(self) -> str | None:
        secret = (self.content.secret if self.content else None) or self.secret
        return secret.get_secret_value() if secret is not None else None


class LegacyConfigUpdate(_In):
    """Accepted and ignored (a test-page artefact): only its keys are logged."""

    type: Literal["config_update"]
    config: dict[str, JsonValue] | None = None


class Goodbye(_In):
    type: Literal["goodbye"]
    session_id: str | None = None


class FirmwareChatter(_In):
    """Firmware messages accepted without a reply."""

    type: Literal["mcp", "iot"]


# -- meeting ------------------------------------------------------------------------------------


class SnippetItem(_In):
    tag: NonEmpty
    text: NonEmpty
    speaker_id: str | None = Field(default=None, alias="speakerId", max_length=64)


class MeetingSnippet(_In):
    type: Literal["meeting"]
    phase: Literal["snippet"]
    items: list[SnippetItem] = Field(min_length=1, max_length=50)


class MeetingFinalize(_In):
    type: Literal["meeting"]
    phase: Literal["finalize"]


MeetingMessage = Annotated[MeetingSnippet | MeetingFinalize, Field(discriminator="phase")]

# -- workflow -----------------------------------------------------------------------------------


class TaskPatch(BaseModel):
    """A field-level upsert of a task: only ``id`` is required; unknown fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: ShortId
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    priority: Priority | None = None
    status: TaskStatus | None = None
    group_key: Label | None = Field(default=None, alias="groupKey")
    owner: Label | None = None


class _WorkflowIn(_In):
    type: Literal["workflow"]
    request_id: ShortId | None = Field(
        default=None, alias="requestId", description="idempotency key: applied once within 24 h"
    )


class WorkflowUpdate(_WorkflowIn):
    event: Literal["update"]
    tasks: list[TaskPatch] = Field(default_factory=list, max_length=200)
    group_key: Label | None = Field(default=None, alias="groupKey")


class WorkflowList(_WorkflowIn):
    event: Literal["list"]
    group_key: Label | None = Field(default=None, alias="groupKey")


class WorkflowComplete(_WorkflowIn):
    event: Literal["complete"]
    ids: list[ShortId] = Field(min_length=1, max_length=200)


class WorkflowDelete(_WorkflowIn):
    event: Literal["delete"]
    ids: list[ShortId] = Field(min_length=1, max_length=200)


class WorkflowAssign(_WorkflowIn):
    event: Literal["assign"]
    id: ShortId
    owner: Label | None = None


WorkflowMessage = Annotated[
    WorkflowUpdate | WorkflowList | WorkflowComplete | WorkflowDelete | WorkflowAssign,
    Field(discriminator="event"),
]

# -- coding -------------------------------------------------------------------------------------


class _CodingIn(_In):
    type: Literal["coding"]


class CodingStart(_CodingIn):
    event: Literal["start"]


class CodingStop(_CodingIn):
    event: Literal["stop"]


class CodingClear(_CodingIn):
    event: Literal["clear"]


class CodingPhase(_CodingIn):
    """The firmware's inbound field name is ambiguous: ``phase`` or ``name`` both work."""

    event: Literal["phase"]
    phase: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CodingPhase:
        if not (self.phase or self.name):
            raise PydanticCustomError("phase", "phase: required (a non-empty string; or name)")
        return self

    @property
    def value(self) -> str:
        return self.phase or self.name or ""


class CodingLog(_CodingIn):
    event: Literal["log"]
    level: Annotated[CodingLevel, BeforeValidator(_coding_level)] = "info"
    text: NonEmpty


class CodingStep(_CodingIn):
    event: Literal["step"]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    status: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None


CodingMessage = Annotated[
    CodingStart | CodingStop | CodingClear | CodingPhase | CodingLog | CodingStep,
    Field(discriminator="event"),
]

# -- the union ----------------------------------------------------------------------------------

DeviceMessage = Annotated[
    Hello
    | Listen
    | Abort
    | ModeRequest
    | Ping
    | ServerRequest
    | LegacyConfigUpdate
    | Goodbye
    | FirmwareChatter
    | MeetingMessage
    | WorkflowMessage
    | CodingMessage,
    Field(discriminator="type"),
]
"""Any device -> server JSON message, discriminated on ``type``."""

DEVICE_MESSAGE_TYPES = frozenset(
    {
        "hello",
        "listen",
        "abort",
        "mode",
        "ping",
        "keepalive",
        "server",
        "config_update",
        "goodbye",
        "mcp",
        "iot",
        "meeting",
        "workflow",
        "coding",
    }
)

# ================================================================================================
# server -> device
# ================================================================================================


class HelloReply(_Out):
    type: Literal["hello"] = "hello"
    version: int = 1
    transport: Literal["websocket"] = "websocket"
    session_id: str
    audio_params: AudioParams


class Pong(_Out):
    type: Literal["pong"] = "pong"
    timestamp: int | None = None


class Stt(_Out):
    type: Literal["stt"] = "stt"
    text: str
    session_id: str | None = None
    partial: bool | None = None
    intent: str | None = None
    target_mode: Mode | None = None


class LlmEmotion(_Out):
    type: Literal["llm"] = "llm"
    emotion: str
    text: str
    session_id: str | None = None


class Tts(_Out):
    type: Literal["tts"] = "tts"
    state: Literal["start", "stop", "sentence_start", "sentence_end"]
    text: str | None = None
    session_id: str | None = None


class AudioTranscription(_Out):
    """Pushed after every ASR utterance."""

    type: Literal["audio"] = "audio"
    event: Literal["transcription"] = "transcription"
    text: str
    ts: int
    session_id: str | None = None


class SystemMessage(_Out):
    """Takeover notices, idle warnings; ``event:"keepalive"`` is the app-level keepalive that
    firmware ignores (it has no handler for ``system``) but counts as an incoming message."""

    type: Literal["system"] = "system"
    message: str | None = None
    event: Literal["idle_close", "timeout_warning", "keepalive", "takeover"] | None = None


class ErrorMessage(_Out):
    """The gateway's own errors (anything not owned by a mode service)."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = None


class ModeAck(_Out):
    type: Literal["mode"] = "mode"
    status: Literal["ok"] = "ok"
    state: ModeState
    mode: Mode
    session_id: str | None = Field(default=None, alias="sessionId", description="meeting id")


class ModeError(_Out):
    type: Literal["mode"] = "mode"
    status: Literal["error"] = "error"
    code: ErrorCode = ErrorCode.SCHEMA_INVALID
    message: str
    field: str | None = None


class ListenCommand(_Out):
    """Sent on mode start(working): the badge should capture in manual mode."""

    type: Literal["listen"] = "listen"
    state: Literal["start", "stop"] = "start"
    mode: ListenMode = "manual"


class ServerReply(_Out):
    type: Literal["server"] = "server"
    status: Literal["success", "error"]
    message: str
    code: ErrorCode | None = None
    field: str | None = None
    content: dict[str, str] | None = None


class ConfigUpdateNoop(_Out):
    type: Literal["config_update"] = "config_update"
    status: Literal["ok"] = "ok"
    noop: Literal[True] = True


# -- meeting ------------------------------------------------------------------------------------


class TranscriptItem(_Out):
    """A transcript line as the firmware reads it."""

    ts: int
    text: str
    speaker_id: str | None = Field(default=None, alias="speakerId")
    tag: str | None = None


class MeetingSnippetAck(_Out):
    type: Literal["meeting"] = "meeting"
    status: Literal["ok"] = "ok"
    phase: Literal["snippet"] = "snippet"
    session_id: str = Field(alias="sessionId")
    accepted: int = 0
    duplicates: int | None = None
    dropped: int | None = None
    ignored: bool | None = None
    reason: str | None = None


class MeetingFinalizeAck(_Out):
    type: Literal["meeting"] = "meeting"
    phase: Literal["finalize"] = "finalize"
    session_id: str = Field(alias="sessionId")
    started_at: int = Field(alias="startedAt")
    pending_count: int = Field(alias="pendingCount")
    idempotent: bool | None = None


class MeetingTranscriptPush(_Out):
    type: Literal["meeting"] = "meeting"
    phase: Literal["transcript"] = "transcript"
    session_id: str = Field(alias="sessionId")
    items: list[TranscriptItem]
    total_segments: int = Field(alias="totalSegments")
    final: bool | None = None
    resumed: bool | None = None
    truncated: bool | None = Field(default=None, description="items were cut to fit one message")


class MeetingSummaryMessage(_Out):
    type: Literal["meeting"] = "meeting"
    phase: Literal["summary"] = "summary"
    session_id: str = Field(alias="sessionId")
    title: str
    duration: str
    bullets: list[str]
    decisions: list[str]
    actions: list[str]
    risks: list[str]
    next_steps: list[str] = Field(alias="nextSteps")
    checkpoint: bool = False
    bullets_length: int = Field(alias="bulletsLength")
    source_segments: int = Field(alias="sourceSegments")
    idempotent: bool | None = None
    redelivered: bool | None = None


class MeetingCommandNotice(_Out):
    """A spoken or typed command, announced before it acts."""

    type: Literal["meeting"] = "meeting"
    event: Literal["command"] = "command"
    intent: Literal["finalize", "mode_switch"]
    text: str | None = None
    target_mode: Mode | None = Field(default=None, alias="targetMode")
    session_id: str | None = Field(default=None, alias="sessionId")


class MeetingError(_Out):
    type: Literal["meeting"] = "meeting"
    status: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = None
    phase: str | None = None


# -- workflow -----------------------------------------------------------------------------------


class Task(BaseModel):
    """A task as stored and as badges see it. Unknown extra fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    title: str = ""
    priority: Priority = 2
    status: TaskStatus = "open"
    group_key: str = Field(alias="groupKey")
    owner: str | None = None
    created_at: int = Field(default=0, alias="createdAt")
    updated_at: int = Field(default=0, alias="updatedAt")


class WorkflowSnapshot(_Out):
    """A group's whole task list (possibly empty: a group whose last task went still gets one)."""

    type: Literal["workflow"] = "workflow"
    event: Literal["update"] = "update"
    tasks: list[Task]
    group_key: str | None = Field(default=None, alias="groupKey")


class WorkflowAck(_Out):
    type: Literal["workflow"] = "workflow"
    status: Literal["ok"] = "ok"
    event: str
    idempotent: bool | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    ids: list[str] | None = None
    groups: list[str] | None = None


class WorkflowCommandNotice(_Out):
    type: Literal["workflow"] = "workflow"
    event: Literal["command"] = "command"
    intent: Literal["assign", "complete", "refresh"]
    ordinal: int | None = None
    task_id: str | None = Field(default=None, alias="taskId")
    text: str | None = None


class WorkflowError(_Out):
    type: Literal["workflow"] = "workflow"
    status: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = None
    event: str | None = None
    request_id: str | None = Field(default=None, alias="requestId")


# -- coding -------------------------------------------------------------------------------------


class CodingAck(_Out):
    type: Literal["coding"] = "coding"
    status: Literal["ok"] = "ok"
    event: str


class CodingInsight(_Out):
    type: Literal["coding"] = "coding"
    event: Literal["insight", "summary"]
    phase: str
    insights: list[str] = Field(max_length=5)
    risks: list[str] = Field(max_length=4)
    actions: list[str] = Field(max_length=6)
    next_steps: list[str] = Field(alias="nextSteps", max_length=6)
    from_: str | None = Field(default=None, alias="from", description="sender, when broadcast")


class CodingError(_Out):
    type: Literal["coding"] = "coding"
    status: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = None
    event: str | None = None


SERVER_MESSAGES: tuple[type[BaseModel], ...] = (
    HelloReply,
    Pong,
    Stt,
    LlmEmotion,
    Tts,
    AudioTranscription,
    SystemMessage,
    ErrorMessage,
    ModeAck,
    ModeError,
    ListenCommand,
    ServerReply,
    ConfigUpdateNoop,
    MeetingSnippetAck,
    MeetingFinalizeAck,
    MeetingTranscriptPush,
    MeetingSummaryMessage,
    MeetingCommandNotice,
    MeetingError,
    WorkflowSnapshot,
    WorkflowAck,
    WorkflowCommandNotice,
    WorkflowError,
    CodingAck,
    CodingInsight,
    CodingError,
)
"""Every model the server may send; documented in ``docs/protocol.md`` (checked by a test)."""


def _discriminators(model: type[BaseModel]) -> tuple[str, ...]:
    """The literal values that tell this outbound model apart: (type, status|phase|event...)."""
    out = []
    for name in ("type", "status", "phase", "event"):
        field = model.model_fields.get(name)
        if field is None or field.default is None or not isinstance(field.default, str):
            out.append("")
            continue
        # ``event`` free-form on acks: only type + status count there
        out.append(field.default if field.annotation is not str else "")
    return tuple(out)


def validate_server_message(message: dict[str, Any]) -> BaseModel:
    """Validate one server -> device message (as sent) against the model it claims to be.

    Raises ``ValueError`` when no documented model matches: every frame the server sends must.
    """
    errors: list[str] = []
    for model in SERVER_MESSAGES:
        keys = _discriminators(model)
        wanted = dict(zip(("type", "status", "phase", "event"), keys, strict=True))
        if any(v and message.get(k) != v for k, v in wanted.items()):
            continue
        try:
            return model.model_validate(message)
        except ValidationError as exc:
            errors.append(f"{model.__name__}: {describe_validation_error(exc)}")
    raise ValueError(f"no server message model matches {message!r}: {errors or 'none tried'}")


def to_frame(message: BaseModel) -> str:
    """The JSON text frame for a server -> device model (compact, UTF-8, no null fields)."""
    return message.model_dump_json(by_alias=True, exclude_none=True)


# -- validation errors in words a badge developer understands -----------------------------------

_MESSAGES: dict[str, str] = {
    "missing": "required",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected an array",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "extra_forbidden": "unknown field",
    "union_tag_not_found": "required",
    "string_unicode": "expected valid Unicode text",
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_SERVICE_TYPES = frozenset({"meeting", "workflow", "coding"})


def _strip_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the member names pydantic puts in front of errors from :data:`DeviceMessage`: the
    ``type`` value, and the ``phase``/``event`` value under the service types."""
    if loc and loc[0] in DEVICE_MESSAGE_TYPES:
        nested = loc[0] in _SERVICE_TYPES
        loc = loc[1:]
        if nested and loc and isinstance(loc[0], str):
            loc = loc[1:]
    return loc


def _friendly(err: Any) -> str:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype in _MESSAGES:
        return _MESSAGES[etype]
    if etype == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}"
    if etype == "union_tag_invalid":
        return f"expected one of {ctx.get('expected_tags', '')}"
    if etype == "string_too_short":
        n = ctx.get("min_length", 1)
        return "expected a non-empty string" if n == 1 else f"expected at least {n} characters"
    if etype == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters"
    if etype == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s)"
    if etype == "too_long":
        return f"expected at most {ctx.get('max_length')} items"
    if etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        sign = {
            "greater_than_equal": ">=",
            "less_than_equal": "<=",
            "greater_than": ">",
            "less_than": "<",
        }[etype]
        bound = next(iter(ctx.values()), "")
        return f"expected a number {sign} {bound}"
    return str(err.get("msg", "invalid value"))


def describe_validation_error(
    exc: ValidationError, *, device_union: bool = False
) -> tuple[str | None, str]:
    """``(field, message)`` for the first problem, e.g. ``("tasks[0].priority",
    "tasks[0].priority: must be an integer 0..3")``. Input values are never quoted (they may be
    large or secret). ``device_union``: the error came from validating :data:`DeviceMessage`."""
    errs = exc.errors(include_url=False, include_input=False)
    if not errs:
        return None, "invalid message"
    first = errs[0]
    loc = tuple(first["loc"])
    if device_union:
        loc = _strip_union_tags(loc)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str((first.get("ctx") or {}).get("discriminator", "")).strip("'")
        loc = (*loc, discriminator) if discriminator else loc
    field = _path(loc) or None
    message = _friendly(first)
    if field and message.startswith(f"{field}: "):  # custom errors that name their field
        return field, message
    if field is None and ": " in message and first["type"] not in _MESSAGES:
        field = message.split(": ", 1)[0]  # e.g. the coding phase check, raised on the model
        return field, message
    return field, f"{field}: {message}" if field else message
