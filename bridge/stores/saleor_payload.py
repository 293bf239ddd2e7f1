"""Parse a Saleor ``ORDER_CREATED`` subscription payload (the webhook body) into an Order.

Manifest webhooks always carry subscription payloads (saleor.md §0.7, §3.3): the body is the
object inside the subscription's ``event``, e.g. ``{"issuedAt": ..., "version": ..., "order":
{...}}``, plus ``"errors": [...]`` when GraphQL resolution failed. It is expected already
JSON-decoded with ``parse_float=Decimal``: Saleor's ``Money.amount`` is a JSON number, so a KWD
``12.345`` then arrives exactly instead of as a binary float. Amounts are left unrounded (the
mapping rounds per currency).

Saleor names are plain text, not HTML, so unlike the WooCommerce twin they are not unescaped or
stripped of tags here; the mapping cleans control characters and cuts them to UPay's limits.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from bridge.errors import InvalidPayloadError
from bridge.models import Customer, LineKind, Order, OrderLine
from bridge.money import parse_amount
from bridge.stores.payload import objects, storable, storable_id
from bridge.stores.payload import quantity as parse_quantity

_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")

# Saleor has no WooCommerce-style "pending"/"on-hold" order status: whether an order still needs
# money is its ``chargeStatus`` (NONE | PARTIAL | FULL | OVERCHARGED). The bridge's store settings
# invoice orders "that need payment" by status name ("pending" by default), so an order that is
# not (fully) charged yet becomes "pending" and a charged one "paid", which no store invoices.
STATUS_PENDING = "pending"
STATUS_PAID = "paid"
_CHARGE_STATUSES = {"NONE": STATUS_PENDING, "PARTIAL": STATUS_PENDING,
                    "FULL": STATUS_PAID, "OVERCHARGED": STATUS_PAID}
# Order statuses under which nothing is to be paid whatever the charge status: they keep their own
# (lower-case) name, so the store's status filter leaves them alone with a readable reason.
_CLOSED_ORDER_STATUSES = {"CANCELED": "cancelled", "DRAFT": "draft", "EXPIRED": "expired"}


def order_from_saleor(payload: object) -> Order:
    if not isinstance(payload, dict):
        raise InvalidPayloadError(
            f"Saleor order payload must be a JSON object, got {type(payload).__name__}")
    order = payload.get("order")
    if order is None:
        errors = payload.get("errors")
        if errors:
            # A failed resolution of a non-null field nulls its parent, up to "order" itself.
            raise InvalidPayloadError(_errors_message(errors))
        raise InvalidPayloadError(
            "Saleor payload has no 'order': the webhook's subscription query must select "
            "'... on OrderCreated { order { ... } }'")
    if not isinstance(order, dict):
        raise InvalidPayloadError(
            f"Saleor payload 'order' must be an object, got {type(order).__name__}")

    order_id = order.get("id")
    if not isinstance(order_id, str) or not order_id.strip():
        raise InvalidPayloadError(f"order 'id' must be a non-empty string, got {order_id!r}")
    order_id = storable_id(order_id.strip(), "order", "id")
    where = f"order {order_id}"

    number = order.get("number")
    # Order.number is String! (the DB integer as text); an int is harmless, a bool is not a number.
    if isinstance(number, bool) or not isinstance(number, (str, int)) or not str(number).strip():
        raise InvalidPayloadError(f"{where}: 'number' must be a non-empty string, got {number!r}")

    total, currency = _money(order, "total", where, required=True)
    if currency is None:
        raise InvalidPayloadError(f"{where}: 'total.gross.currency' must be a 3-letter ISO 4217 "
                                  f"code, got None")
    lines = _item_lines(order, where, currency)
    shipping, _ = _money(order, "shippingPrice", where, currency=currency)
    if shipping is not None and shipping > 0:
        lines.append(OrderLine(kind=LineKind.SHIPPING, name="Shipping", quantity=1,
                               amount=shipping))

    return Order(
        external_id=order_id,  # the Relay global id, which every mutation takes
        number=storable_id(str(number).strip(), where, "number"),
        status=_status(order, where),
        currency=currency,
        total=total,
        customer=_customer(order, where),
        lines=tuple(lines),
        payment_method="",
    )


def _errors_message(errors: Any) -> str:
    first = errors[0] if isinstance(errors, list) and errors else errors
    message = first.get("message") if isinstance(first, dict) else first
    text = " ".join(str(message).split())[:300]
    return f"Saleor could not resolve the order: {text}"


def _text(value: Any) -> str:
    # Nullable Saleor strings (userEmail, productSku, phone, ...) arrive as null.
    return storable(value).strip() if isinstance(value, str) else ""


def _object(parent: dict, key: str, where: str, label: str = "") -> dict | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidPayloadError(
            f"{where}: '{label or key}' must be an object, got {type(value).__name__}")
    return value


def _money(parent: dict, key: str, where: str, *, currency: str | None = None,
           required: bool = False) -> tuple[Decimal | None, str | None]:
    """``parent[key].gross`` (a TaxedMoney's gross Money) as (amount, upper-case currency).

    (None, None) when it is absent and not required. A currency, when given, must match
    ``currency``: one order is always in one currency, so a mismatch means a broken payload.
    """
    taxed = _object(parent, key, where)
    gross = _object(taxed, "gross", where, f"{key}.gross") if taxed is not None else None
    if gross is None:
        if required:
            raise InvalidPayloadError(f"{where}: '{key}.gross' is missing; the subscription query "
                                      f"must select {key} {{ gross {{ amount currency }} }}")
        return None, None
    value = gross.get("amount")
    try:
        amount = parse_amount(value)
    except ValueError:
        raise InvalidPayloadError(
            f"{where}: '{key}.gross.amount' must be a decimal amount, got {value!r}") from None
    code = gross.get("currency")
    if code is None and currency is not None:
        return amount, currency  # the query did not ask for it: the order's currency
    if not isinstance(code, str) or not _CURRENCY_RE.fullmatch(code.strip()):
        raise InvalidPayloadError(f"{where}: '{key}.gross.currency' must be a 3-letter ISO 4217 "
                                  f"code, got {code!r}")
    code = code.strip().upper()
    if currency is not None and code != currency:
        raise InvalidPayloadError(
            f"{where}: '{key}' is in {code} but the order total is in {currency}")
    return amount, code


def _item_lines(order: dict, where: str, currency: str) -> list[OrderLine]:
    lines = []
    for here, line in objects(order, "lines", where):
        # totalPrice is what the customer pays for the whole line: after discounts, gross of tax.
        amount, _ = _money(line, "totalPrice", here, currency=currency, required=True)
        name, variant = _text(line.get("productName")), _text(line.get("variantName"))
        if name and variant:
            name = f"{name} ({variant})"
        lines.append(OrderLine(kind=LineKind.ITEM, name=name or variant,
                               quantity=parse_quantity(line.get("quantity"), here), amount=amount,
                               sku=_text(line.get("productSku"))))
    return lines


def _status(order: dict, where: str) -> str:
    order_status = order.get("status")
    if isinstance(order_status, str) and order_status.strip().upper() in _CLOSED_ORDER_STATUSES:
        return _CLOSED_ORDER_STATUSES[order_status.strip().upper()]
    charge = order.get("chargeStatus")
    if charge is None:
        return STATUS_PENDING  # not selected by the query: a brand-new order is unpaid
    if not isinstance(charge, str) or not charge.strip():
        raise InvalidPayloadError(
            f"{where}: 'chargeStatus' must be a non-empty string, got {charge!r}")
    # A value newer than this code keeps its own name: no store setting invoices it.
    return _CHARGE_STATUSES.get(charge.strip().upper(), storable(charge).strip().lower())


def _customer(order: dict, where: str) -> Customer:
    billing = _object(order, "billingAddress", where) or {}
    user = _object(order, "user", where) or {}
    country = billing.get("country")
    if country is not None and not isinstance(country, dict):
        raise InvalidPayloadError(f"{where}: 'billingAddress.country' must be an object, "
                                  f"got {type(country).__name__}")
    return Customer(
        id=_text(user.get("id")),  # "" for a guest checkout
        first_name=_text(billing.get("firstName")),
        last_name=_text(billing.get("lastName")),
        email=_text(order.get("userEmail")) or _text(user.get("email")),
        phone=_text(billing.get("phone")),
        country=_text((country or {}).get("code")).upper(),
    )
