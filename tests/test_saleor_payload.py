from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from bridge.errors import InvalidPayloadError
from bridge.mapping import invoice_request_from_order
from bridge.models import CallbackUrls, Customer, InvoiceOptions, LineKind, OrderLine
from bridge.stores.saleor_payload import order_from_saleor

# saleor.md §3.3: the ORDER_CREATED subscription payload example, byte for byte.
EXAMPLE_USD = r"""{"issuedAt": "2026-08-21T10:15:30.123456+00:00", "version": "3.21.69", "order": {"id": "T3JkZXI6M2E5ZThmMWMtNGIxZS00ZjYzLTlkMGEtMmE3ZjFjNWU2YjEw", "number": "1042", "created": "2026-08-21T10:15:29.871002+00:00", "userEmail": "jane@example.com", "languageCodeEnum": "EN", "channel": {"slug": "default-channel", "currencyCode": "USD"}, "total": {"gross": {"amount": 37.5, "currency": "USD"}, "net": {"amount": 30.49, "currency": "USD"}}, "lines": [{"id": "T3JkZXJMaW5lOjdkMmM0YTkwLTFmM2UtNGI4YS1hNmMyLTBlOWI1ZDNmMWEyNA==", "productName": "Apple Juice", "variantName": "1l", "productSku": "JUICE-APPLE-1L", "quantity": 3, "unitPrice": {"gross": {"amount": 12.5, "currency": "USD"}}, "totalPrice": {"gross": {"amount": 37.5, "currency": "USD"}}}], "billingAddress": {"firstName": "Jane", "lastName": "Doe", "companyName": "", "streetAddress1": "1 Main St", "streetAddress2": "", "city": "SPRINGFIELD", "postalCode": "12345", "countryArea": "IL", "country": {"code": "US"}, "phone": "+12125550100"}}}"""  # noqa: E501


def kwd_order() -> dict:
    """A KWD order as Saleor serialises it (json.dumps defaults, 3-decimal floats), with
    shipping, a registered user, the charge status and the full-order query's extra fields."""
    body = {
        "issuedAt": "2026-08-21T11:00:00.000001+00:00",
        "version": "3.21.69",
        "order": {
            "id": "T3JkZXI6MGQ1YjZlNjEtOGU5Yi00ZjNiLWE4ZjUtOWI3YjQzNWYwYzE5",
            "number": "2077",
            "created": "2026-08-21T10:59:59.5+00:00",
            "status": "UNFULFILLED",
            "chargeStatus": "NONE",
            "userEmail": "fatima@example.com",
            "languageCodeEnum": "AR",
            "channel": {"slug": "kuwait", "currencyCode": "KWD"},
            "total": {"gross": {"amount": 13.845, "currency": "KWD"}},
            "shippingPrice": {"gross": {"amount": 1.5, "currency": "KWD"}},
            "lines": [
                {"id": "T3JkZXJMaW5lOjE=", "productName": "Arabic Coffee 250g",
                 "variantName": "", "productSku": "COF-250", "quantity": 2,
                 "unitPrice": {"gross": {"amount": 4.115, "currency": "KWD"}},
                 "totalPrice": {"gross": {"amount": 8.23, "currency": "KWD"}}},
                {"id": "T3JkZXJMaW5lOjI=", "productName": "Dallah Pot",
                 "variantName": "Gold", "productSku": None, "quantity": 1,
                 "unitPrice": {"gross": {"amount": 4.115, "currency": "KWD"}},
                 "totalPrice": {"gross": {"amount": 4.115, "currency": "KWD"}}},
            ],
            "billingAddress": {"firstName": "Fatima", "lastName": "Al-Sabah",
                               "phone": "+96555512345", "country": {"code": "kw"}},
            "user": {"id": "VXNlcjoxNw==", "email": "fatima.account@example.com"},
            "metadata": [], "someFutureField": {"x": 1},
        },
    }
    return load(json.dumps(body))


URLS = CallbackUrls(return_url="https://bridge.example/r", cancel_url="https://bridge.example/c",
                    notification_url="https://bridge.example/n")


def load(body: str) -> dict:
    return json.loads(body, parse_float=Decimal)


def example() -> dict:
    return load(EXAMPLE_USD)


def test_saleor_md_example_payload() -> None:
    order = order_from_saleor(example())
    assert order.external_id == "T3JkZXI6M2E5ZThmMWMtNGIxZS00ZjYzLTlkMGEtMmE3ZjFjNWU2YjEw"
    assert order.number == "1042"
    assert order.status == "pending"  # no chargeStatus selected: a new order is unpaid
    assert order.currency == "USD"
    assert order.total == Decimal("37.5")
    assert order.payment_method == ""
    assert order.lines == (
        OrderLine(LineKind.ITEM, "Apple Juice (1l)", 3, Decimal("37.5"), "JUICE-APPLE-1L"),
    )
    assert order.customer == Customer(id="", first_name="Jane", last_name="Doe",
                                      email="jane@example.com", phone="+12125550100",
                                      country="US")


def test_example_maps_to_an_invoice_request() -> None:
    order = order_from_saleor(example())
    request = invoice_request_from_order(order, upay_order_id="s1-1042", reference_id="r-1042",
                                         options=InvoiceOptions(plugin_src="saleor"), urls=URLS)
    assert request["order"]["amount"] == Decimal("37.50")
    assert request["order"]["currency"] == "USD"
    assert request["order"]["reference"] == "1042"
    assert sum(p["price"] * p["quantity"] for p in request["products"]) == Decimal("37.50")


def test_kwd_three_decimal_floats_arrive_exact() -> None:
    order = order_from_saleor(kwd_order())
    assert order.currency == "KWD"
    assert order.total == Decimal("13.845") and str(order.total) == "13.845"
    assert order.status == "pending"
    assert order.lines == (
        OrderLine(LineKind.ITEM, "Arabic Coffee 250g", 2, Decimal("8.23"), "COF-250"),
        OrderLine(LineKind.ITEM, "Dallah Pot (Gold)", 1, Decimal("4.115"), ""),
        OrderLine(LineKind.SHIPPING, "Shipping", 1, Decimal("1.5"), ""),
    )
    assert sum(line.amount for line in order.lines) == order.total
    # userEmail (the order's) wins over the account's; the customer id is the user's Relay id.
    assert order.customer == Customer(id="VXNlcjoxNw==", first_name="Fatima",
                                      last_name="Al-Sabah", email="fatima@example.com",
                                      phone="+96555512345", country="KW")


def test_kwd_parsed_without_parse_float_still_exact() -> None:
    # A caller that forgot parse_float=Decimal: str(float) is the shortest round-trip repr.
    order = order_from_saleor(json.loads(json.dumps(kwd_order(), default=float)))
    assert order.total == Decimal("13.845")
    assert [line.amount for line in order.lines] == [Decimal("8.23"), Decimal("4.115"),
                                                      Decimal("1.5")]


@pytest.mark.parametrize("amount", [12, "12.345", Decimal("12.345")])
def test_amount_as_int_or_string(amount: object) -> None:
    payload = example()
    payload["order"]["total"]["gross"]["amount"] = amount
    assert order_from_saleor(payload).total == Decimal(str(amount))


@pytest.mark.parametrize("shipping", [None, {"gross": {"amount": 0.0, "currency": "USD"}},
                                      {"gross": {"amount": 0, "currency": "USD"}}])
def test_no_shipping_line_when_free_or_absent(shipping: object) -> None:
    payload = example()
    payload["order"]["shippingPrice"] = load(json.dumps(shipping))
    lines = order_from_saleor(payload).lines
    assert [line.kind for line in lines] == [LineKind.ITEM]


def test_shipping_line() -> None:
    payload = example()
    payload["order"]["shippingPrice"] = load('{"gross": {"amount": 5.25, "currency": "usd"}}')
    assert order_from_saleor(payload).lines[-1] == OrderLine(LineKind.SHIPPING, "Shipping", 1,
                                                             Decimal("5.25"))


def test_no_billing_address() -> None:
    payload = example()
    payload["order"]["billingAddress"] = None
    payload["order"]["userEmail"] = None
    payload["order"]["user"] = {"id": "VXNlcjo1", "email": "acct@example.com"}
    assert order_from_saleor(payload).customer == Customer(id="VXNlcjo1",
                                                           email="acct@example.com")


def test_guest_without_anything() -> None:
    payload = example()
    for key in ("billingAddress", "userEmail"):
        del payload["order"][key]
    payload["order"]["user"] = None
    assert order_from_saleor(payload).customer == Customer()


def test_nulls_tolerated_in_address_and_lines() -> None:
    payload = example()
    payload["order"]["billingAddress"] = {"firstName": None, "lastName": None, "phone": None,
                                          "country": None}
    line = payload["order"]["lines"][0]
    line["variantName"] = None
    line["productSku"] = None
    line["totalPrice"]["gross"]["currency"] = None  # not selected: the order's currency
    order = order_from_saleor(payload)
    assert order.customer == Customer(email="jane@example.com")
    assert order.lines == (OrderLine(LineKind.ITEM, "Apple Juice", 3, Decimal("37.5"), ""),)


def test_no_lines() -> None:
    payload = example()
    payload["order"]["lines"] = []
    assert order_from_saleor(payload).lines == ()
    del payload["order"]["lines"]
    assert order_from_saleor(payload).lines == ()


@pytest.mark.parametrize(("charge", "order_status", "expected"), [
    ("NONE", "UNFULFILLED", "pending"),
    ("PARTIAL", "UNCONFIRMED", "pending"),
    (None, "UNFULFILLED", "pending"),
    ("FULL", "UNFULFILLED", "paid"),
    ("OVERCHARGED", "FULFILLED", "paid"),
    ("full", None, "paid"),
    ("NONE", "CANCELED", "cancelled"),
    ("NONE", "DRAFT", "draft"),
    ("SOMETHING_NEW", "UNFULFILLED", "something_new"),
])
def test_status_from_charge_status(charge: object, order_status: object, expected: str) -> None:
    payload = example()
    payload["order"]["chargeStatus"] = charge
    payload["order"]["status"] = order_status
    assert order_from_saleor(payload).status == expected


def test_number_as_int_is_accepted() -> None:
    payload = example()
    payload["order"]["number"] = 1042
    assert order_from_saleor(payload).number == "1042"


def test_errors_with_order_are_tolerated() -> None:
    payload = example()
    payload["errors"] = [{"message": "Cannot resolve 'metadata'", "path": ["order", "metadata"]}]
    assert order_from_saleor(payload).number == "1042"


@pytest.mark.parametrize("order", [None, "missing"])
def test_errors_without_order_name_the_first_error(order: object) -> None:
    payload = {"issuedAt": "2026-08-21T10:15:30+00:00",
               "errors": [{"message": "You need one of the following permissions: MANAGE_ORDERS",
                           "locations": [{"line": 1, "column": 60}], "path": ["event", "order"]},
                          {"message": "second"}]}
    if order is None:
        payload["order"] = None
    with pytest.raises(InvalidPayloadError, match="could not resolve the order: You need one of "
                                                  "the following permissions: MANAGE_ORDERS$"):
        order_from_saleor(payload)


def test_unusual_errors_shape() -> None:
    with pytest.raises(InvalidPayloadError, match="could not resolve the order: boom"):
        order_from_saleor({"errors": ["boom"]})


def mutate(path: str, value: object) -> dict:
    payload = example()
    *parents, last = path.split(".")
    target = payload
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    key = int(last) if isinstance(target, list) else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return payload


DELETE = object()

INVALID = [
    ("order", DELETE, "has no 'order'"),
    ("order", [], "'order' must be an object, got list"),
    ("order.id", DELETE, "'id' must be a non-empty string, got None"),
    ("order.id", 42, "'id' must be a non-empty string, got 42"),
    ("order.id", "  ", "'id' must be a non-empty string"),
    ("order.number", None, "'number' must be a non-empty string, got None"),
    ("order.number", True, "'number' must be a non-empty string, got True"),
    ("order.number", "", "'number' must be a non-empty string"),
    ("order.total", DELETE, "'total.gross' is missing"),
    ("order.total", {"net": {"amount": 1, "currency": "USD"}}, "'total.gross' is missing"),
    ("order.total", "37.5", "'total' must be an object, got str"),
    ("order.total.gross", [37.5], "'total.gross' must be an object, got list"),
    ("order.total.gross.amount", None, "'total.gross.amount' must be a decimal amount, got None"),
    ("order.total.gross.amount", "37,50", "'total.gross.amount' must be a decimal amount"),
    ("order.total.gross.amount", True, "'total.gross.amount' must be a decimal amount"),
    ("order.total.gross.amount", "NaN", "'total.gross.amount' must be a decimal amount"),
    ("order.total.gross.amount", {"value": 1}, "'total.gross.amount' must be a decimal amount"),
    ("order.total.gross.currency", None, "'total.gross.currency' must be a 3-letter"),
    ("order.total.gross.currency", "US", "'total.gross.currency' must be a 3-letter"),
    ("order.total.gross.currency", "USDX", "'total.gross.currency' must be a 3-letter"),
    ("order.total.gross.currency", "U$D", "'total.gross.currency' must be a 3-letter"),
    ("order.total.gross.currency", 840, "'total.gross.currency' must be a 3-letter"),
    ("order.lines", {"0": {}}, "'lines' must be a list, got dict"),
    ("order.lines.0", "Apple Juice", r"lines\[0\] must be an object, got str"),
    ("order.lines.0.quantity", -1, r"lines\[0\]: 'quantity' must be an integer from 1 to 1000000000, got -1"),
    ("order.lines.0.quantity", 0, r"lines\[0\]: 'quantity' must be an integer from 1 to 1000000000, got 0"),
    ("order.lines.0.quantity", Decimal("1.5"), "'quantity' must be an integer from 1 to 1000000000"),
    ("order.lines.0.quantity", "3", "'quantity' must be an integer from 1 to 1000000000"),
    ("order.lines.0.quantity", None, "'quantity' must be an integer from 1 to 1000000000"),
    ("order.lines.0.quantity", 10 ** 9 + 1, "'quantity' must be an integer from 1 to 1000000000"),
    # A small Decimal whose int() would run for minutes: refused by its size first.
    ("order.lines.0.quantity", Decimal("1e100000000"), "'quantity' must be an integer from 1"),
    ("order.lines.0.totalPrice", DELETE, r"lines\[0\]: 'totalPrice.gross' is missing"),
    ("order.lines.0.totalPrice.gross.amount", "x",
     r"lines\[0\]: 'totalPrice.gross.amount' must be a decimal amount"),
    ("order.lines.0.totalPrice.gross.currency", "KWD",
     "'totalPrice' is in KWD but the order total is in USD"),
    ("order.shippingPrice", {"gross": {"amount": "free", "currency": "USD"}},
     "'shippingPrice.gross.amount' must be a decimal amount"),
    ("order.shippingPrice", {"gross": {"amount": 1, "currency": "EUR"}},
     "'shippingPrice' is in EUR but the order total is in USD"),
    ("order.billingAddress", "1 Main St", "'billingAddress' must be an object, got str"),
    ("order.billingAddress.country", "US", "'billingAddress.country' must be an object"),
    ("order.user", "VXNlcjox", "'user' must be an object, got str"),
    ("order.chargeStatus", 1, "'chargeStatus' must be a non-empty string, got 1"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID,
                         ids=[f"{p}={v!r}" for p, v, _ in INVALID])
def test_invalid_payloads(path: str, value: object, message: str) -> None:
    with pytest.raises(InvalidPayloadError, match=message):
        order_from_saleor(mutate(path, value))


@pytest.mark.parametrize("payload", [None, [], "order", 42, [json.loads(EXAMPLE_USD)]])
def test_not_an_object(payload: object) -> None:
    with pytest.raises(InvalidPayloadError, match="must be a JSON object, got"):
        order_from_saleor(payload)


def test_legacy_array_payload_is_refused() -> None:
    # A webhook created without a query gets the legacy body: a one-element array (§3.3).
    with pytest.raises(InvalidPayloadError, match="got list"):
        order_from_saleor([{"type": "Order", "id": "T3JkZXI6", "number": 1042}])


def test_errors_name_the_order() -> None:
    payload = mutate("order.lines.0.quantity", -2)
    with pytest.raises(InvalidPayloadError,
                       match=r"^order T3JkZXI6M2E5ZThmMWMtNGIxZS00ZjYzLTlkMGEtMmE3ZjFjNWU2YjEw "
                             r"lines\[0\]: "):
        order_from_saleor(payload)


def test_input_is_not_modified() -> None:
    payload = kwd_order()
    before = copy.deepcopy(payload)
    order_from_saleor(payload)
    assert payload == before
