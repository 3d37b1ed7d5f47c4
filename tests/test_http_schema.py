"""schemathesis against the gateway's own OpenAPI document (issue 9 item 8): for every
operation, generated requests never get a 5xx, and every response matches what the document
says (status code, content type, body schema, headers). A real gateway process, with stand-in
meeting and workflow API responders."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from nats.aio.msg import Msg
from schemathesis import checks
from supie_common.bus import connect_nats
from supie_common.contracts import ApiReply, Subjects
from supie_common.embedded import free_port, wait_for_port

from .conftest import ServiceProcess
from .test_gateway_support import BackgroundLoop

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


class _Responders:
    """Meeting and workflow API stand-ins: found (200), not found (404) or invalid (400)."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.calls = 0

    async def start(self) -> None:
        self.nc = await connect_nats(self.nats_url, "schema-stand-ins")
        await self.nc.subscribe(Subjects.MEETING_API, cb=self._answer)
        await self.nc.subscribe(Subjects.WORKFLOW_API, cb=self._answer)
        await self.nc.flush()

    async def _answer(self, msg: Msg) -> None:
        self.calls += 1
        reply = random.choice(
            [
                ApiReply(data={"items": [], "total": 0}),
                ApiReply(status=404, success=False, error="not found"),
                ApiReply(status=400, success=False, error="limit: expected an integer"),
            ]
        )
        await msg.respond(reply.model_dump_json(exclude_none=True).encode())

    async def stop(self) -> None:
        await self.nc.drain()


@pytest.fixture(scope="module")
def gateway_process(
    nats_server: Any, valkey_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("schema")
    http_port, ws_port = free_port(), free_port()
    cfg = tmp / "config.yaml"
    cfg.write_text(
        "services: [gateway]\n"
        "server:\n"
        f"  ip: 127.0.0.1\n  ws_port: {ws_port}\n  http_port: {http_port}\n"
        "  api_rate_limit: 0\n  config_watch_interval_s: 0\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "SUPIE_CONFIG": str(cfg),
        "SUPIE_NATS__URL": nats_server.url,
        "SUPIE_REDIS__URL": valkey_server.url,
        "SUPIE_DATA_DIR": str(tmp / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    proc = ServiceProcess("supie_gateway", env, Path(tmp / "gateway.log")).start()
    loop = BackgroundLoop()
    responders = _Responders(nats_server.url)
    try:
        wait_for_port("127.0.0.1", http_port, 60)
        loop.run(responders.start())
        yield f"http://127.0.0.1:{http_port}"
        assert responders.calls > 0
        assert "Traceback" not in proc.log(), proc.log()[-3000:]
    finally:
        loop.run(responders.stop())
        loop.close()
        proc.terminate()


def _operations(base_url: str) -> list[Any]:
    loaded = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    return [result.ok() for result in loaded.get_all_operations()]


def test_every_operation_answers_as_documented(gateway_process: str) -> None:
    # schemathesis' own pytest integration does not run on pytest 9 yet: drive hypothesis here.
    operations = _operations(gateway_process)
    labels = {op.label for op in operations}
    assert {"GET /healthz", "POST /supie/ota/", "GET /supie/workflow"} <= labels, labels
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
