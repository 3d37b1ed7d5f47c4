"""The OpenAI-compatible chat completion every service asks (meeting summaries, coding insights,
working-mode intents): one ``httpx.AsyncClient`` per provider alias, reused until the provider's
settings change or :meth:`ChatClients.clear` (a config reload: SPEC §9), and one error type that
says what went wrong without any secret (no key, no URL, no body).

An LLM is always optional: callers catch :class:`LlmError` and fall back to their local result.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .settings import LlmProvider

__all__ = ["ChatClients", "LlmError", "parse_json_object"]


class LlmError(RuntimeError):
    """The LLM call failed, timed out or returned something unusable."""


def parse_json_object(text: str) -> dict[str, Any]:
    """Strict JSON first; else the outermost ``{...}`` (models like to wrap JSON in prose)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise LlmError("no JSON object in the reply") from None
        try:
            value = json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise LlmError(f"reply is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise LlmError(f"expected a JSON object, got {type(value).__name__}")
    return value


class ChatClients:
    """Cached clients per provider alias; ``transport`` lets tests answer as a fake LLM."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._clients: dict[str, tuple[LlmProvider, httpx.AsyncClient]] = {}
        self._transport = transport

    async def _client(self, alias: str, provider: LlmProvider) -> httpx.AsyncClient:
        cached = self._clients.get(alias)
        if cached is not None and cached[0] == provider:
            return cached[1]
        headers = {"Content-Type": "application/json"}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
        client = httpx.AsyncClient(
            base_url=provider.base_url.rstrip("/"), headers=headers, transport=self._transport
        )
        self._clients[alias] = (provider, client)
        if cached is not None:
            await cached[1].aclose()
        return client

    async def clear(self) -> int:
        """Drop every cached client; how many there were."""
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.aclose()
        return len(clients)

    async def chat(
        self,
        alias: str,
        provider: LlmProvider,
        system: str,
        prompt: str,
        *,
        max_tokens: int,
        timeout_s: float,
        temperature: float | None = None,
    ) -> str:
        """The completion's text, or :class:`LlmError` (never an httpx error)."""
        client = await self._client(alias, provider)
        body = {
            "model": provider.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "temperature": provider.temperature if temperature is None else temperature,
            "max_tokens": max_tokens,
        }
        try:
            resp = await client.post("/chat/completions", json=body, timeout=timeout_s)
        except httpx.TimeoutException:
            raise LlmError(f"timed out after {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise LlmError(f"request failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise LlmError(f"HTTP {resp.status_code}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LlmError("reply is not an OpenAI chat completion") from None
        if not isinstance(content, str):
            raise LlmError("completion content is not text")
        return content
