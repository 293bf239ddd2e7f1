"""Errors raised by the bridge. One tree; every class says whether trying again can help.

* BridgeError
  x ConfigError                    bad or missing settings
  x UnknownStoreError              no store with that id (-> 404)
  x SignatureError                 webhook failed verification (-> 401)
  x InvalidPayloadError            authentic but not an order we can use (-> 422)
  x OrderBusyError                 an operator's retry while a worker holds the order
    + MalformedBodyError           not JSON at all (-> 400)
  x UPayError                      .status, .body (never the API key)
    + UPayConnectionError          no answer; .outcome_unknown when the request may have arrived
    + UPayResponseError            UPay answered with an error
      - UPayAuthError              401/403: the API key is wrong or not activated
      - UPayValidationError        422: .errors maps field -> messages
      - UPayRejectedError          {"status": false, "message": ...}
      - UPayNotJSONError           a non-JSON body: UPay's sign of a server IP not whitelisted
      - UPayServerError            5xx (transient; a POST's outcome is unknown)
      - UPayRateLimitError         429 (transient; nothing was done)
  x StoreError                     the store's API failed; .retry_after: the store's Retry-After
    + StoreConnectionError         no answer (transient)
    + StoreResponseError           .status, .code (the store's error code; "not_json" for a page)
      - StoreAuthError             401/403: keys wrong or lacking permission, or a page from a
                                   firewall / security plugin in front of the API refusing us
      - OrderNotFoundError         the order is gone
      - StoreServerError           5xx, 408, 425, or a 2xx page that is not JSON (transient)
      - StoreRateLimitError        429 (transient; nothing was done)

``transient`` says whether the same call may succeed later; ``outcome_unknown`` says whether a
non-idempotent call (creating an invoice, adding a note) may have taken effect anyway.
Errors carry only simple arguments so they pickle across the job queue.
"""

from __future__ import annotations

from typing import Any, Mapping


class BridgeError(Exception):
    transient: bool = False
    outcome_unknown: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BridgeError):
    pass


class UnknownStoreError(BridgeError):
    pass


class SignatureError(BridgeError):
    pass


class InvalidPayloadError(BridgeError):
    pass


class OrderBusyError(BridgeError):
    """The operator asked for something a worker is doing right now (its job holds the order)."""


class MalformedBodyError(InvalidPayloadError):
    """The body is not even well-formed (not JSON, not UTF-8): 400 rather than 422."""


class UPayError(BridgeError):
    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body[:2000]

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.status, self.body))


class UPayConnectionError(UPayError):
    transient = True

    def __init__(self, message: str, status: int | None = None, body: str = "",
                 outcome_unknown: bool = True) -> None:
        super().__init__(message, status, body)
        self.outcome_unknown = outcome_unknown

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.status, self.body, self.outcome_unknown))


class UPayResponseError(UPayError):
    pass


class UPayAuthError(UPayResponseError):
    pass


class UPayValidationError(UPayResponseError):
    def __init__(self, message: str, status: int | None = 422, body: str = "",
                 errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, status, body)
        self.errors = dict(errors or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.status, self.body, self.errors))


class UPayRejectedError(UPayResponseError):
    pass


class UPayNotJSONError(UPayResponseError):
    pass


class UPayServerError(UPayResponseError):
    transient = True
    outcome_unknown = True


class UPayRateLimitError(UPayResponseError):
    transient = True

    def __init__(self, message: str, status: int | None = 429, body: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, status, body)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.status, self.body, self.retry_after))


class StoreError(BridgeError):
    def __init__(self, message: str, status: int | None = None, code: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # Seconds the store asked us to wait (its Retry-After header), when it said; a floor
        # for the next try's delay, never a reason to try sooner.
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, self.status, self.code, self.retry_after))


class StoreConnectionError(StoreError):
    transient = True
    outcome_unknown = True


class StoreResponseError(StoreError):
    pass


class StoreAuthError(StoreResponseError):
    pass


class OrderNotFoundError(StoreResponseError):
    pass


class StoreServerError(StoreResponseError):
    transient = True
    outcome_unknown = True


class StoreRateLimitError(StoreResponseError):
    """429: a rate limiter (the host's, a CDN's, a security plugin's, Saleor Cloud's) turned the
    request away before the store acted on it; the same call succeeds once the window passes."""
    transient = True
