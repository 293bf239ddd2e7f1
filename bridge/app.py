"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, current_app, g, jsonify, redirect, request, session, url_for
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from . import metrics
from .errors import InvalidPayloadError, MalformedBodyError, SignatureError, UnknownStoreError
from .json_depth import MAX_DEPTH, too_deep
from .logging_setup import request_id_from, request_id_var
from .runtime import Runtime, bootstrap

logger = logging.getLogger(__name__)


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with nesting deeper than ``MAX_DEPTH`` refused as bad input (a 400 or, for
    ``get_json(silent=True)``, no body); past the parser's recursion limit, rather than crashing
    the request."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if too_deep(value, text=s):
            raise ValueError(f"JSON nested too deeply (more than {MAX_DEPTH} levels)")
        return value


#: The bridge's errors that are the caller's fault, and how every endpoint answers them.
CLIENT_ERRORS: dict[type[Exception], tuple[int, str]] = {
    SignatureError: (401, "bad_signature"), UnknownStoreError: (404, "unknown_store"),
    MalformedBodyError: (400, "malformed_body"), InvalidPayloadError: (422, "invalid_payload")}

_SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                     ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"))


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for requests that carry no
    session cookie: store webhooks and UPay's callbacks never do, and they are most requests.

    A session opened by Saleor's Dashboard lives in a cross-site iframe, where browsers neither
    keep nor send a ``SameSite=Lax`` cookie, and where Chromium blocks third-party cookies
    altogether: its cookie is ``SameSite=None; Secure; Partitioned`` (CHIPS), kept in a jar of
    the Dashboard's site only. Its forms carry the session's CSRF token, as every form does."""

    def open_session(self, app: Flask, request: Any) -> SecureCookieSession | None:
        # The Cookie header is only parsed when there is one.
        if "HTTP_COOKIE" not in request.environ or \
                self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        opened = super().open_session(app, request)
        if opened is not None and opened.get("saleor_stores"):
            g.saleor_cookie = True  # kept when the session is cleared, to delete that cookie
        return opened

    @staticmethod
    def _in_saleor_frame() -> bool:
        return bool(g.get("saleor_cookie") or session.get("saleor_stores"))

    def get_cookie_samesite(self, app: Flask) -> str | None:
        return "None" if self._in_saleor_frame() else super().get_cookie_samesite(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        # Required with SameSite=None; browsers accept it over http on loopback (development).
        return True if self._in_saleor_frame() else super().get_cookie_secure(app)

    def get_cookie_partitioned(self, app: Flask) -> bool:
        return True if self._in_saleor_frame() else super().get_cookie_partitioned(app)


def create_app(runtime: Runtime | None = None, test_config: Mapping[str, Any] | None = None) -> Flask:
    runtime = runtime or bootstrap()
    app = Flask(__name__, instance_path=str(runtime.settings.data_dir))
    app.config.update(
        MAX_CONTENT_LENGTH=runtime.settings.max_body_bytes,
        # Sessions are signed with a key derived from the encryption key, so every web process
        # of a deployment agrees without another secret to distribute.
        SECRET_KEY=runtime.box.derive(b"flask-session"),
        SESSION_COOKIE_NAME="upay_bridge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=12 * 3600,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["upay_bridge"] = runtime
    app.json = _JSONProvider(app)
    app.session_interface = _SessionInterface()
    app.extensions["upay_bridge_metrics"] = metrics.for_runtime(runtime)

    @app.before_request
    def _request_id() -> None:
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.request_id_token = request_id_var.set(g.request_id)

    @app.teardown_request
    def _forget_request_id(exc: BaseException | None = None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_id_var.reset(token)
            except ValueError:  # set in another context (streamed response): just clear it
                request_id_var.set(None)

    from .web import health, merchant, saleor_app, upay_callbacks, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(upay_callbacks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(merchant.bp)
    app.register_blueprint(saleor_app.bp)
    app.add_url_rule("/", "index", lambda: redirect(url_for("merchant.home")))

    for cls, (status, code) in CLIENT_ERRORS.items():
        app.register_error_handler(
            cls, lambda e, status=status, code=code: error_response(status, code, str(e)))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

    public_https = runtime.settings.public_url.startswith("https://")

    @app.after_request
    def _security_headers(resp: Any) -> Any:
        # Saleor's Dashboard shows the app's pages in an iframe; everything else refuses framing.
        in_saleor = request.path.startswith("/saleor/app") or bool(session.get("saleor_stores"))
        present = {name.lower() for name, _ in resp.headers}  # one pass: a view may set its own
        for name, value in _SECURITY_HEADERS:
            if name.lower() not in present and not (in_saleor and name == "X-Frame-Options"):
                resp.headers.add(name, value)
        if "request_id" in g:
            resp.headers["X-Request-ID"] = g.request_id
        if resp.mimetype == "text/html" and "content-security-policy" not in present:
            # The Dashboard is served over https; a bridge on plain http is a developer's
            # machine, whose Dashboard may be too.
            frame_ancestors = ("'none'" if not in_saleor else "https:" if public_https
                               else "https: http:")
            resp.headers.add(
                "Content-Security-Policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                "script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                f"frame-ancestors {frame_ancestors}")
        return resp

    # Store webhooks are served in front of Flask (see bridge/web/webhooks.py for why).
    app.wsgi_app = webhooks.WebhookEndpoint(app.wsgi_app, runtime, CLIENT_ERRORS)  # type: ignore[method-assign]
    return app


def runtime() -> Runtime:
    return current_app.extensions["upay_bridge"]


def error_response(status: int, code: str, message: str) -> Any:
    if status < 500:
        # Method, path and code only: never the body or headers, which may carry secrets.
        logger.info("%s %s rejected: %d %s", request.method, request.path, status, code)
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    return resp


def http_error_code(exc: HTTPException) -> str:
    return {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.code or 500, (exc.name or "error").lower().replace(" ", "_"))


def _http_error(exc: HTTPException) -> Any:
    return error_response(exc.code or 500, http_error_code(exc), exc.description or exc.name)


def _unexpected(exc: Exception) -> Any:
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "the bridge failed to handle this request")
