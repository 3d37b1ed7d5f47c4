"""Supie webhook dispatcher: signed, retried, durable delivery of finalized meetings (SPEC §6).

Replicas share one durable JetStream pull consumer of ``meeting.finalized``; each event is POSTed
to every configured endpoint, retried on the configured backoff schedule, and acknowledged only
after its outcome is recorded (delivered marker or dead-letter entry in Redis).
"""

__all__: list[str] = []
