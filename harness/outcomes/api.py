"""API access for watches: bounded retries, a clear error when the cluster is gone, resumable watch streams."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import Watch
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from harness import signals
from harness.errors import ClusterGone, HarnessError
from harness.outcomes.model import (
    Obj,
    _get,
    _one_line,
    _str,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# API access: bounded retries, and a clear error when the cluster is gone

_CONNECTION_ERRORS: Final = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return bool(exc.status == 0)
    return isinstance(exc, _CONNECTION_ERRORS)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status == 0 or status == 429 or status >= 500
    return isinstance(exc, _CONNECTION_ERRORS)


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    root: BaseException = exc
    while True:
        nxt = getattr(root, "reason", None)
        if isinstance(nxt, BaseException) and nxt is not root:
            root = nxt
            continue
        if root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__
            continue
        break
    text = str(root) or type(root).__name__
    if "Connection refused" in text or isinstance(root, ConnectionRefusedError):
        return "connection refused"
    return _one_line(text, 120)


class _Api:
    """Calls with bounded retries of flaky failures; ClusterGone when the server stops answering."""

    def __init__(self, host: str, gone_after: float, attempts: int = 6) -> None:
        self.host = host
        self.gone_after = gone_after
        self.attempts = attempts

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def give_up(state: RetryCallState) -> bool:
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            if exc is not None and _is_connection_error(exc):
                return stop_after_delay(self.gone_after)(state)
            return stop_after_attempt(self.attempts)(state)

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=give_up,
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except ApiException as exc:
            if _is_connection_error(exc):
                raise self._gone(what, exc) from exc
            raise HarnessError(
                f"{what} failed: {_short_error(exc)}",
                "check the cluster with 'kubectl get --raw /readyz' using the harness kubeconfig, then run again",
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise self._gone(what, exc) from exc

    def _gone(self, what: str, exc: BaseException) -> ClusterGone:
        return ClusterGone(
            f"the Kubernetes API server at {self.host} stopped answering ({_short_error(exc)}, "
            f"for more than {self.gone_after:.0f} s) while {what}",
            "check the kind node container with 'docker ps -a --filter label=io.x-k8s.kind.cluster'; "
            "if it stopped, delete the cluster with 'kind delete cluster --name <name>' and run again",
        )

    def list(self, what: str, fn: Callable[..., Any], namespace: str, **kwargs: Any) -> tuple[list[Obj], str]:
        """List as raw JSON (no model round trip); returns the items and the list's resourceVersion."""
        resp = self.call(what, fn, namespace, _preload_content=False, _request_timeout=(5, 20), **kwargs)
        body = json.loads(_response_bytes(resp) or b"{}")
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, _str(_get(body, "metadata", "resourceVersion"))


def _response_bytes(resp: Any) -> bytes:
    data = getattr(resp, "data", b"")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else b""


def _host(api: Any) -> str:
    """The server URL of a CoreV1Api/AppsV1Api, for error messages."""
    configuration = getattr(getattr(api, "api_client", None), "configuration", None)
    host = getattr(configuration, "host", "")
    return host if isinstance(host, str) and host else "the kubeconfig's server"


def _new_watch() -> Any:
    """kubernetes.watch.Watch, typed loosely: its methods carry no annotations in any client version."""
    factory: Any = Watch
    return factory()


class _Stream:
    """A resumable watch: yields (type, object) and ("RELIST", items) after a 410 Gone or a lost connection."""

    def __init__(
        self,
        api: _Api,
        what: str,
        list_fn: Callable[..., Any],
        namespace: str,
        resource_version: str,
        deadline: float,
        stop: threading.Event,
        **selectors: str,
    ) -> None:
        self.api = api
        self.what = what
        self.list_fn = list_fn
        self.namespace = namespace
        self.resource_version = resource_version
        self.deadline = deadline
        self.stop = stop
        self.selectors = selectors
        self._watch: Any = None

    def close(self) -> None:
        """End the stream now: mark it stopped and close its HTTP response, so no read stays blocked."""
        self.stop.set()
        watch = self._watch
        if watch is None:
            return
        resp = getattr(watch, "_resp", None)  # the response Watch.stream is reading (None between requests)
        watch.stop()
        if resp is not None:
            _close_response(resp)

    def _relist(self) -> tuple[str, Any]:
        items, rv = self.api.list(self.what, self.list_fn, self.namespace, **self.selectors)
        self.resource_version = rv
        return "RELIST", items

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while not self.stop.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return
            server_timeout = max(1, min(int(remaining) + 1, 300))
            self._watch = watch = _new_watch()
            opened, received = time.monotonic(), 0
            try:
                stream = watch.stream(
                    self.list_fn,
                    self.namespace,
                    resource_version=self.resource_version or None,
                    timeout_seconds=server_timeout,
                    allow_watch_bookmarks=True,
                    _request_timeout=(10, server_timeout + 15),
                    **self.selectors,
                )
                for event in stream:
                    if self.stop.is_set():
                        return
                    kind = _str(event.get("type"))
                    raw = event.get("raw_object")
                    if isinstance(raw, dict):
                        rv = _str(_get(raw, "metadata", "resourceVersion"))
                        if rv:
                            self.resource_version = rv
                    if kind == "BOOKMARK" or not isinstance(raw, dict):
                        continue
                    received += 1
                    yield kind, raw
            except ApiException as exc:
                if self.stop.is_set():
                    return
                if exc.status != 410 and not _is_transient(exc):
                    raise HarnessError(
                        f"{self.what} failed: {_short_error(exc)}",
                        "check that the kubeconfig's user may list and watch this resource",
                    ) from exc
                yield self._relist()
                continue
            except (*_CONNECTION_ERRORS, OSError, ValueError):
                # ValueError: reading a socket that stop() shut down; OSError: connection reset.
                if self.stop.is_set():
                    return
                yield self._relist()
                continue
            if received == 0 and time.monotonic() - opened < 1.0:
                # The server closed the watch at once: pause a little (bounded) instead of spinning.
                self.stop.wait(min(1.0, max(0.0, self.deadline - time.monotonic())))


def _close_response(resp: Any) -> None:
    """Shut the response's socket down (wakes a thread blocked in a TLS read), then close the response.

    Both steps tolerate a response that is already closed or was never connected.
    """
    connection = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the server or by the reader
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, ValueError, AttributeError):  # a half-torn connection: nothing to release
        resp.close()


@dataclass(frozen=True)
class _Message:
    source: str
    kind: str
    payload: Any


def _pump(stream: _Stream, out: queue.Queue[_Message]) -> None:
    signals.leave_to_main_thread()  # a signal must reach the main thread, not a thread blocked in a read
    try:
        for kind, payload in stream:
            out.put(_Message(stream.what, kind, payload))
    except Exception as exc:  # noqa: BLE001 - HarnessError, or a bug: either way the caller must see it
        out.put(_Message(stream.what, "FAILED", exc))
