"""Serve a WSGI app on loopback in a background thread (tests, the demo, benchmarks)."""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from werkzeug.serving import WSGIRequestHandler, make_server


class SentRequest:
    """Reading back a request a fake sent (a webhook delivery, an install call): mixed into
    dataclasses that have ``request_headers`` and ``request_body``."""

    request_headers: list[tuple[str, str]]
    request_body: bytes

    def header(self, name: str) -> str | None:
        """The value of a request header (case-insensitive), as sent."""
        for key, value in self.request_headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def payload(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.request_body)


class _QuietHandler(WSGIRequestHandler):
    # No access log: the fakes' URLs carry OAuth parameters, and tests read the logs for secrets.
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ServedApp:
    """A running loopback server; use as a context manager or call :meth:`shutdown`."""

    def __init__(self, app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0,
                 ssl_context: Any = None) -> None:
        self._server = make_server(host, port, app, threaded=True,
                                   request_handler=_QuietHandler, ssl_context=ssl_context)
        self.host = host
        self.port = self._server.server_port
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name=f"serve-{self.port}")
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ServedApp":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve_wsgi(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0,
               ssl_context: Any = None) -> ServedApp:
    return ServedApp(app, host, port, ssl_context)
