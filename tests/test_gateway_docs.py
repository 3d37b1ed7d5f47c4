"""docs/protocol.md is tested against the device protocol models: every model the server may
send, every device message model, every error code and every gateway limit is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from supie_common.contracts import device as dm
from supie_common.settings import ServerSection

DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
INBOUND = [
    dm.Hello, dm.Listen, dm.Abort, dm.ModeRequest, dm.Ping, dm.ServerRequest,
    dm.LegacyConfigUpdate, dm.Goodbye, dm.FirmwareChatter, dm.MeetingSnippet, dm.MeetingFinalize,
    dm.WorkflowUpdate, dm.WorkflowList, dm.WorkflowComplete, dm.WorkflowDelete, dm.WorkflowAssign,
    dm.CodingStart, dm.CodingStop, dm.CodingClear, dm.CodingPhase, dm.CodingLog, dm.CodingStep,
]  # fmt: skip
LIMITS = [
    "max_device_id_len", "max_frame_bytes", "max_json_depth", "http_max_body_bytes",
    "http_header_timeout_s", "http_keepalive_s", "accept_timeout_s", "app_keepalive_s",
    "ping_interval_s", "api_rate_limit",
]  # fmt: skip


@pytest.mark.parametrize("model", dm.SERVER_MESSAGES, ids=lambda m: m.__name__)
def test_every_server_message_is_documented(model: type) -> None:
    assert re.search(rf"`{model.__name__}`", DOC), f"{model.__name__} missing in protocol.md"


@pytest.mark.parametrize("model", INBOUND, ids=lambda m: m.__name__)
def test_every_device_message_is_documented(model: type) -> None:
    assert f"`{model.__name__}`" in DOC


def test_the_inbound_list_is_the_whole_union() -> None:
    types = {m.model_fields["type"].annotation for m in INBOUND}
    literal_values = {v for t in types for v in t.__args__}  # type: ignore[union-attr]
    assert literal_values == set(dm.DEVICE_MESSAGE_TYPES)


@pytest.mark.parametrize("code", list(dm.ErrorCode))
def test_every_error_code_is_documented(code: dm.ErrorCode) -> None:
    assert f"`{code.value}`" in DOC


@pytest.mark.parametrize("key", LIMITS)
def test_every_limit_is_documented_with_its_default(key: str) -> None:
    default = ServerSection.model_fields[key].default
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{key}`")), "")
    assert row, key
    shown = {float: lambda v: f"{v:g}", int: str}.get(type(default), str)(default)
    assert f"| {shown} |" in row or f"| {shown} /" in row, (key, default, row)
