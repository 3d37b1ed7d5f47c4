"""NATS helpers: connect with reconnect, JetStream stream setup, typed request/reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from loguru import logger
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from .contracts import Streams, Subjects, decode, encode
from .errors import BusError, BusTimeout

__all__ = [
    "BusError",
    "BusTimeout",
    "connect_nats",
    "ensure_events_stream",
    "ensure_replicas",
    "ensure_stream",
    "ensure_transcripts_stream",
    "parse",
    "request",
]

M = TypeVar("M", bound=BaseModel)


async def connect_nats(
    url: str,
    name: str,
    *,
    connect_timeout_s: float = 5.0,
    on_closed: Callable[[], None] | None = None,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect and keep reconnecting forever; state changes are logged once each.

    ``on_closed`` runs if the connection is ever closed for good (not by our own drain/close:
    e.g. the server refused a protocol line), so the owner can exit and be restarted.
    ``on_reconnected`` runs after each reconnect: core NATS dropped whatever was published to
    our subscriptions while we were away, and the owner may have to recover it.
    """

    async def on_error(exc: Exception) -> None:
        logger.warning("nats error ({}): {}", name, exc)

    async def on_disconnected() -> None:
        logger.warning("nats disconnected ({})", name)

    async def on_reconnected_cb() -> None:
        logger.info("nats reconnected ({})", name)
        if on_reconnected is not None:
            await on_reconnected()

    async def on_closed_cb() -> None:
        if on_closed is not None:
            on_closed()

    return await nats.connect(
        servers=[u.strip() for u in url.split(",") if u.strip()],  # a cluster's seed list
        name=name,
        connect_timeout=connect_timeout_s,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected_cb,
        closed_cb=on_closed_cb,
    )


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: list[str],
    *,
    max_age_s: float = 7 * 24 * 3600,
    replicas: int = 1,
) -> None:
    """Create the stream if missing (idempotent across replicas). ``replicas`` > 1 on a NATS
    cluster (``nats.stream_replicas``), so the stream outlives the loss of its leader; an
    existing stream with fewer replicas is raised to ``replicas``."""
    try:
        await js.stream_info(name)
    except NotFoundError:
        pass
    else:
        await ensure_replicas(js, name, replicas)
        return
    config = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age_s,
        duplicate_window=120.0,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
        logger.info("jetstream stream {} created for {}", name, subjects)
    except Exception as exc:  # another replica created it between our two calls
        await js.stream_info(name)
        logger.debug("stream {} already created elsewhere: {}", name, exc)


async def ensure_replicas(js: JetStreamContext, name: str, replicas: int) -> None:
    """Raise an existing stream's replica count to ``replicas`` (never lowered: another
    replica's older setting must not shrink it). A cluster that cannot place them (fewer
    nodes) keeps the stream as it is, with a warning."""
    info = await js.stream_info(name)
    config = info.config
    if (config.num_replicas or 1) >= replicas:
        return
    config.num_replicas = replicas
    try:
        await js.update_stream(config)
    except Exception as exc:
        logger.warning("stream {}: cannot raise to {} replicas: {}", name, replicas, exc)
        return
    logger.info("stream {}: raised to {} replicas", name, replicas)


async def ensure_events_stream(js: JetStreamContext, replicas: int = 1) -> None:
    await ensure_stream(js, Streams.EVENTS, [Subjects.EVENTS_ALL], replicas=replicas)


async def ensure_transcripts_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """ASR finals and typed text on their way to the mode router: kept one hour (the router
    acks each once routed; the rest is for replays after a crash)."""
    await ensure_stream(
        js, Streams.TRANSCRIPTS, [Subjects.TRANSCRIPTS_ALL], max_age_s=3600, replicas=replicas
    )


def parse(model: type[M], msg: Msg) -> M | None:
    """Decode a bus message's payload; a malformed one is logged (which subject, what is wrong)
    and dropped, so one bad publisher disturbs nobody else."""
    try:
        return decode(model, msg.data)
    except ValidationError as exc:
        logger.warning("ignoring malformed {} on {}: {}", model.__name__, msg.subject, exc)
        return None


async def request(
    nc: NATS, subject: str, payload: BaseModel, reply_model: type[M], *, timeout: float = 5.0
) -> M:
    """Send a typed request and parse the typed reply."""
    try:
        msg = await nc.request(subject, encode(payload), timeout=timeout)
    except NoRespondersError as exc:
        raise BusError(f"no service answers {subject}") from exc
    except NatsTimeoutError as exc:
        raise BusTimeout(f"no reply on {subject} within {timeout}s") from exc
    return decode(reply_model, msg.data)
