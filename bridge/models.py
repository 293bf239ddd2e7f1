"""Plain values the adapters, the mapping and the pipeline exchange.

Store adapters turn their own payloads into an :class:`Order`; the mapping turns an ``Order``
into a UPay create-invoice request. Nothing here does I/O or knows about Flask.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from enum import Enum
from typing import TypeVar

T = TypeVar("T")


def _fills_dict(cls: type[T]) -> type[T]:
    """Give a frozen dataclass an ``__init__`` that writes its fields into the instance's
    ``__dict__`` at once. The one ``dataclass`` makes goes through ``object.__setattr__`` for
    each field (what freezing costs); every webhook builds one Order, its Customer and an
    OrderLine per line, and that was a tenth of reading the order. Same parameters, same
    defaults; no field here has a default factory or ``__post_init__``."""
    params, lines, defaults = [], [], {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        lines.append(f"    d[{f.name!r}] = {f.name}")
    source = f"def __init__(self, {', '.join(params)}):\n    d = self.__dict__\n" + \
        "\n".join(lines)
    namespace: dict = dict(defaults)
    exec(source, namespace)  # noqa: S102 - built from the class's own field names, as dataclass does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


class LineKind(str, Enum):
    ITEM = "item"
    SHIPPING = "shipping"
    FEE = "fee"


@_fills_dict
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


@_fills_dict
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


@_fills_dict
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
