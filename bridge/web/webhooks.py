"""Store webhooks: verify, record, answer 200. Invoices are made by workers, never here.

The POST endpoints are a plain WSGI app in front of Flask (``WebhookEndpoint``), not views of
it. They are most of the bridge's traffic in a burst, and Flask's per-request machinery (its
contexts, request and response objects, the session, the hooks) cost more CPU than the
delivery's own work (``bench/intake_ceiling.py``: 0.31 of a bare endpoint's throughput through
Flask, 0.52 without it). The endpoint answers the way the Flask app would: the same JSON
errors (``app.CLIENT_ERRORS``), the same headers and request id, the same log lines. Any other
method on these paths still goes to Flask (``wrong_method``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Mapping

from flask import Blueprint, jsonify, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from ..errors import SignatureError, StoreError, UnknownStoreError
from ..logging_setup import request_id_from, request_id_var
from ..registry import StoreRecord
from ..runtime import Runtime
from ..stores import adapter_for

logger = logging.getLogger(__name__)
# The lines the Flask app's error handlers write ("rejected", "unexpected error") under its name.
app_logger = logging.getLogger("bridge.app")

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

PREFIX = "/webhooks/"

Answer = tuple[int, dict[str, Any]]


def receive(rt: Runtime, record: StoreRecord, headers: Mapping[str, str], body: bytes,
            remote_addr: str | None = None) -> Answer:
    """One delivery to ``record``'s webhook: the status and JSON answer. Raises the bridge's
    client errors (``SignatureError``, ``MalformedBodyError``, ``InvalidPayloadError``), which
    the caller answers from ``CLIENT_ERRORS``; nothing is recorded when it raises."""
    store = adapter_for(record)
    if store.is_ping(headers, body):
        # WooCommerce activates the webhook only on exactly 200 (woocommerce.md §1.5).
        return 200, {"ok": True, "ping": True}
    try:
        store.verify_webhook(headers, body)
    except SignatureError:
        logger.warning("webhook for store %s rejected: bad signature", record.id,
                       extra={"store_id": record.id, "remote_addr": remote_addr})
        raise
    except StoreError as exc:
        # A signature by a key the bridge has not seen, and the store's key set (JWKS) could
        # not be fetched to check it. Nothing is recorded; the store delivers again later.
        logger.warning("webhook for store %s not checked: %s", record.id, exc,
                       extra={"store_id": record.id})
        return 503, _error("signing_keys_unavailable",
                           "the store's signing keys could not be fetched; try again later")
    refreshed = getattr(store, "refreshed_jwks", None)
    if refreshed:  # the store rotated its signing key: keep the new JWKS
        rt.registry.update(record.id, secrets={"jwks": json.dumps(refreshed)})
    event = store.parse_webhook(headers, body)
    if event.order is None:
        rt.pipeline.record_ignored(record, event, body)
        return 200, {"ok": True, "ignored": event.topic or "no topic"}
    accepted = rt.pipeline.accept(record, event, body)
    result: dict[str, Any] = {"ok": True, "order": accepted.outcome}
    if accepted.reason:
        result["reason"] = accepted.reason
    return 200, result


def find_store(rt: Runtime, path: str, headers: Mapping[str, str]) -> StoreRecord | None:
    """The store a POST to ``path`` is for; None for a path that is not a webhook URL."""
    parts = path[len(PREFIX):].split("/")
    if parts == ["saleor"]:
        # Every Saleor store posts to the manifest's one target URL; Saleor-Api-Url says which.
        api_url = headers.get("Saleor-Api-Url", "")
        record = rt.registry.find_by_url("saleor", api_url) if api_url else None
        if record is None:
            raise UnknownStoreError("no Saleor store is registered for this Saleor-Api-Url")
        return record
    if len(parts) != 2 or not all(parts):
        return None
    kind, store_id = parts
    record = rt.registry.find(store_id[:32])
    if record is None or record.kind != kind:
        raise UnknownStoreError(f"no {kind} store with id {store_id[:32]!r}")
    return record


class WebhookEndpoint:
    """WSGI middleware: POSTs under ``/webhooks/`` are handled here, everything else by
    ``app`` (the Flask app's ``wsgi_app``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], rt: Runtime,
                 client_errors: Mapping[type[Exception], tuple[int, str]]) -> None:
        self.app = app
        self.rt = rt
        self.client_errors = tuple(client_errors.items())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        # As werkzeug reads them: the method upper-cased (its development server passes it as
        # sent), the path's WSGI (latin-1) string as UTF-8, an invalid byte replaced.
        if environ.get("REQUEST_METHOD", "").upper() != "POST" or not path.startswith(PREFIX):
            return self.app(environ, start_response)
        if not path.isascii():
            path = path.encode("latin-1").decode("utf-8", "replace")
        headers = _Headers(environ)
        request_id = request_id_from(headers.get("X-Request-ID"))
        token = request_id_var.set(request_id)
        try:
            answer = self._handle(environ, path, headers)
            if answer is None:  # not a webhook URL: Flask's 404
                return self.app(environ, start_response)
            status, payload = answer
            if status >= 400 and status < 500:
                # Method, path and code only: never the body or headers, which may carry secrets.
                app_logger.info("POST %s rejected: %d %s", path, status,
                                payload["error"]["code"])
        finally:
            request_id_var.reset(token)
        out = _encode(payload)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown').upper()}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(out))),
            *_SECURITY_HEADERS, ("X-Request-ID", request_id), ("Vary", "Cookie")])
        return [out]

    def _handle(self, environ: dict[str, Any], path: str, headers: EnvironHeaders
                ) -> Answer | None:
        try:
            record = find_store(self.rt, path, headers)
            if record is None:
                return None
            limit = self.rt.settings.max_body_bytes
            body = _read_body(environ, limit)
            if body is None:
                return 413, _error("body_too_large", RequestEntityTooLarge.description)
            return receive(self.rt, record, headers, body, environ.get("REMOTE_ADDR"))
        except HTTPException as exc:  # werkzeug's, reading the body (a client gone: 400)
            from ..app import http_error_code

            return exc.code or 500, _error(http_error_code(exc), exc.description or exc.name)
        except Exception as exc:  # noqa: BLE001 - every failure is a JSON answer, never a crash
            for cls, (status, code) in self.client_errors:
                if isinstance(exc, cls):
                    return status, _error(code, str(exc))
            app_logger.exception("unexpected error")
            return 500, _error("internal_error", "the bridge failed to handle this request")


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes."""
    if "wsgi.input_terminated" in environ:
        # The server has read the whole body (waitress: Content-Length or chunked) and ends
        # the stream there, so it is read directly: what werkzeug's LimitedStream would return,
        # without its wrapper, which cost more than the read on every delivery of a burst.
        # An announced length past the limit is refused unread, as werkzeug does; a chunked
        # body's is not read from the header (and what is not plain digits, the read decides).
        length = environ.get("CONTENT_LENGTH")
        if length and length.isascii() and length.isdigit() and int(length) > limit and \
                environ.get("HTTP_TRANSFER_ENCODING") != "chunked":
            return None
        stream, most = environ["wsgi.input"], limit + 1
        body = stream.read(most)
        while len(body) < most:  # a stream may hand its body over in pieces
            more = stream.read(most - len(body))
            if not more:
                break
            body += more
        return body if len(body) <= limit else None
    try:
        # werkzeug's own reading: Content-Length, or a body the server marks as terminated
        # (chunked). One byte past the limit is let in, so that a chunked body over it is
        # refused rather than silently cut at the limit.
        body = get_input_stream(environ, max_content_length=limit + 1).read()
    except RequestEntityTooLarge:
        return None
    return body if len(body) <= limit else None


class _Headers(EnvironHeaders):
    """werkzeug's headers of a WSGI environ, with each header name's environ key kept: a
    delivery reads five headers, and werkzeug works the key out anew on every read (``get``,
    ``in`` and ``[]`` all come to ``_get_key``)."""

    _keys: dict[str, str] = {}

    def _get_key(self, key: str) -> str:
        environ_key = self._keys.get(key) if type(key) is str else None
        if environ_key is None:
            if not isinstance(key, str):
                return super()._get_key(key)
            environ_key = key.upper().replace("-", "_")
            if environ_key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ_key = "HTTP_" + environ_key
            if len(self._keys) < 256:  # only the names the bridge reads come here
                self._keys[key] = environ_key
        return self.environ[environ_key]  # type: ignore[no-any-return]


# The answers to nearly every delivery of a burst ({"ok": true, "order": "queued"} and the
# like), encoded once per outcome.
_ENCODED: dict[str, bytes] = {}


def _encode(payload: dict[str, Any]) -> bytes:
    """As Flask's jsonify writes it: sorted keys, no spaces, a final newline."""
    outcome = payload.get("order")
    common = len(payload) == 2 and payload.get("ok") is True and type(outcome) is str
    if common and outcome in _ENCODED:
        return _ENCODED[outcome]
    out = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"
    if common and len(_ENCODED) < 16:
        _ENCODED[outcome] = out
    return out


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# What the Flask app's after_request hook adds to a JSON answer (app._SECURITY_HEADERS).
_SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                     ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"))


@bp.post("/saleor")
@bp.post("/<kind>/<store_id>")
def receive_view(kind: str = "saleor", store_id: str = "") -> Any:
    """Not reached while ``WebhookEndpoint`` is in front (it answers every POST these rules
    match); the rules keep Flask's routing of these URLs as it was: POST in ``Allow``, and a
    doubled slash redirected (308) to the URL that takes it."""
    from ..app import runtime

    rt = runtime()
    record = find_store(rt, request.path, request.headers)
    if record is None:
        raise UnknownStoreError(f"no {kind} store with id {store_id[:32]!r}")
    status, payload = receive(rt, record, request.headers, request.get_data(cache=True),
                              request.remote_addr)
    return jsonify(payload), status


@bp.route("/saleor", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/<kind>/<store_id>", methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method(kind: str = "saleor", store_id: str = "") -> Any:
    from ..app import error_response

    return error_response(405, "method_not_allowed", "webhooks are delivered with POST")
