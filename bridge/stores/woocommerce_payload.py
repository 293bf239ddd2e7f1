"""Parse a WooCommerce REST v3 order (the ``order.created`` webhook body) into an Order.

The body is expected already JSON-decoded with ``parse_float=Decimal``. Money fields are strings
formatted with the store's global decimals setting; they are parsed exactly and left unrounded
(the mapping rounds per currency).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn

from bridge.errors import InvalidPayloadError
from bridge.mapping import clean_name
from bridge.models import Customer, LineKind, Order, OrderLine
from bridge.money import add_exact, parse_amount
from bridge.stores.payload import MAX_QUANTITY, checked_objects, storable, storable_id
from bridge.stores.payload import quantity as parse_quantity

_ZERO = Decimal("0")


def order_from_woocommerce(payload: object) -> Order:
    if not isinstance(payload, dict):
        raise InvalidPayloadError(
            f"WooCommerce order payload must be a JSON object, got {type(payload).__name__}")
    if "code" in payload:
        # When the webhook's owner was deleted or lost access, WooCommerce delivers its REST
        # error object instead of the order, correctly signed and with topic order.created.
        raise InvalidPayloadError(_error_payload_message(payload))

    order_id = payload.get("id")
    if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id <= 0:
        raise InvalidPayloadError(f"order 'id' must be a positive integer, got {order_id!r}")
    where = f"order {order_id}"
    status = payload.get("status")
    if not isinstance(status, str) or not status.strip():
        raise InvalidPayloadError(f"{where}: 'status' must be a non-empty string, got {status!r}")
    status = storable_id(status, where, "status")
    currency = payload.get("currency")
    if not isinstance(currency, str) or not _is_currency_code(currency.strip()):
        raise InvalidPayloadError(f"{where}: 'currency' must be a 3-letter ISO 4217 code, "
                                  f"got {currency!r}")
    total = _money(payload, "total", where)
    discount_total = _money(payload, "discount_total", where, default=_ZERO)

    number = payload.get("number")
    if isinstance(number, bool) or not isinstance(number, (str, int)) or not str(number).strip():
        number = order_id  # plugins may blank it; the id is what WooCommerce shows then
    number = storable_id(str(number), where, "number")
    lines = (
        _lines(payload, "line_items", where, LineKind.ITEM)
        + _lines(payload, "shipping_lines", where, LineKind.SHIPPING)
        + _lines(payload, "fee_lines", where, LineKind.FEE)
    )
    return Order(
        external_id=str(order_id),
        number=str(number).strip(),
        status=status.strip(),
        currency=currency.strip().upper(),
        total=total,
        customer=_customer(payload, where),
        lines=tuple(lines),
        discount_total=discount_total,
        payment_method=_text(payload.get("payment_method")),
        order_key=_text(payload.get("order_key")),
        created_via=_text(payload.get("created_via")),
    )


def _error_payload_message(payload: dict) -> str:
    data = payload.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    message = f"WooCommerce sent an error instead of an order: {payload.get('code')!s}"
    if payload.get("message"):
        message += f": {payload.get('message')!s}"
    if status is not None:
        message += f" (HTTP status {status!s})"
    return message + "; the webhook's owner may have been deleted or lost access to orders"


def _is_currency_code(text: str) -> bool:
    # Three ASCII letters, as the regex [A-Za-z]{3} would say, without running one per order.
    return len(text) == 3 and text.isascii() and text.isalpha()


def _text(value: Any) -> str:
    # WooCommerce sends null for some strings (billing.email, sku of a deleted product).
    return storable(value).strip() if isinstance(value, str) else ""


def _money(obj: dict, key: str, where: str, default: Decimal | None = None) -> Decimal:
    value = obj.get(key)
    if value is None and default is not None:
        return default
    try:
        return parse_amount(value)
    except ValueError:
        raise InvalidPayloadError(
            f"{where}: '{key}' must be a decimal amount, got {value!r}") from None


def _lines(payload: dict, key: str, where: str, kind: LineKind) -> list[OrderLine]:
    lines = []
    # Each line's place ("order 7 line_items[2]") is written out only for an error message.
    for index, item in enumerate(checked_objects(payload, key, where)):
        # Line totals are after discounts and exclude tax, whatever prices_include_tax says.
        try:
            total = parse_amount(item.get("total"))
            tax = item.get("total_tax")
            tax = _ZERO if tax is None else parse_amount(tax)
            # An untaxed line (the usual case) has nothing to add.
            amount = add_exact(total, tax) if tax else add_exact(total)
        except ValueError:
            _line_amount_error(item, f"{where} {key}[{index}]")
        if kind is LineKind.ITEM:
            value = item.get("quantity")
            # A count as JSON gives it; anything else is checked and explained by quantity().
            quantity = value if type(value) is int and 1 <= value <= MAX_QUANTITY else \
                parse_quantity(value, f"{where} {key}[{index}]")
            name, sku = _raw_name(item, "name"), _text(item.get("sku"))
        elif kind is LineKind.SHIPPING:
            name, quantity, sku = _raw_name(item, "method_title") or "Shipping", 1, ""
        else:
            name, quantity, sku = _raw_name(item, "name") or "Fee", 1, ""
        lines.append(OrderLine(kind, name, quantity, amount, sku))
    return lines


def _line_amount_error(item: dict, here: str) -> NoReturn:
    """The error for a line whose amounts did not read: which one, and why."""
    total = _money(item, "total", here)
    tax = _money(item, "total_tax", here, default=_ZERO)
    try:
        add_exact(total, tax)
    except ValueError as exc:
        raise InvalidPayloadError(f"{here}: 'total' plus 'total_tax': {exc}") from None
    raise AssertionError("unreachable: the amounts read the second time")  # pragma: no cover


def _raw_name(item: dict, key: str) -> str:
    value = item.get(key)
    return clean_name(value) if isinstance(value, str) else ""


def _customer(payload: dict, where: str) -> Customer:
    billing = payload.get("billing")
    if billing is None:
        billing = {}
    if not isinstance(billing, dict):
        raise InvalidPayloadError(f"{where}: 'billing' must be an object")
    customer_id = payload.get("customer_id")
    if isinstance(customer_id, bool) or not isinstance(customer_id, (int, str)):
        customer_id = 0
    customer_text = storable(str(customer_id)).strip()
    return Customer(
        id="" if customer_text in ("", "0") else customer_text,  # 0 means a guest
        first_name=clean_name(_text(billing.get("first_name"))),
        last_name=clean_name(_text(billing.get("last_name"))),
        email=_text(billing.get("email")),
        phone=_text(billing.get("phone")),
        country=_text(billing.get("country")).upper(),
    )
