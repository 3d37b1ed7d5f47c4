"""Webhook signatures and the receiver helper (supie_common.webhooks), request body and config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import pytest
from supie_common.contracts import MeetingFinalized, Summary
from supie_common.settings import ConfigError, load_settings
from supie_common.webhooks import (
    WebhookVerificationError,
    compact_json,
    sign_headers,
    verify,
)
from supie_webhook.config import WebhookSettings
from supie_webhook.request import endpoint_host, endpoint_label, webhook_body, webhook_id

SECRET = "s3cr3t-for-tests"
BODY = compact_json({"sessionId": "m1", "deviceId": "aa:bb", "summary": {"title": "会议"}})


def test_headers_carry_both_signatures_computed_independently() -> None:
    ts = int(time.time())
    h = sign_headers(BODY, [SECRET], "msg_1", ts)
    assert h["Content-Type"] == "application/json; charset=utf-8"
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"] == str(ts)
    # Recompute from the definitions, not through the module under test.
    hexd = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert h["X-Meeting-Signature"] == f"sha256={hexd}"
    std = hmac.new(SECRET.encode(), f"msg_1.{ts}.".encode() + BODY, hashlib.sha256).digest()
    assert h["webhook-signature"] == "v1," + base64.b64encode(std).decode()
    assert verify(BODY, h, SECRET, scheme="both") == json.loads(BODY)


@pytest.mark.parametrize("scheme", ["any", "both", "standard", "meeting"])
def test_tampered_body_or_wrong_secret_is_rejected(scheme: str) -> None:
    h = sign_headers(BODY, [SECRET], "msg_2")
    with pytest.raises(WebhookVerificationError):
        verify(BODY.replace(b"m1", b"m2"), h, SECRET, scheme=scheme)  # type: ignore[arg-type]
    with pytest.raises(WebhookVerificationError):
        verify(BODY, h, "other-secret", scheme=scheme)  # type: ignore[arg-type]


@pytest.mark.parametrize("skew_s", [-301, 301, -3600])
def test_timestamps_more_than_five_minutes_away_are_rejected(skew_s: int) -> None:
    now = time.time()
    h = sign_headers(BODY, [SECRET], "msg_3", int(now) + skew_s)
    with pytest.raises(WebhookVerificationError, match="webhook-timestamp"):
        verify(BODY, h, SECRET, now=now)
    # Within the window it passes.
    h = sign_headers(BODY, [SECRET], "msg_3", int(now) - 290)
    verify(BODY, h, SECRET, now=now)


def test_replayed_signature_under_a_new_timestamp_fails() -> None:
    old = sign_headers(BODY, [SECRET], "msg_4", int(time.time()) - 3600)
    replay = dict(old, **{"webhook-timestamp": str(int(time.time()))})
    with pytest.raises(WebhookVerificationError, match="no webhook-signature entry matches"):
        verify(BODY, replay, SECRET)


def test_rotation_signs_with_every_secret_and_receivers_accept_either() -> None:
    h = sign_headers(BODY, ["new-secret", "old-secret"], "msg_5")
    assert len(h["webhook-signature"].split(" ")) == 2
    verify(BODY, h, "old-secret", scheme="standard")  # a receiver not yet updated
    verify(BODY, h, "new-secret", scheme="both")
    # A receiver holding both of its own secrets accepts a sender on either one.
    verify(BODY, sign_headers(BODY, ["old-secret"], "msg_6"), ["new-secret", "old-secret"])


def test_missing_headers_are_named_and_header_case_is_ignored() -> None:
    h = sign_headers(BODY, [SECRET], "msg_7")
    upper = {k.upper(): v for k, v in h.items()}
    verify(BODY, upper, SECRET, scheme="both")
    no_std = {k: v for k, v in h.items() if not k.startswith("webhook-signature")}
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(BODY, no_std, SECRET, scheme="standard")
    with pytest.raises(WebhookVerificationError, match="X-Meeting-Signature"):
        verify(
            BODY, {k: v for k, v in h.items() if k != "X-Meeting-Signature"}, SECRET, scheme="both"
        )


def test_whsec_secrets_use_their_decoded_bytes() -> None:
    raw = b"\x00\x01binary-key"
    secret = "whsec_" + base64.b64encode(raw).decode()
    h = sign_headers(BODY, [secret], "msg_8", 1_700_000_000)
    std = hmac.new(raw, b"msg_8.1700000000." + BODY, hashlib.sha256).digest()
    assert h["webhook-signature"] == "v1," + base64.b64encode(std).decode()
    verify(BODY, h, secret, now=1_700_000_000, scheme="both")


def test_unsigned_when_no_secret() -> None:
    h = sign_headers(BODY, [], "msg_9")
    assert "X-Meeting-Signature" not in h and "webhook-signature" not in h
    with pytest.raises(WebhookVerificationError):
        verify(BODY, h, SECRET)


def test_body_is_compact_utf8_with_exactly_the_five_fields() -> None:
    event = MeetingFinalized(
        event_id="e1",
        session_id="m1",
        device_id="aa:bb",
        summary=Summary(title="周会", duration="00:01:01", bullets=["一", "two"]),
        metrics={"segmentsCount": 3},
        duration_ms=61000,
        started_at=1,
        ended_at=2,
    )
    body = webhook_body(event)
    assert json.loads(body) == {
        "sessionId": "m1",
        "deviceId": "aa:bb",
        "summary": {
            "title": "周会",
            "duration": "00:01:01",
            "bullets": ["一", "two"],
            "decisions": [],
            "actions": [],
            "risks": [],
            "nextSteps": [],
        },
        "metrics": {"segmentsCount": 3},
        "durationMs": 61000,
    }
    assert b" " not in body and "周会".encode() in body


def test_webhook_id_is_stable_per_event_and_endpoint() -> None:
    assert webhook_id("e1", "http://a/") == webhook_id("e1", "http://a/")
    assert webhook_id("e1", "http://a/") != webhook_id("e1", "http://b/")
    assert webhook_id("e1", "http://a/") != webhook_id("e2", "http://a/")


def test_log_labels_drop_credentials_and_queries() -> None:
    url = "https://user:pw@hooks.example.com:8443/in?token=abc"
    assert endpoint_host(url) == "hooks.example.com:8443"
    assert endpoint_label(url) == "https://hooks.example.com:8443/in"


def test_config_parses_env_schedule_and_rejects_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("SUPIE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SUPIE_CONFIG", "/nonexistent/config.yaml")
    s = load_settings(WebhookSettings)
    assert s.webhook.retry_schedule_s == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    monkeypatch.setenv("SUPIE_WEBHOOK__RETRY_SCHEDULE_S", "[0, 2, 10]")
    monkeypatch.setenv("SUPIE_MEETING__WEBHOOK__URL", "http://127.0.0.1:1/hook")
    s = load_settings(WebhookSettings)
    assert s.webhook.retry_schedule_s == [0, 2, 10]
    assert s.meeting.webhook.timeout_s == 5.0
    monkeypatch.setenv("SUPIE_WEBHOOK__RETRY_SCHEDULE_S", "[0, -5]")
    with pytest.raises(ConfigError, match="webhook.retry_schedule_s"):
        load_settings(WebhookSettings)
    monkeypatch.setenv("SUPIE_WEBHOOK__RETRY_SCHEDULE_S", "[0, 5]")
    monkeypatch.setenv("SUPIE_MEETING__WEBHOOK__URL", "ftp://x")
    with pytest.raises(ConfigError, match="meeting.webhook.url"):
        load_settings(WebhookSettings)
