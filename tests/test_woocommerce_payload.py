from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InvalidPayloadError
from bridge.mapping import invoice_request_from_order, products_from_order
from bridge.models import CallbackUrls, Customer, InvoiceOptions, LineKind, OrderLine
from bridge.money import quantize
from bridge.stores.woocommerce_payload import order_from_woocommerce

# woocommerce.md §2.4: a realistic order.created body from a KWD store set to 3 decimals, with a
# fixed-cart coupon already inside the line totals and flat-rate shipping.
REALISTIC_KWD = r"""
{
  "id": 1234,
  "parent_id": 0,
  "status": "pending",
  "currency": "KWD",
  "version": "9.9.5",
  "prices_include_tax": false,
  "date_created": "2025-07-01T19:53:10",
  "date_modified": "2025-07-01T19:53:11",
  "discount_total": "1.000",
  "discount_tax": "0.000",
  "shipping_total": "1.500",
  "shipping_tax": "0.000",
  "cart_tax": "0.000",
  "total": "12.500",
  "total_tax": "0.000",
  "customer_id": 17,
  "order_key": "wc_order_Xq2b7LmA9sK3d",
  "billing": {
    "first_name": "Fatima",
    "last_name": "Al-Sabah",
    "company": "",
    "address_1": "Block 3, Street 12, House 7",
    "address_2": "",
    "city": "Salmiya",
    "state": "",
    "postcode": "22003",
    "country": "KW",
    "email": "fatima@example.com",
    "phone": "+96555512345"
  },
  "shipping": {
    "first_name": "Fatima",
    "last_name": "Al-Sabah",
    "company": "",
    "address_1": "Block 3, Street 12, House 7",
    "address_2": "",
    "city": "Salmiya",
    "state": "",
    "postcode": "22003",
    "country": "KW",
    "phone": ""
  },
  "payment_method": "paylink_bridge",
  "payment_method_title": "Pay by link (KNET / card)",
  "transaction_id": "",
  "customer_ip_address": "203.0.113.7",
  "customer_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
  "created_via": "checkout",
  "customer_note": "",
  "date_completed": null,
  "date_paid": null,
  "cart_hash": "7c0e5d7f3a7f4b36c1e0b7f0d2a9e8c1",
  "number": "1234",
  "meta_data": [
    { "id": 9871, "key": "_wc_order_attribution_source_type", "value": "typein" },
    { "id": 9872, "key": "is_vat_exempt", "value": "no" }
  ],
  "line_items": [
    {
      "id": 55,
      "name": "Arabic Coffee 250g",
      "product_id": 101,
      "variation_id": 0,
      "quantity": 2,
      "tax_class": "",
      "subtotal": "9.000",
      "subtotal_tax": "0.000",
      "total": "8.000",
      "total_tax": "0.000",
      "taxes": [],
      "meta_data": [],
      "sku": "COF-250",
      "price": 4,
      "image": { "id": 311, "src": "https://shop.example.com/wp-content/uploads/2025/05/coffee.jpg" },
      "parent_name": null
    },
    {
      "id": 56,
      "name": "Dallah Pot - Gold",
      "product_id": 120,
      "variation_id": 122,
      "quantity": 1,
      "tax_class": "",
      "subtotal": "3.000",
      "subtotal_tax": "0.000",
      "total": "3.000",
      "total_tax": "0.000",
      "taxes": [],
      "meta_data": [
        { "id": 601, "key": "pa_color", "value": "gold", "display_key": "Color", "display_value": "Gold" }
      ],
      "sku": "DAL-G",
      "price": 3,
      "image": { "id": 0, "src": "" },
      "parent_name": "Dallah Pot"
    }
  ],
  "tax_lines": [],
  "shipping_lines": [
    {
      "id": 57,
      "method_title": "Flat rate",
      "method_id": "flat_rate",
      "instance_id": "2",
      "total": "1.500",
      "total_tax": "0.000",
      "taxes": [],
      "meta_data": [
        { "id": 610, "key": "Items", "value": "Arabic Coffee 250g &times; 2, Dallah Pot - Gold &times; 1",
          "display_key": "Items", "display_value": "Arabic Coffee 250g &times; 2, Dallah Pot - Gold &times; 1" }
      ]
    }
  ],
  "fee_lines": [],
  "coupon_lines": [
    {
      "id": 58,
      "code": "welcome1",
      "discount": "1.000",
      "discount_tax": "0.000",
      "meta_data": [],
      "discount_type": "fixed_cart",
      "nominal_amount": 1,
      "free_shipping": false
    }
  ],
  "refunds": [],
  "payment_url": "https://shop.example.com/checkout/order-pay/1234/?pay_for_order=true&key=wc_order_Xq2b7LmA9sK3d",
  "is_editable": true,
  "needs_payment": true,
  "needs_processing": true,
  "date_created_gmt": "2025-07-01T16:53:10",
  "date_modified_gmt": "2025-07-01T16:53:11",
  "date_completed_gmt": null,
  "date_paid_gmt": null,
  "_links": {
    "self": [ { "href": "https://shop.example.com/wp-json/wc/v3/orders/1234" } ],
    "collection": [ { "href": "https://shop.example.com/wp-json/wc/v3/orders" } ],
    "customer": [ { "href": "https://shop.example.com/wp-json/wc/v3/customers/17" } ]
  }
}
"""

# woocommerce-captured.md: the exact 1849-byte body a real WooCommerce 7.9.0 store delivered.
CAPTURED_WC79 = r"""{"id":11,"parent_id":0,"status":"processing","currency":"KWD","version":"7.9.0","prices_include_tax":false,"date_created":"2026-11-23T19:03:24","date_modified":"2026-11-23T19:03:24","discount_total":"0.000","discount_tax":"0.000","shipping_total":"0.000","shipping_tax":"0.000","cart_tax":"0.000","total":"25.000","total_tax":"0.000","customer_id":0,"order_key":"wc_order_wnDky9EYP7Sny","billing":{"first_name":"Smoke","last_name":"Test","company":"","address_1":"","address_2":"","city":"","state":"","postcode":"","country":"KW","email":"smoke@example.com","phone":""},"shipping":{"first_name":"","last_name":"","company":"","address_1":"","address_2":"","city":"","state":"","postcode":"","country":"","phone":""},"payment_method":"cod","payment_method_title":"Cash on delivery","transaction_id":"","customer_ip_address":"","customer_user_agent":"","created_via":"rest-api","customer_note":"","date_completed":null,"date_paid":null,"cart_hash":"","number":"11","meta_data":[],"line_items":[{"id":1,"name":"E2E Product","product_id":10,"variation_id":0,"quantity":2,"tax_class":"","subtotal":"25.000","subtotal_tax":"0.000","total":"25.000","total_tax":"0.000","taxes":[],"meta_data":[],"sku":"E2E-001","price":12.5,"image":{"id":"","src":""},"parent_name":null}],"tax_lines":[],"shipping_lines":[],"fee_lines":[],"coupon_lines":[],"refunds":[],"payment_url":"http:\/\/127.0.0.1:8089\/checkout\/order-pay\/11\/?pay_for_order=true&key=wc_order_wnDky9EYP7Sny","is_editable":false,"needs_payment":false,"needs_processing":true,"date_created_gmt":"2026-11-23T19:03:24","date_modified_gmt":"2026-11-23T19:03:24","date_completed_gmt":null,"date_paid_gmt":null,"currency_symbol":"\u062f.\u0643","_links":{"self":[{"href":"http:\/\/127.0.0.1:8089\/wp-json\/wc\/v3\/orders\/11"}],"collection":[{"href":"http:\/\/127.0.0.1:8089\/wp-json\/wc\/v3\/orders"}]}}"""

URLS = CallbackUrls(return_url="https://bridge.example/r", cancel_url="https://bridge.example/c",
                    notification_url="https://bridge.example/n")


def load(body: str) -> dict:
    return json.loads(body, parse_float=Decimal)


def realistic() -> dict:
    return load(REALISTIC_KWD)


def summary(products: list[dict]) -> list[tuple[str, str, str, int]]:
    return [(p["name"], p["description"], str(p["price"]), p["quantity"]) for p in products]


def test_realistic_kwd_payload() -> None:
    order = order_from_woocommerce(realistic())
    assert order.external_id == "1234"
    assert order.number == "1234"
    assert order.status == "pending"
    assert order.currency == "KWD"
    assert order.total == Decimal("12.500") and str(order.total) == "12.500"
    assert order.discount_total == Decimal("1.000")
    assert order.payment_method == "paylink_bridge"
    assert order.order_key == "wc_order_Xq2b7LmA9sK3d"
    assert order.created_via == "checkout"
    assert order.customer == Customer(id="17", first_name="Fatima", last_name="Al-Sabah",
                                      email="fatima@example.com", phone="+96555512345",
                                      country="KW")
    assert order.lines == (
        OrderLine(LineKind.ITEM, "Arabic Coffee 250g", 2, Decimal("8.000"), "COF-250"),
        OrderLine(LineKind.ITEM, "Dallah Pot - Gold", 1, Decimal("3.000"), "DAL-G"),
        OrderLine(LineKind.SHIPPING, "Flat rate", 1, Decimal("1.500"), ""),
    )
    products = products_from_order(order)
    assert summary(products) == [("Arabic Coffee 250g", "COF-250", "4.000", 2),
                                 ("Dallah Pot - Gold", "DAL-G", "3.000", 1),
                                 ("Flat rate", "Shipping", "1.500", 1)]
    assert sum(p["price"] * p["quantity"] for p in products) == Decimal("12.500")


def test_captured_wc79_payload() -> None:
    order = order_from_woocommerce(load(CAPTURED_WC79))
    assert (order.external_id, order.number, order.status) == ("11", "11", "processing")
    assert order.total == Decimal("25.000")
    assert order.customer == Customer(id="", first_name="Smoke", last_name="Test",
                                      email="smoke@example.com", phone="", country="KW")
    assert order.lines == (OrderLine(LineKind.ITEM, "E2E Product", 2, Decimal("25.000"),
                                     "E2E-001"),)
    request = invoice_request_from_order(order, upay_order_id="s1-11-1", reference_id="11",
                                         options=InvoiceOptions(), urls=URLS)
    assert summary(request["products"]) == [("E2E Product", "E2E-001", "12.500", 2)]
    assert request["order"]["amount"] == Decimal("25.000")
    assert request["customer"] == {"uniqueId": "guest-11", "name": "Smoke Test",
                                   "email": "smoke@example.com", "mobile": ""}


def test_captured_payload_decoded_without_parse_float_still_parses_exactly() -> None:
    order = order_from_woocommerce(json.loads(CAPTURED_WC79))
    assert order.total == Decimal("25.000")


def _with(**changes: object) -> dict:
    payload = realistic()
    payload.update(copy.deepcopy(changes))
    return payload


LINE = {"id": 1, "name": "Thing", "product_id": 1, "variation_id": 0, "quantity": 1,
        "tax_class": "", "subtotal": "1.000", "subtotal_tax": "0.000", "total": "1.000",
        "total_tax": "0.000", "taxes": [], "meta_data": [], "sku": "T-1", "price": 1,
        "image": {"id": 0, "src": ""}, "parent_name": None}


def line(**changes: object) -> dict:
    return {**LINE, **changes}


def shipping_line(title: str, total: str, tax: str = "0.000") -> dict:
    return {"id": 9, "method_title": title, "method_id": "flat_rate", "instance_id": "1",
            "total": total, "total_tax": tax, "taxes": [], "meta_data": []}


def fee_line(name: str, total: str, tax: str = "0.000") -> dict:
    return {"id": 8, "name": name, "tax_class": "", "tax_status": "none", "amount": total,
            "total": total, "total_tax": tax, "taxes": [], "meta_data": []}


@pytest.mark.parametrize("changes, expected", [
    pytest.param(
        dict(total="11.250", fee_lines=[fee_line("Cash on delivery fee", "0.250")],
             line_items=[line(name="Oud", total="11.000", sku="OUD")], shipping_lines=[]),
        [("Oud", "OUD", "11.000", 1), ("Cash on delivery fee", "Fee", "0.250", 1)],
        id="fee"),
    pytest.param(
        dict(total="10.500", fee_lines=[fee_line("Loyalty points", "-2.000")]),
        [("Arabic Coffee 250g", "COF-250", "4.000", 2), ("Dallah Pot - Gold", "DAL-G", "2.500", 1)],
        id="negative-fee-takes-shipping-then-the-last-item"),
    pytest.param(
        dict(total="1.500", discount_total="11.000",
             line_items=[line(name="Arabic Coffee 250g", quantity=2, subtotal="9.000",
                              total="0.000", sku="COF-250")]),
        [("Flat rate", "Shipping", "1.500", 1)],
        id="100-percent-discount-leaves-shipping-only"),
    pytest.param(
        dict(total="10.000", shipping_lines=[],
             line_items=[line(name="Widget", quantity=3, total="10.000", sku="W")]),
        [("Widget \u00d7 3", "W", "10.000", 1)],
        id="three-for-ten-kwd"),
    pytest.param(
        dict(total="12.50", shipping_lines=[shipping_line("Flat rate", "1.50", "0.00")],
             line_items=[line(name="Arabic Coffee 250g", quantity=2, total="8.00",
                              total_tax="0.00", sku="COF-250"),
                         line(name="Dallah Pot - Gold", total="3.00", total_tax="0.00",
                              sku="DAL-G")]),
        [("Arabic Coffee 250g", "COF-250", "4.000", 2), ("Dallah Pot - Gold", "DAL-G", "3.000", 1),
         ("Flat rate", "Shipping", "1.500", 1)],
        id="kwd-store-left-at-2-decimals"),
    pytest.param(
        dict(currency="USD", total="17.250",
             line_items=[line(name="Tea", quantity=2, total="10.000", total_tax="1.500",
                              sku="T")],
             shipping_lines=[shipping_line("UPS", "5.000", "0.750")],
             tax_lines=[{"id": 3, "rate_code": "US-CA-TAX-1", "rate_id": 1, "label": "Tax",
                         "compound": False, "tax_total": "1.500",
                         "shipping_tax_total": "0.750", "meta_data": []}]),
        [("Tea", "T", "5.75", 2), ("UPS", "Shipping", "5.75", 1)],
        id="usd-with-3-decimal-strings-and-tax-lines"),
    pytest.param(
        dict(currency="JPY", total="2300",
             line_items=[line(name="Matcha", quantity=3, total="1500", total_tax="0",
                              sku="M")],
             shipping_lines=[shipping_line("Yamato", "800", "0")]),
        [("Matcha", "M", "500", 3), ("Yamato", "Shipping", "800", 1)],
        id="jpy"),
    pytest.param(
        dict(line_items=[line(name="Dallah Pot &ndash; Gold <small>Large</small>", quantity=2,
                              total="11.000", sku=None)]),
        [("Dallah Pot \u2013 Gold Large", "Item", "5.500", 2), ("Flat rate", "Shipping", "1.500", 1)],
        id="html-entities-and-null-sku"),
])
def test_payload_to_products(changes: dict, expected: list[tuple]) -> None:
    order = order_from_woocommerce(_with(**changes))
    products = products_from_order(order)
    assert summary(products) == expected
    assert sum(p["price"] * p["quantity"] for p in products) == quantize(order.total,
                                                                         order.currency)


def test_line_amounts_include_line_tax() -> None:
    order = order_from_woocommerce(_with(
        line_items=[line(total="10.000", total_tax="0.500")],
        shipping_lines=[shipping_line("Flat", "1.000", "0.050")],
        fee_lines=[fee_line("Wrap", "0.200", "0.010")]))
    assert [line.amount for line in order.lines] == [Decimal("10.500"), Decimal("1.050"),
                                                     Decimal("0.210")]
    assert [line.kind for line in order.lines] == [LineKind.ITEM, LineKind.SHIPPING,
                                                   LineKind.FEE]


def test_line_total_and_tax_are_added_exactly() -> None:
    # 28 digits of the default context would round the sum to 1.0005, then to 1.001 KWD.
    order = order_from_woocommerce(_with(
        total="5.000", line_items=[line(total="1.00049999999999999999999999999999",
                                        total_tax="0")]))
    assert order.lines[0].amount == Decimal("1.00049999999999999999999999999999")
    assert quantize(order.lines[0].amount, "KWD") == Decimal("1.000")
    # A PHP float's leftover in the tax is kept, not rounded into the total.
    order = order_from_woocommerce(_with(
        line_items=[line(total="9.9995", total_tax=1.7763568394002505e-15)]))
    assert order.lines[0].amount == Decimal("9.9995000000000017763568394002505")


def test_nulls_and_missing_optional_fields_are_tolerated() -> None:
    payload = _with(
        number=None, customer_id=None, billing={"first_name": None, "last_name": "Al-Sabah",
                                                "email": None, "phone": None, "country": None},
        line_items=[line(sku=None, total_tax=None, name=None)],
        shipping_lines=None, payment_method=None, order_key=None, discount_total=None,
        total="1.000")
    del payload["fee_lines"], payload["created_via"]
    order = order_from_woocommerce(payload)
    assert order.number == "1234"
    assert order.customer == Customer(last_name="Al-Sabah")
    assert order.lines == (OrderLine(LineKind.ITEM, "", 1, Decimal("1.000"), ""),)
    assert (order.payment_method, order.order_key, order.created_via) == ("", "", "")
    assert order.discount_total == Decimal("0")


def test_billing_null_gives_an_empty_customer() -> None:
    order = order_from_woocommerce(_with(billing=None, customer_id=0))
    assert order.customer == Customer()


def test_shipping_and_fee_names_default_when_missing() -> None:
    order = order_from_woocommerce(_with(
        shipping_lines=[{**shipping_line("", "1.500"), "method_title": None}],
        fee_lines=[fee_line("", "0.500")], total="13.000"))
    assert [line.name for line in order.lines[-2:]] == ["Shipping", "Fee"]


@pytest.mark.parametrize("number, expected", [
    ("INV-1001", "INV-1001"), (1001, "1001"), ("", "1234"), (None, "1234"), (True, "1234"),
])
def test_order_number(number: object, expected: str) -> None:
    assert order_from_woocommerce(_with(number=number)).number == expected


def test_unknown_keys_are_ignored() -> None:
    payload = _with(currency_symbol="\u062f.\u0643", cogs_total_value=Decimal("1.5"),
                    future_field={"a": [1, 2]}, currency="kwd")
    payload["line_items"][0]["brand_new"] = None
    order = order_from_woocommerce(payload)
    assert order.currency == "KWD"
    assert order.total == Decimal("12.500")


def test_integral_decimal_quantity_is_accepted() -> None:
    order = order_from_woocommerce(_with(line_items=[line(quantity=Decimal("2.0"))],
                                         total="1.000", shipping_lines=[]))
    assert order.lines[0].quantity == 2


# --- rejections -------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [None, [], [realistic()], "order", 1234, 12.5, True, b"{}"])
def test_rejects_non_objects(payload: object) -> None:
    with pytest.raises(InvalidPayloadError, match="JSON object"):
        order_from_woocommerce(payload)


def test_rejects_the_error_payload_woocommerce_signs_when_the_owner_lost_access() -> None:
    payload = {"code": "woocommerce_rest_cannot_view",
               "message": "Sorry, you cannot view this resource.", "data": {"status": 401}}
    with pytest.raises(InvalidPayloadError) as info:
        order_from_woocommerce(payload)
    text = str(info.value)
    assert "error instead of an order" in text
    assert "woocommerce_rest_cannot_view" in text
    assert "Sorry, you cannot view this resource." in text
    assert "401" in text


@pytest.mark.parametrize("payload", [
    {"code": "rest_no_route", "message": "No route was found", "data": None},
    {"code": "x"},
])
def test_rejects_other_error_shapes(payload: dict) -> None:
    with pytest.raises(InvalidPayloadError, match="error instead of an order"):
        order_from_woocommerce(payload)


def _without(key: str) -> dict:
    payload = realistic()
    del payload[key]
    return payload


@pytest.mark.parametrize("payload, message", [
    ({"id": 1234}, "status"),  # the body of a deleted event
    ({}, "'id'"),
    (_without("id"), "'id'"),
    (_with(id="1234"), "'id'"),
    (_with(id=0), "'id'"),
    (_with(id=-5), "'id'"),
    (_with(id=True), "'id'"),
    (_with(id=Decimal("1234.5")), "'id'"),
    (_with(id=None), "'id'"),
    (_without("status"), "'status'"),
    (_with(status=""), "'status'"),
    (_with(status=3), "'status'"),
    (_without("currency"), "'currency'"),
    (_with(currency="KW"), "'currency'"),
    (_with(currency="KWDX"), "'currency'"),
    (_with(currency="K1D"), "'currency'"),
    (_with(currency=None), "'currency'"),
    (_with(currency=414), "'currency'"),
    (_without("total"), "'total'"),
    (_with(total=None), "'total'"),
    (_with(total=""), "'total'"),
    (_with(total="12,500"), "'total'"),
    (_with(total="NaN"), "'total'"),
    (_with(total=True), "'total'"),
    (_with(total=["12.500"]), "'total'"),
    (_with(discount_total="lots"), "'discount_total'"),
    (_with(line_items="none"), "'line_items' must be a list"),
    (_with(line_items=[["Coffee", 1]]), r"line_items\[0\] must be an object"),
    (_with(line_items=[line(quantity=0)]), "'quantity'"),
    (_with(line_items=[line(quantity=-1)]), "'quantity'"),
    (_with(line_items=[line(quantity="2")]), "'quantity'"),
    (_with(line_items=[line(quantity=None)]), "'quantity'"),
    (_with(line_items=[line(quantity=True)]), "'quantity'"),
    (_with(line_items=[line(quantity=Decimal("1.5"))]), "'quantity'"),
    (_with(line_items=[line(quantity=10 ** 9 + 1)]), "'quantity' must be an integer from 1 to"),
    (_with(line_items=[line(quantity=Decimal("1e5000"))]), "'quantity'"),
    (_with(line_items=[line(quantity=Decimal("1e100000000"))]), "'quantity'"),
    (_with(line_items=[line(total="1", total_tax=Decimal("1e-99999999999"))]),
     r"'total' plus 'total_tax': amounts too far apart"),
    (_with(line_items=[line(total=None)]), "'total'"),
    (_with(line_items=[line(total="free")]), "'total'"),
    (_with(line_items=[line(total_tax="n/a")]), "'total_tax'"),
    (_with(shipping_lines=[shipping_line("Flat", "one")]), r"shipping_lines\[0\]"),
    (_with(fee_lines=[fee_line("Fee", "")]), r"fee_lines\[0\]"),
    (_with(billing=["Fatima"]), "'billing'"),
])
def test_rejects_malformed_orders(payload: dict, message: str) -> None:
    with pytest.raises(InvalidPayloadError, match=message):
        order_from_woocommerce(payload)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15)

_KEYS = st.sampled_from(["id", "status", "currency", "total", "number", "billing",
                         "customer_id", "line_items", "shipping_lines", "fee_lines",
                         "discount_total", "code"])


@given(_JSON)
def test_arbitrary_json_is_an_order_or_invalid_payload(payload: object) -> None:
    try:
        order_from_woocommerce(payload)
    except InvalidPayloadError:
        pass


@given(st.dictionaries(_KEYS, _JSON, max_size=4))
def test_corrupted_realistic_payload_is_an_order_or_invalid_payload(changes: dict) -> None:
    payload = _with(**changes)
    try:
        order = order_from_woocommerce(payload)
    except InvalidPayloadError:
        return
    assert order.external_id == str(payload["id"])
