"""The console's pages and static files, served from the package (loaded once, in memory; a
changed file shows after a restart). Pages are one HTML shell; the modules route in the browser.

The files are public (the login prompt is one of them); the data behind them is not: every API
call and the live endpoint need the API token when one is set."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from supie_common.settings import secret_value

from ..auth import same_secret
from ..http.context import HttpContext

__all__ = ["CSP", "StaticFile", "console_router", "load_static"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    """Every file under ``static/``, by its path relative to it (``pages/home.js``)."""
    files: dict[str, StaticFile] = {}
    root = resources.files(__package__).joinpath("static")

    def walk(node: resources.abc.Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, f"{name}/")
                continue
            body = child.read_bytes()
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            media = _TYPES.get(suffix) or mimetypes.guess_type(child.name)[0]
            files[name] = StaticFile(
                body,
                media or "application/octet-stream",
                '"' + hashlib.sha256(body).hexdigest()[:20] + '"',
            )

    walk(root, "")
    return files


def _serve(req: Request, item: StaticFile) -> Response:
    headers = {
        "ETag": item.etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if req.headers.get("if-none-match") == item.etag:
        return Response(status_code=304, headers=headers)
    return Response(item.body, media_type=item.media_type, headers=headers)


def console_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    files = load_static()
    shell = files["index.html"]

    @router.get("")
    async def console_root() -> Response:
        return RedirectResponse("/console/", status_code=308)

    @router.get("/")
    async def console_home(req: Request) -> Response:
        return _serve(req, shell)

    @router.get("/meetings/{session_id}")
    async def console_meeting(req: Request, session_id: str) -> Response:
        return _serve(req, shell)

    @router.get("/tasks")
    async def console_tasks(req: Request) -> Response:
        return _serve(req, shell)

    @router.get("/devices")
    async def console_devices(req: Request) -> Response:
        return _serve(req, shell)

    @router.get("/static/{path:path}")
    async def console_static(req: Request, path: str) -> Response:
        item = files.get(path)
        if item is None:
            return JSONResponse({"success": False, "error": "no such file"}, status_code=404)
        return _serve(req, item)

    @router.get("/session")
    async def console_session(req: Request) -> Response:
        """Whether a token is needed and whether the one given is right: answered 200 either
        way, so the page learns it without a failed request (each shows in the browser's
        console as an error)."""
        client = req.client.host if req.client else "?"
        if not ctx.limiter.allow(client):  # no free token oracle
            return JSONResponse({"success": False, "error": "rate limit exceeded"}, status_code=429)
        token = secret_value(ctx.settings().server.api_token)
        auth = req.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        authorized = not token or same_secret(given, token)
        return JSONResponse(
            {"tokenRequired": bool(token), "authorized": authorized},
            headers={"Cache-Control": "no-store"},
        )

    return router
