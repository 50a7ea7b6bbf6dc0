"""orders-api: a framework-free ASGI service whose only runtime dependency is uvicorn.

Endpoints (GET or HEAD):
  /healthz  liveness: 200 while the process serves requests at all
  /readyz   readiness: 200 once start-up finished (and STARTUP_DELAY_SECONDS passed), 503 before
            that and while shutting down
  /         JSON with the service name, version and the machine it runs on (platform.machine())

Environment: APP_VERSION (default "dev"; the image sets it from the build), STARTUP_DELAY_SECONDS
(default 0; readiness stays 503 that long after start-up, for rollout scenarios).
Run: uvicorn app.main:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVICE = "orders-api"


class _State:
    """Process-wide readiness: set by the lifespan protocol."""

    started_at: float | None = None
    stopping: bool = False

    @classmethod
    def ready(cls) -> bool:
        if cls.started_at is None or cls.stopping:
            return False
        return time.monotonic() - cls.started_at >= _startup_delay()


def _startup_delay() -> float:
    try:
        return max(0.0, float(os.environ.get("STARTUP_DELAY_SECONDS", "0")))
    except ValueError:
        return 0.0


def version() -> str:
    return os.environ.get("APP_VERSION", "dev")


def info() -> dict[str, str]:
    """What / answers: enough to tell which build runs on which machine."""
    return {
        "service": SERVICE,
        "version": version(),
        "platform": platform.machine(),
        "python": platform.python_version(),
    }


async def _respond(send: Send, status: int, body: dict[str, Any], *, head: bool = False) -> None:
    payload = json.dumps(body, sort_keys=True).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _State.started_at = time.monotonic()
            _State.stopping = False
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _State.stopping = True
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    method = scope.get("method", "GET")
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await _respond(send, 405, {"error": "method not allowed"})
        return
    path = scope.get("path", "/")
    if path == "/healthz":
        await _respond(send, 200, {"status": "ok"}, head=head)
    elif path == "/readyz":
        if _State.ready():
            await _respond(send, 200, {"status": "ready"}, head=head)
        else:
            await _respond(send, 503, {"status": "not ready"}, head=head)
    elif path == "/":
        await _respond(send, 200, info(), head=head)
    else:
        await _respond(send, 404, {"error": "not found", "path": path}, head=head)
