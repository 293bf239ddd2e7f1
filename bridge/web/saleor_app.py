"""The Saleor App's own endpoints: the manifest and the token target (installation).

Saleor fetches the manifest, creates the app and its webhooks, then POSTs the app token here.
Any non-2xx answer makes Saleor delete the app and show our ``error.message`` to the merchant
(saleor.md §2.1–§2.2), so every refusal says why.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

import jwt
import requests
from flask import Blueprint, jsonify, render_template_string, request, session, url_for

from ..app import runtime
from ..errors import BridgeError, ConfigError, SignatureError, StoreError
from ..manifest import manifest
from ..netguard import check_store_url
from ..registry import StoreRecord, StoreSettings, validate_store_url
from ..stores.saleor import JWKS_REFETCHES, SaleorStore
from ..stores.saleor_signature import jwks_url_for

logger = logging.getLogger(__name__)

bp = Blueprint("saleor_app", __name__, url_prefix="/saleor")


def _refuse(status: int, code: str, message: str) -> Any:
    logger.warning("Saleor install refused: %s", code)
    return jsonify({"success": False, "error": {"code": code, "message": message}}), status


@bp.get("/manifest")
def serve_manifest() -> Any:
    return jsonify(manifest(runtime().settings.public_url))


@bp.post("/register")
def register() -> Any:
    rt = runtime()
    api_url = request.headers.get("Saleor-Api-Url", "")
    if not api_url:
        return _refuse(400, "MISSING_SALEOR_API_URL", "Missing Saleor-Api-Url header.")
    allowed = rt.settings.saleor_allowed_api_urls
    if allowed and not re.fullmatch(allowed, api_url):
        return _refuse(403, "SALEOR_URL_PROHIBITED", "This Saleor is not allowed to install the app.")
    data = request.get_json(silent=True)  # an oversized body is a 413 before anything else
    try:
        # Anyone may call this endpoint: without the check, it would make the bridge post to
        # any address it can reach, its own network included.
        validate_store_url(api_url, "saleor")
        check_store_url(api_url, allow_private=rt.settings.allow_private_store_urls)
    except ConfigError as exc:
        return _refuse(403, "SALEOR_URL_PROHIBITED", f"This Saleor address is refused: {exc}")
    token = data.get("auth_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        return _refuse(400, "MISSING_AUTH_TOKEN", "Missing auth token.")
    existing = rt.registry.find_by_url("saleor", api_url)
    probe = SaleorStore(_probe_record(api_url, token))
    try:
        app_id = probe.app_id()  # the token works, and says which app we are
    except StoreError as exc:
        # What the other server said stays in the log: the caller may not be Saleor at all.
        logger.warning("Saleor install: the app token was not confirmed: %s", exc)
        return _refuse(401, "UNKNOWN_APP_ID", "Could not confirm the app token with Saleor.")
    try:
        resp = requests.get(jwks_url_for(api_url), timeout=(5, 15), allow_redirects=False)
        # Only a 200 is the key set: raise_for_status() lets a redirect (not followed) through.
        jwks = resp.json() if resp.status_code == 200 else None
    except (requests.RequestException, ValueError):
        jwks = None
    if jwks is None:
        return _refuse(401, "JWKS_NOT_AVAILABLE", "Could not fetch the store's signing keys (JWKS).")
    stored = {"app_token": token, "app_id": app_id, "jwks": json.dumps(jwks)}
    try:
        if existing is not None:  # a reinstall brings a new token and a new app id
            rt.registry.update(existing.id, secrets=stored)
            # The Dashboard sessions opened under the app that was removed end with it: their
            # token named the old app, which the session check cannot see afterwards.
            rt.accounts.end_dashboard_sessions(existing.id)
        else:
            rt.registry.add("saleor", api_url, stored, name=api_url.split("://", 1)[-1],
                            upay_sandbox=True, settings=StoreSettings(statuses=("pending",)),
                            require_upay_key=False)
    except BridgeError as exc:
        return _refuse(500, "REGISTRATION_FAILED", f"Registration failed: {exc}")
    logger.info("Saleor store registered for %s", api_url)
    return jsonify({"success": True}), 200


def _probe_record(api_url: str, token: str) -> StoreRecord:
    return StoreRecord(id="probe", kind="saleor", name="", url=api_url, upay_sandbox=True,
                       settings=StoreSettings(), secrets={"app_token": token})


APP_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>UPay Bridge</title></head>
<body style="font-family: system-ui, sans-serif">
{%- if api_url %}<p id="status">Connecting to Saleor…</p>
<script>
(function () {
  var apiUrl = {{ api_url | tojson }};
  // Saleor's Dashboard hands the app a token through postMessage ("handshake", AppBridge). Any
  // page can frame or open this one and post to it, so only our parent frame, at the origin of
  // the Saleor the bridge registered, is listened to. (app-sdk trusts document.referrer's
  // origin instead, which is whoever framed the page.) The Dashboard runs at its Saleor's
  // origin, the one the iframe URL's saleorApiUrl names.
  var trusted = [new URL(apiUrl).origin].concat({{ dashboard_origins | tojson }});
  var framed = window.parent !== window;
  window.addEventListener("message", function (event) {
    if (!framed || event.source !== window.parent || trusted.indexOf(event.origin) < 0) { return; }
    var data = event.data || {};
    if (data.type !== "handshake" || !data.payload || typeof data.payload.token !== "string"
        || !data.payload.token) { return; }
    fetch("{{ session_url }}", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: data.payload.token, saleorApiUrl: apiUrl})})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.redirect) { window.location.href = d.redirect; }
        else { document.getElementById("status").textContent = (d.error && d.error.message) || "Not allowed."; }
      });
  });
  if (framed) {
    // Posted to each trusted origin: the browser delivers only the one the parent really has.
    trusted.forEach(function (origin) {
      window.parent.postMessage({type: "notifyReady", payload: {}}, origin);
    });
  }
})();
</script>
{%- else %}<p id="status">This Saleor has not installed the app.</p>{% endif %}
</body></html>"""


@bp.get("/app")
def app_page() -> Any:
    """The Dashboard's iframe (the manifest's appUrl, with ``saleorApiUrl`` in the query).

    The page trusts a handshake only from the origin of a Saleor that installed the app, so an
    address the bridge does not know gets no listener at all.
    """
    api_url = request.args.get("saleorApiUrl", "")[:500]
    record = runtime().registry.find_by_url("saleor", api_url) if api_url else None
    return render_template_string(APP_PAGE, session_url=url_for("saleor_app.app_session"),
                                  api_url=record.url if record is not None else "",
                                  dashboard_origins=list(runtime().settings.saleor_dashboard_origins))


@bp.post("/app/session")
def app_session() -> Any:
    """Open the store's settings for a Saleor Dashboard user, by the token the Dashboard gave.

    The token is a JWT Saleor signs with its own key (the JWKS the webhooks use) for this app;
    no second password is involved.
    """
    rt = runtime()
    data = request.get_json(silent=True)
    data = data if isinstance(data, dict) else {}  # a JSON list, string or number: no fields
    api_url = str(data.get("saleorApiUrl", ""))[:500]
    record = rt.registry.find_by_url("saleor", api_url) if api_url else None
    if record is None:
        return _refuse(404, "NOT_REGISTERED", "This Saleor has not installed the app.")
    try:
        claims = verify_dashboard_token(str(data.get("token", "")), record)
    except SignatureError as exc:
        return _refuse(401, "INVALID_TOKEN", f"The Dashboard token was refused: {exc}")
    if claims.get("app") != record.secrets.get("app_id"):
        return _refuse(403, "WRONG_APP", "The Dashboard token is for another app.")
    versions = rt.accounts.dashboard_session_versions([record.id])
    session.clear()
    session["saleor_stores"] = [record.id]
    # The store's Dashboard session version now: signing out of any Dashboard session of this
    # store raises it, and this session ends with the others (bridge/web/merchant.py).
    session["saleor_versions"] = {record.id: versions.get(record.id, 0)}
    session["csrf_token"] = secrets.token_urlsafe(32)
    return jsonify({"redirect": url_for("merchant.store_settings", store_id=record.id)})


def verify_dashboard_token(token: str, record: StoreRecord) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SignatureError("malformed token") from None
    if header.get("alg") != "RS256":
        raise SignatureError("not RS256")
    cached = record.secrets.get("jwks")
    jwks = json.loads(cached or '{"keys": []}')
    for attempt in range(2):
        listed = jwks.get("keys") if isinstance(jwks, dict) else None
        keys = {k.get("kid"): k for k in (listed if isinstance(listed, list) else [])
                if isinstance(k, dict)}
        jwk = keys.get(header.get("kid"))
        if jwk is not None:
            try:
                return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"],
                                  options={"verify_aud": False, "require": ["exp"]})
            except jwt.PyJWTError as exc:
                raise SignatureError(str(exc)) from None
        if attempt == 0:  # an unknown key id: Saleor may have rotated its key
            def fetch() -> dict[str, Any]:
                resp = requests.get(jwks_url_for(record.url), timeout=(5, 15),
                                    allow_redirects=False)
                # A redirect (not followed) or an error page is not the key set.
                fetched = resp.json() if resp.status_code == 200 else None
                if not isinstance(fetched, dict):
                    raise ValueError("not a key set")
                return fetched

            # This endpoint needs no credentials: a made-up key id must not make the bridge
            # fetch Saleor's keys on every request. The same per-store limit as the webhooks.
            limited = JWKS_REFETCHES.fetcher(f"{record.id} {record.url}", "", cached, fetch,
                                             kid=str(header.get("kid") or ""))
            try:
                jwks = dict(limited())
            except (requests.RequestException, ValueError, TypeError, BridgeError):
                raise SignatureError("could not fetch the store's keys") from None
    raise SignatureError("unknown key id")
