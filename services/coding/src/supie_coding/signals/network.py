"""Network errors: name resolution, refused / reset connections, unreachable networks, TLS
certificate failures, gateways answering 502/503/504. Timeouts are :mod:`.timeouts`' job.

``code`` says which of these it is (dns, refused, reset, unreachable, tls, http-503); ``subject``
the host (and port) when the line names one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Kind, LogLine, Signal, lines_with

__all__ = ["extract"]

_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "dns",
        re.compile(
            r"Temporary failure in name resolution|Name or service not known|ENOTFOUND"
            r"|Could not resolve host|nodename nor servname|no such host|getaddrinfo failed"
            r"|Name does not resolve|EAI_AGAIN"
        ),
    ),
    ("refused", re.compile(r"[Cc]onnection refused|ECONNREFUSED")),
    ("reset", re.compile(r"[Cc]onnection reset|ECONNRESET|Broken pipe|EPIPE")),
    (
        "unreachable",
        re.compile(r"[Nn]etwork is unreachable|ENETUNREACH|No route to host|EHOSTUNREACH"),
    ),
    (
        "tls",
        re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|x509: certificate"),
    ),
    ("http", re.compile(r"\b(50[234]) (?:Bad Gateway|Service Unavailable|Gateway Time-?out)")),
)
_HOSTS = (
    re.compile(r"getaddrinfo (?:ENOTFOUND|EAI_AGAIN) ([\w.-]+)"),
    re.compile(r"Could not resolve host: ([\w.-]+)"),
    re.compile(r"lookup ([\w.-]+)(?: on \S+)?: no such host"),
    re.compile(r"connection to server at \"([^\"]+)\", port (\d+)"),
    re.compile(r"(?:ECONNREFUSED|ECONNRESET|dial tcp) \[?([\w.:-]+?)\]?:(\d+)\b"),
    re.compile(r"host='([^']+)', port=(\d+)"),
    re.compile(r"https?://([^/\s:'\"]+)(?::(\d+))?"),
)
# Every line a pattern above can match holds one of these.
_GATE = (
    *("onnect", "resol", "ENOT", "ECONN", "unreachable", "UNREACH", "route to", "ertif", "x509"),
    *("such host", "EAI_AGAIN", "EPIPE", "Broken pipe", " 502 ", " 503 ", " 504 "),
)


def _host(text: str) -> str:
    for pattern in _HOSTS:
        if m := pattern.search(text):
            port = m.group(2) if m.lastindex and m.lastindex >= 2 else None
            return f"{m.group(1)}:{port}" if port else m.group(1)
    return ""


def extract(lines: Sequence[LogLine]) -> list[Signal]:
    out: dict[tuple[str, str], Signal] = {}
    for i in lines_with(lines, _GATE):
        entry = lines[i]
        text = entry.text
        if not text or entry.kind != "log":
            continue
        if "timed out" in text or "Timeout" in text:
            continue
        for code, pattern in _KINDS:
            if m := pattern.search(text):
                if code == "http":
                    code = f"http-{m.group(1)}"
                host = _host(text)
                key = (code, host)
                if key not in out:
                    # the same failure without a host adds nothing once a host is known
                    if not host and any(k[0] == code for k in out):
                        break
                    out.pop((code, ""), None)
                    out[key] = Signal(Kind.NETWORK, subject=host, code=code, index=i)
                break
    return list(out.values())
