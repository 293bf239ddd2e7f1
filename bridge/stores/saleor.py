"""Saleor: JWS-signed subscription webhooks in, GraphQL with the app token out.

Saleor answers executed GraphQL operations with HTTP 200 even when they failed: errors come as a
top-level ``errors`` list (permissions) or inside each mutation's payload (business rules), so
every call goes through ``_graphql``, which checks both (saleor.md §2.4, §4.4).
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from ..errors import (OrderNotFoundError, StoreAuthError,
                      StoreConnectionError, StoreResponseError)
from ..models import Order
from ..registry import StoreRecord
from ..transport import SessionCache, not_json_error, refuse_redirect, transient_error
from . import META_INVOICE_ID, META_INVOICE_URL, PaidResult, WebhookEvent
from .payload import decode_json
from .saleor_payload import order_from_saleor
from .saleor_signature import JwksRefetchLimiter, jwks_url_for, verify_saleor_signature

logger = logging.getLogger(__name__)

ORDER_CREATED = "order_created"  # Saleor-Event is the lower-case event value (saleor.md §1.2)
TRANSACTION_NAME = "UPay invoice"

APP_ID = "query AppId { app { id } }"
NOTE_ADD = """mutation NoteAdd($order: ID!, $message: String!) {
  orderNoteAdd(order: $order, input: {message: $message}) { event { id } errors { field message code } } }"""
# Saleor before 3.15 only has orderAddNote (removed in 3.24): the fallback when orderNoteAdd is
# an unknown field (HTTP 400).
NOTE_ADD_OLD = """mutation NoteAddOld($order: ID!, $message: String!) {
  orderAddNote(order: $order, input: {message: $message}) { event { id } errors { field message code } } }"""
ORDER = """query Order($id: ID!) { order(id: $id) { id number chargeStatus
  total { gross { amount currency } }
  events { id type message }
  transactions { id name pspReference externalUrl chargedAmount { amount currency } } } }"""
TRANSACTION_CREATE = """mutation TxCreate($id: ID!, $tx: TransactionCreateInput!) {
  transactionCreate(id: $id, transaction: $tx) { transaction { id } errors { field message code } } }"""
CHARGE_REPORT = """mutation Charge($id: ID!, $amount: PositiveDecimal!, $psp: String!, $url: String, $msg: String) {
  transactionEventReport(id: $id, type: CHARGE_SUCCESS, amount: $amount, pspReference: $psp,
                         externalUrl: $url, message: $msg, availableActions: [REFUND]) {
    alreadyProcessed errors { field message code } } }"""


# One kept-alive session per store and process, shared by every job of that store.
_SESSIONS = SessionCache()


# One per process: its memory of recent JWKS fetches (see JwksRefetchLimiter).
JWKS_REFETCHES = JwksRefetchLimiter()

class SaleorStore:
    kind = "saleor"
    # UPay's documented plugin.src values do not include Saleor; this is ours (≤ 11 characters).
    plugin_src = "saleor"

    def __init__(self, record: StoreRecord, *, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.record = record
        self.api_url = record.url
        self.timeout = timeout
        self.refreshed_jwks: Mapping[str, Any] | None = None  # the caller persists it
        self._session = _SESSIONS.get(f"{record.id} {record.url}")

    # -- webhooks in ---------------------------------------------------------------------------

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        return False  # Saleor has no activation ping: the install's token POST plays that role

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        signature = headers.get("Saleor-Signature") or headers.get("X-Saleor-Signature") or ""
        cached = self.record.secrets.get("jwks")
        # A forged signature (a made-up key id, or a real one over another body) makes the
        # verifier fetch the JWKS again: through the limiter, at most once per store per interval.
        fetch = JWKS_REFETCHES.fetcher(f"{self.record.id} {self.record.url}", signature, cached,
                                       self._fetch_jwks)
        self.refreshed_jwks = verify_saleor_signature(
            body, signature, jwks=json.loads(cached) if cached else None,
            fetch_jwks=fetch, hmac_secret=self.record.secrets.get("webhook_secret"))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        event = (headers.get("Saleor-Event") or headers.get("X-Saleor-Event") or "").lower()
        if event != ORDER_CREATED:
            return WebhookEvent(topic=event[:60], delivery_id="", order=None)
        return WebhookEvent(topic=event, delivery_id="", order=self.parse_order(body))

    def parse_order(self, body: bytes | str) -> Order:
        return order_from_saleor(decode_json(body))

    def _fetch_jwks(self) -> Mapping[str, Any]:
        try:
            resp = self._session.get(jwks_url_for(self.api_url), timeout=self.timeout,
                                     allow_redirects=False)
            # raise_for_status() lets a 3xx through: its body is not the store's keys.
            refuse_redirect(resp, "Saleor's key set (JWKS)")
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise StoreConnectionError(f"could not fetch the store's JWKS: {type(exc).__name__}") from None

    # -- GraphQL out ---------------------------------------------------------------------------

    def app_id(self) -> str:
        data = self._graphql(APP_ID, {})
        app = data.get("app") or {}
        if not app.get("id"):
            raise StoreAuthError("the app token is not valid for this Saleor", 401, "UNKNOWN_APP_ID")
        return str(app["id"])

    def check_connection(self) -> None:
        self.app_id()

    def get_order(self, order_id: str) -> dict[str, Any]:
        order = self._graphql(ORDER, {"id": order_id}).get("order")
        if not order:
            raise OrderNotFoundError("the order does not exist at the store", 404, "NOT_FOUND")
        return order

    def write_invoice_meta(self, order_id: str, meta: Mapping[str, str]) -> None:
        """A transaction on the order carries the payment link (its external URL)."""
        invoice_id = meta.get(META_INVOICE_ID, "")
        if self._our_transaction(self.get_order(order_id), invoice_id) is not None:
            return  # made by an earlier try whose answer was lost
        self._mutation("transactionCreate", TRANSACTION_CREATE, {"id": order_id, "tx": {
            "name": TRANSACTION_NAME, "pspReference": invoice_id,
            "externalUrl": meta.get(META_INVOICE_URL, ""), "message": "Awaiting payment"}})

    def add_note(self, order_id: str, text: str, *, customer_note: bool) -> str:
        # Saleor notes are staff-only: customer_note has no Saleor counterpart.
        try:
            payload = self._mutation("orderNoteAdd", NOTE_ADD, {"order": order_id, "message": text})
        except StoreResponseError as exc:
            if exc.code != "GRAPHQL_VALIDATION":
                raise
            payload = self._mutation("orderAddNote", NOTE_ADD_OLD, {"order": order_id, "message": text})
        return str((payload.get("event") or {}).get("id", ""))

    def find_note(self, order_id: str, contains: str) -> str | None:
        for event in self.get_order(order_id).get("events") or []:
            if event.get("type") == "NOTE_ADDED" and contains in str(event.get("message", "")):
                return str(event.get("id", ""))
        return None

    def mark_paid(self, order_id: str, transaction_id: str, *, paid_status: str = "",
                  reopen_cancelled: bool = True,
                  before_reopen: Callable[[], None] | None = None) -> PaidResult:
        order = self.get_order(order_id)
        gross = (order.get("total") or {}).get("gross") or {}
        tx = self._our_transaction(order, None)
        if tx is None:
            raise StoreResponseError("the order has no UPay transaction to charge", 200, "NOT_FOUND")
        payload = self._mutation("transactionEventReport", CHARGE_REPORT, {
            "id": tx["id"], "amount": str(Decimal(str(gross.get("amount", "0")))),
            "psp": transaction_id, "url": tx.get("externalUrl") or None,
            "msg": "Payment confirmed with UPay"})
        # Saleor deduplicates on (pspReference, type, amount): a repeat is alreadyProcessed.
        outcome = "already_paid" if payload.get("alreadyProcessed") else "paid"
        return PaidResult(outcome, "FULL")

    def customer_order_url(self, order: Order) -> str:
        # Saleor has no storefront of its own; the customer goes back to the shop's site.
        parts = urlsplit(self.api_url)
        return f"{parts.scheme}://{parts.netloc}/"

    def _our_transaction(self, order: Mapping[str, Any], invoice_id: str | None) -> Any:
        for tx in order.get("transactions") or []:
            if tx.get("name") == TRANSACTION_NAME and (invoice_id is None
                                                       or tx.get("pspReference") == invoice_id):
                return tx
        return None

    def _mutation(self, field: str, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        payload = self._graphql(query, variables).get(field) or {}
        errors = payload.get("errors") or []
        if errors:
            first = errors[0]
            code = str(first.get("code", ""))
            message = f"{field}: {first.get('field') or ''} {first.get('message', '')}".strip()
            if code == "NOT_FOUND":
                raise OrderNotFoundError(message, 200, code)
            raise StoreResponseError(message, 200, code)
        return payload

    def _graphql(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        token = self.record.secrets.get("app_token", "")
        try:
            resp = self._session.post(self.api_url, json={"query": query, "variables": dict(variables)},
                                      headers={"Authorization": f"Bearer {token}"},
                                      timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise StoreConnectionError(f"could not reach Saleor: {type(exc).__name__}") from None
        refuse_redirect(resp, "Saleor")  # permanent, like the other refusals below
        try:
            body = resp.json()
        except ValueError:
            body = None
        status = resp.status_code
        if not isinstance(body, dict):
            # Saleor's view answers JSON objects only (saleor.md §2.4): a page is a proxy's, a
            # WAF's or a maintenance page, classified by its status (transport.not_json_error).
            raise not_json_error(resp, "Saleor", "Saleor's GraphQL API")
        if status == 400:
            # An invalid query (an unknown field on this Saleor version) is HTTP 400, no data.
            message = (body.get("errors") or [{}])[0].get("message", "invalid query")
            raise StoreResponseError(f"Saleor refused the query: {message}", 400, "GRAPHQL_VALIDATION")
        if status != 200:
            # Saleor itself answers executed operations with 200 and bad queries with 400; any
            # other JSON status comes from in front of it (Saleor Cloud's or a gateway's rate
            # limiter, an auth proxy) and is classified as the WooCommerce adapter does: 429,
            # 5xx, 408 and 425 later, with Retry-After; 401/403 the token refused; else final.
            transient = transient_error(resp, f"Saleor answered HTTP {status}"
                                        + (" (rate limited)" if status == 429 else ""))
            if transient is not None:
                raise transient
            if status in (401, 403):
                raise StoreAuthError(f"Saleor refused the app token (HTTP {status})", status)
            raise StoreResponseError(f"Saleor answered HTTP {status}", status)
        errors = body.get("errors") or []
        if errors:
            first = errors[0]
            code = ((first.get("extensions") or {}).get("exception") or {}).get("code", "")
            if code == "PermissionDenied":
                raise StoreAuthError(f"Saleor refused: {first.get('message', '')}", 200, code)
            raise StoreResponseError(f"Saleor error: {first.get('message', '')}", 200, code)
        return body.get("data") or {}
