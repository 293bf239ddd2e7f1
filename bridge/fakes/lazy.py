"""A WSGI slot: serve first (to learn the port), plug the real app in afterwards."""

from __future__ import annotations

from typing import Any, Callable, Iterable


class AppSlot:
    def __init__(self) -> None:
        self.app: Callable[..., Iterable[bytes]] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting"]
        return self.app(environ, start_response)
