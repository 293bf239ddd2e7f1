"""Store webhooks: verify, record, answer 200. Invoices are made by workers, never here."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, jsonify, request

from ..app import error_response, runtime
from ..errors import SignatureError, StoreError, UnknownStoreError
from ..registry import StoreRecord
from ..stores import adapter_for

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/<kind>/<store_id>")
def receive(kind: str, store_id: str) -> Any:
    record = runtime().registry.find(store_id[:32])
    if record is None or record.kind != kind:
        raise UnknownStoreError(f"no {kind} store with id {store_id[:32]!r}")
    return _receive(record)


@bp.post("/saleor")
def receive_saleor() -> Any:
    # Every Saleor store posts to the manifest's one target URL; Saleor-Api-Url says which.
    api_url = request.headers.get("Saleor-Api-Url", "")
    record = runtime().registry.find_by_url("saleor", api_url) if api_url else None
    if record is None:
        raise UnknownStoreError("no Saleor store is registered for this Saleor-Api-Url")
    return _receive(record)


def _receive(record: StoreRecord) -> Any:
    rt = runtime()
    body = request.get_data(cache=True)  # raw bytes: the signature covers exactly these
    store = adapter_for(record)
    if store.is_ping(request.headers, body):
        # WooCommerce activates the webhook only on exactly 200 (woocommerce.md §1.5).
        return jsonify({"ok": True, "ping": True}), 200
    try:
        store.verify_webhook(request.headers, body)
    except SignatureError:
        logger.warning("webhook for store %s rejected: bad signature", record.id,
                       extra={"store_id": record.id, "remote_addr": request.remote_addr})
        raise
    except StoreError as exc:
        # A signature by a key the bridge has not seen, and the store's key set (JWKS) could
        # not be fetched to check it. Nothing is recorded; the store delivers again later.
        logger.warning("webhook for store %s not checked: %s", record.id, exc,
                       extra={"store_id": record.id})
        return error_response(503, "signing_keys_unavailable",
                              "the store's signing keys could not be fetched; try again later")
    refreshed = getattr(store, "refreshed_jwks", None)
    if refreshed:  # the store rotated its signing key: keep the new JWKS
        rt.registry.update(record.id, secrets={"jwks": json.dumps(refreshed)})
    event = store.parse_webhook(request.headers, body)
    if event.order is None:
        rt.pipeline.record_ignored(record, event, body)
        return jsonify({"ok": True, "ignored": event.topic or "no topic"}), 200
    accepted = rt.pipeline.accept(record, event, body)
    result: dict[str, Any] = {"ok": True, "order": accepted.outcome}
    if accepted.reason:
        result["reason"] = accepted.reason
    return jsonify(result), 200


@bp.route("/saleor", methods=["GET", "PUT", "PATCH", "DELETE"])
@bp.route("/<kind>/<store_id>", methods=["GET", "PUT", "PATCH", "DELETE"])
def wrong_method(kind: str = "saleor", store_id: str = "") -> Any:
    return error_response(405, "method_not_allowed", "webhooks are delivered with POST")
