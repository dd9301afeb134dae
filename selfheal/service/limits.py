"""Request body limits, enforced while the body streams in (chunked or with a Content-Length alike).

A declared Content-Length above the limit is refused before a byte is read; otherwise the bytes are counted as
the application receives them and the request is refused as soon as the count passes the limit, so the service
never holds more than the limit plus one chunk. The 413 closes the connection: the rest is never read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so that FastAPI's body parsing lets it through to the handler."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)
        self.message = message


def too_large(message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "message": message}, status_code=413, headers={"Connection": "close"})


async def body_too_large(_request: Any, exc: Exception) -> JSONResponse:
    """The exception handler for BodyTooLarge raised while an endpoint reads its body."""
    return too_large(exc.message if isinstance(exc, BodyTooLarge) else str(exc))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimitMiddleware:
    """Pure ASGI middleware: `limit(path)` is the largest body, in bytes, a request to `path` may have."""

    def __init__(self, app: ASGIApp, limit: Callable[[str], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await too_large(f"request body of {declared} bytes exceeds {limit}")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body exceeds {limit} bytes (refused after reading {seen})")
            return message

        await self.app(scope, counted, send)
