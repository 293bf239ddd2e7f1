"""UPay's REST API: one client per merchant API key, one request choke point.

Every quirk of UPay that shapes a request or the reading of an answer is handled (and commented)
here, in ``_request``: 201 for success, ``status: false`` envelopes, Laravel 422 bodies, 403 for
an unknown key, and non-JSON pages when the server's IP is not whitelisted (upay-api.md §12).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

import requests
import simplejson

from . import __version__, metrics
from .errors import (UPayAuthError, UPayConnectionError, UPayNotJSONError, UPayRateLimitError,
                     UPayRejectedError, UPayServerError, UPayValidationError)
from .models import Invoice
from .transport import new_session

logger = logging.getLogger(__name__)

WHITELIST_HINT = ("UPay answered with a page that is not JSON; UPay does this when the "
                  "server's IP address is not whitelisted for the API key. Ask UPay to "
                  "whitelist this server's IP.")


class UPayClient:
    """UPay API client for one merchant API key (sandbox or production, by ``base_url``)."""

    def __init__(self, api_key: str, *, base_url: str, timeout: tuple[float, float] = (5.0, 30.0),
                 session: requests.Session | None = None) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        # Only connection failures are retried by the transport (nothing was sent). A POST that
        # reached UPay is never re-sent: UPay has no idempotency keys (upay-api.md §0.8).
        self._session = session or new_session(retry_connect=2)

    def __repr__(self) -> str:  # never the key
        return f"UPayClient(base_url={self.base_url!r})"

    def create_invoice(self, request: Mapping[str, Any]) -> Invoice:
        body = self._request("POST", "charge", json_body=request)
        data = body.get("data")
        if not isinstance(data, dict):
            raise UPayRejectedError("UPay answered without invoice data", 201, _short(body))
        # For create-invoice, `data.link` is a BOOLEAN ("a link was produced") and the URL is in
        # `data.url` (upay-api.md §4.4); a plain charge puts the URL in `link` instead.
        url = data.get("url") if isinstance(data.get("url"), str) else None
        if not url and isinstance(data.get("link"), str):
            url = data["link"]
        if not url or not url.startswith(("https://", "http://")):
            raise UPayRejectedError("UPay answered without an invoice URL", 201, _short(body))
        invoice_id = data.get("invoice_id")
        if not invoice_id:
            # Not every answer carries invoice_id (upay-api.md §17.9); it is the last path
            # segment of the invoice URL where it is missing.
            invoice_id = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        return Invoice(invoice_id=str(invoice_id), url=url, raw=data)

    def check_key(self) -> bool:
        """Ask UPay whether the key is valid (``check-merchant-api-key``, upay-api.md §10)."""
        body = self._request("POST", "check-merchant-api-key", json_body={"apiKey": self._api_key})
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        return bool(data.get("isWhiteLabel", False))

    def get_payment_status(self, *, track_id: str | None = None, invoice_id: str | None = None,
                           session_id: str | None = None) -> dict[str, Any]:
        if track_id:
            path, params = f"get-payment-status/{requests.utils.quote(track_id, safe='')}", None
        elif invoice_id:
            path, params = "get-payment-status", {"invoice_id": invoice_id}
        elif session_id:
            path, params = "get-payment-status", {"session_id": session_id}
        else:
            raise ValueError("one of track_id, invoice_id, session_id is required")
        body = self._request("GET", path, params=params)
        transaction = (body.get("data") or {}).get("transaction")
        if not isinstance(transaction, dict):
            raise UPayRejectedError("UPay's status answer has no transaction", 201, _short(body))
        return transaction

    def _request(self, method: str, path: str, *, json_body: Mapping[str, Any] | None = None,
                 params: Mapping[str, str] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": f"upay-bridge/{__version__}",
        }
        data = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            # simplejson writes Decimal as the exact number ("12.500"), never through a float.
            data = simplejson.dumps(json_body, use_decimal=True, ensure_ascii=False).encode("utf-8")
        started = time.monotonic()
        try:
            resp = self._session.request(method, url, params=params, data=data, headers=headers,
                                         timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.ConnectTimeout as exc:
            raise UPayConnectionError(f"could not connect to UPay: {type(exc).__name__}",
                                      outcome_unknown=False) from None
        except requests.exceptions.ConnectionError as exc:
            # A refused or unresolvable connection sent nothing; a connection dropped after
            # sending may have been acted on.
            sent = not _never_connected(exc)
            raise UPayConnectionError(f"connection to UPay failed: {type(exc).__name__}",
                                      outcome_unknown=sent) from None
        except requests.exceptions.Timeout:
            raise UPayConnectionError("UPay did not answer in time (read timeout)",
                                      outcome_unknown=True) from None
        except requests.exceptions.RequestException as exc:
            raise UPayConnectionError(f"request to UPay failed: {type(exc).__name__}",
                                      outcome_unknown=True) from None
        elapsed = time.monotonic() - started
        if path == "charge" or path.startswith("get-payment-status"):
            metrics.observe_upay(self, "charge" if path == "charge" else "status", elapsed)
        logger.info("upay %s %s -> %s in %.3fs", method, path.split("/")[0], resp.status_code,
                    elapsed, extra={"upay_status": resp.status_code, "upay_latency": elapsed})
        return _parse(resp)


def _never_connected(exc: BaseException) -> bool:
    text = repr(exc)
    return any(s in text for s in ("NewConnectionError", "NameResolutionError",
                                   "Connection refused", "ConnectTimeoutError"))


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else simplejson.dumps(body, use_decimal=True)
    return text[:500]


def _message(body: Mapping[str, Any], default: str) -> str:
    message = body.get("message")
    return str(message) if message else default


def _parse(resp: requests.Response) -> dict[str, Any]:
    status = resp.status_code
    text = resp.text
    try:
        body = simplejson.loads(text, use_decimal=True) if text.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if status >= 500:
            raise UPayServerError(f"UPay server error (HTTP {status})", status, text)
        if status == 429:
            raise UPayRateLimitError("UPay rate limit reached", status, text,
                                     retry_after=_retry_after(resp))
        raise UPayNotJSONError(f"{WHITELIST_HINT} (HTTP {status})", status, text)
    if status in (401, 403):
        raise UPayAuthError(f"UPay refused the API key: {_message(body, 'unauthorized')} "
                            "(check the key and the sandbox/production setting)", status, text)
    if status == 422 or (body.get("errors") and status >= 400):
        errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
        raise UPayValidationError(f"UPay rejected the request: {_message(body, 'validation error')}",
                                  status, text, errors=errors)
    if status == 429:
        raise UPayRateLimitError("UPay rate limit reached", status, text,
                                 retry_after=_retry_after(resp))
    if status >= 500:
        raise UPayServerError(f"UPay server error (HTTP {status}): {_message(body, '')}".rstrip(": "),
                              status, text)
    if status >= 400:
        raise UPayRejectedError(f"UPay refused the request (HTTP {status}): "
                                f"{_message(body, 'no message')}", status, text)
    # The official plugins treat `status: false`, or a `message` without `status`, as failure
    # (upay-api.md §12).
    if body.get("status") is not True:
        raise UPayRejectedError(f"UPay refused the request: {_message(body, 'no message')}",
                                status, text)
    return body


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


def redirect_fields(query_string: str) -> dict[str, str]:
    """UPay's return/cancel parameters, read despite UPay's double-``?`` quirk.

    UPay appends ``?payment_id=...&result=...`` to the return URL as it is, so a URL that already
    had a query becomes ``...?a=1?payment_id=...`` and our last parameter swallows UPay's first
    (upay-api.md §6.2). A ``?`` inside the query string is therefore read as ``&``. Values never
    contain a raw ``?`` of their own: UPay URL-encodes them.
    """
    query = query_string.lstrip("?").replace("?", "&")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        fields.setdefault(key, value)  # the first value wins: later repeats cannot override
    return fields

