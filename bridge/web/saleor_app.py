"""The Saleor App's own endpoints: the manifest and the token target (installation).

Saleor fetches the manifest, creates the app and its webhooks, then POSTs the app token here.
Any non-2xx answer makes Saleor delete the app and show our ``error.message`` to the merchant
(saleor.md §2.1–§2.2), so every refusal says why.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import requests
from flask import Blueprint, jsonify, request

from ..app import runtime
from ..errors import BridgeError, StoreError
from ..manifest import manifest
from ..registry import StoreRecord, StoreSettings
from ..stores.saleor import SaleorStore
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
    data = request.get_json(silent=True)
    token = data.get("auth_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        return _refuse(400, "MISSING_AUTH_TOKEN", "Missing auth token.")
    existing = rt.registry.find_by_url("saleor", api_url)
    probe = SaleorStore(_probe_record(api_url, token))
    try:
        app_id = probe.app_id()  # the token works, and says which app we are
    except StoreError as exc:
        return _refuse(401, "UNKNOWN_APP_ID", f"Could not confirm the app token with Saleor: {exc}")
    try:
        resp = requests.get(jwks_url_for(api_url), timeout=(5, 15), allow_redirects=False)
        resp.raise_for_status()
        jwks = resp.json()
    except (requests.RequestException, ValueError):
        return _refuse(401, "JWKS_NOT_AVAILABLE", "Could not fetch the store's signing keys (JWKS).")
    secrets = {"app_token": token, "app_id": app_id, "jwks": json.dumps(jwks)}
    try:
        if existing is not None:  # a reinstall brings a new token and a new app id
            rt.registry.update(existing.id, secrets=secrets)
        else:
            rt.registry.add("saleor", api_url, secrets, name=api_url.split("://", 1)[-1],
                            upay_sandbox=True, settings=StoreSettings(statuses=("pending",)),
                            require_upay_key=False)
    except BridgeError as exc:
        return _refuse(500, "REGISTRATION_FAILED", f"Registration failed: {exc}")
    logger.info("Saleor store registered for %s", api_url)
    return jsonify({"success": True}), 200


def _probe_record(api_url: str, token: str) -> StoreRecord:
    return StoreRecord(id="probe", kind="saleor", name="", url=api_url, upay_sandbox=True,
                       settings=StoreSettings(), secrets={"app_token": token})
