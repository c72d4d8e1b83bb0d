"""Request bodies are bounded before anything parses them.

Form parsing holds a whole body in memory, several times over for a body of many small fields, and it runs
before sign-in can refuse anyone: an unbounded POST /console/login let anonymous clients grow the process by
gigabytes. So every request gets a cap by route (FORM_BYTES unless a route asks for more): a declared
Content-Length over it is answered 413 before a byte of the body is read, and a body without one (chunked)
is cut off with 413 as soon as it grows past the cap; the rest is never parsed or kept (the server drops a
little more of it so that the client reads the 413: agent_ops/http_server.py). A client that stops sending
its body half-way gets 408, closing the connection, after `timeout` seconds without a new piece, so it
cannot hold a handler for ever.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM_BYTES = 64 * 1024
BODY_TIMEOUT = 10.0
CLOSE = {"Connection": "close"}


def too_large(limit: int) -> str:
    return f"request body too large: at most {limit} bytes here"


class BodyLimit:
    """ASGI middleware: `default` bytes per request body, or `larger[prefix]` for paths under a prefix."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: int = FORM_BYTES,
        larger: Mapping[str, int] | None = None,
        timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.default = default
        # Longest prefix first, so a more specific route wins.
        self.larger = sorted((larger or {}).items(), key=lambda item: len(item[0]), reverse=True)
        self.timeout = timeout

    def limit_for(self, scope: Scope) -> int:
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        return next((limit for prefix, limit in self.larger if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await PlainTextResponse(too_large(limit), status_code=413)(scope, receive, send)
            return

        received = 0
        complete = False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:  # only the wait for a disconnect is left, which may rightly last as long as a response
                return await receive()
            with anyio.move_on_after(self.timeout) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise HTTPException(408, f"request body not received: nothing for {self.timeout:g} s", CLOSE)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit))
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses a malformed length before the app runs
    return None
