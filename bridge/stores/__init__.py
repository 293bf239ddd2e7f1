"""Store adapters: one small interface that every store platform implements.

The pipeline talks to a store only through :class:`Store`; adding a platform means adding an
adapter module and one entry in ``ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from ..models import Order

if TYPE_CHECKING:  # the registry pulls in SQLAlchemy; the payload parsers must stay light
    from ..registry import StoreRecord


# What the bridge records on the store's order about its invoice (WooCommerce: order meta;
# Saleor: a transaction whose pspReference and external URL carry the same facts).
META_INVOICE_ID = "upay_invoice_id"
META_INVOICE_URL = "upay_invoice_url"
META_UPAY_ORDER_ID = "upay_order_id"


@dataclass(frozen=True)
class WebhookEvent:
    topic: str
    delivery_id: str
    order: Order | None  # None for topics the bridge ignores


@dataclass(frozen=True)
class PaidResult:
    # paid | reopened | already_paid | paid_otherwise | cancelled_left | left
    outcome: str
    status: str  # the order's status at the store afterwards


class Store(Protocol):
    kind: str
    plugin_src: str  # UPay's plugin.src for orders from this platform

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent: ...

    def parse_order(self, body: bytes | str) -> Order: ...

    def write_invoice_meta(self, order_id: str, meta: Mapping[str, str]) -> None: ...

    def add_note(self, order_id: str, text: str, *, customer_note: bool) -> str: ...

    def find_note(self, order_id: str, contains: str) -> str | None: ...

    def mark_paid(self, order_id: str, transaction_id: str, *, paid_status: str,
                  reopen_cancelled: bool,
                  before_reopen: Callable[[], None] | None = None) -> PaidResult:
        """``before_reopen`` runs just before a cancelled order is re-opened: if that call's
        answer is lost, a retry finds the order paid and cannot tell it was cancelled."""
        ...

    def customer_order_url(self, order: Order) -> str: ...

    # Webhook upkeep and catch-up of lost deliveries (bridge/store_health.py).

    def webhooks_for(self, delivery_url: str) -> list[dict]: ...

    def ensure_webhook(self, topic: str, delivery_url: str, secret: str, name: str) -> dict: ...

    def remove_webhooks(self, delivery_url: str) -> int: ...

    def reactivate_webhook(self, webhook_id: int) -> dict: ...

    def orders_modified_since(self, after_iso: str, page: int) -> list[dict]: ...


StoreFactory = Callable[..., Store]


_ADAPTERS: dict[str, StoreFactory] = {}


def adapter_for(record: StoreRecord, *, timeout: tuple[float, float] = (5.0, 30.0)) -> Store:
    if not _ADAPTERS:  # imported on first use: the adapters import this module
        from .saleor import SaleorStore
        from .woocommerce import WooCommerceStore

        _ADAPTERS.update(woocommerce=WooCommerceStore, saleor=SaleorStore)
    return _ADAPTERS[record.kind](record, timeout=timeout)
