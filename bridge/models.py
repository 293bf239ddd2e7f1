"""Plain values the adapters, the mapping and the pipeline exchange.

Store adapters turn their own payloads into an :class:`Order`; the mapping turns an ``Order``
into a UPay create-invoice request. Nothing here does I/O or knows about Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum


class LineKind(str, Enum):
    ITEM = "item"
    SHIPPING = "shipping"
    FEE = "fee"


@dataclass(frozen=True)
class OrderLine:
    """One priced line of an order, as the store charges it.

    ``amount`` is what the customer pays for the whole line: after discounts, taxes included,
    in the order's currency. It may be negative (a negative fee is a store-side discount).
    """

    kind: LineKind
    name: str
    quantity: int
    amount: Decimal
    sku: str = ""


@dataclass(frozen=True)
class Customer:
    id: str = ""  # the store's customer id; "" for a guest
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    country: str = ""  # ISO 3166-1 alpha-2, e.g. "KW"

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name.strip(), self.last_name.strip()) if p)


@dataclass(frozen=True)
class Order:
    """A store order, reduced to what invoicing needs."""

    external_id: str  # the store's id for the order (WooCommerce: the numeric id as text)
    number: str  # the order number the merchant and customer see
    status: str
    currency: str  # ISO 4217, upper case
    total: Decimal  # the order total as the store sent it (not yet rounded)
    customer: Customer
    lines: tuple[OrderLine, ...] = ()
    discount_total: Decimal = Decimal("0")
    payment_method: str = ""
    order_key: str = ""
    created_via: str = ""


class NotificationType(str, Enum):
    EMAIL = "email"
    SMS = "sms"
    LINK = "link"
    ALL = "all"


class Language(str, Enum):
    EN = "en"
    AR = "ar"


@dataclass(frozen=True)
class InvoiceOptions:
    """Per-store choices that shape the create-invoice request."""

    notification_type: NotificationType = NotificationType.LINK
    language: Language = Language.EN
    plugin_src: str = "woocommerce"


@dataclass(frozen=True)
class CallbackUrls:
    """The bridge's own URLs UPay sends the customer and its notification to.

    None of them may carry a query string: UPay appends ``?payment_id=...`` to them as they
    are, so a query string of ours would swallow UPay's first parameter.
    """

    return_url: str
    cancel_url: str
    notification_url: str


@dataclass(frozen=True)
class Invoice:
    """What UPay answered to a create-invoice request."""

    invoice_id: str
    url: str
    raw: dict = field(default_factory=dict, compare=False, repr=False)
