"""What UPay sends back: the server notification and the customer's browser (return/cancel).

Neither is trusted. The notification is unsigned (upay-api.md §6.2) and the browser's parameters
can be typed by anyone: both only make a worker ask UPay's status API (``bridge.payments``). The
return and cancel pages read UPay's parameters despite the double-``?`` quirk, then wait for the
confirmed status and send the customer back to the store.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify, render_template_string, request

from ..app import runtime
from ..errors import UnknownStoreError
from ..registry import StoreRecord
from ..stores import adapter_for
from ..upay import redirect_fields

bp = Blueprint("upay_callbacks", __name__, url_prefix="/upay")

# The fields UPay sends (upay-api.md §6.1); anything else is dropped, and values are capped, so
# an unauthenticated caller cannot make the bridge store arbitrary data.
FIELDS = ("payment_id", "result", "post_date", "tran_id", "ref", "track_id", "auth", "order_id",
          "requested_order_id", "refund_order_id", "payment_type", "payment_method", "invoice_id",
          "transaction_date", "receipt_id", "trn_udf")


def _known(fields: Any) -> dict[str, str]:
    if not isinstance(fields, dict):
        return {}
    # NUL bytes are dropped: PostgreSQL's text cannot hold them, and no id UPay sends has one.
    # A lone surrogate (JSON's "\ud800") cannot be encoded for the database or a URL: "?".
    return {k: _clean(str(fields[k]))[:200] for k in FIELDS
            if k in fields and fields[k] is not None}


def _clean(value: str) -> str:
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _token(token: str) -> str:
    return token.replace("\x00", "")[:40]


def _store(store_id: str) -> StoreRecord:
    record = runtime().registry.find(store_id[:32])
    if record is None:
        raise UnknownStoreError(f"no store with id {store_id[:32]!r}")
    return record


@bp.post("/notify/<store_id>")
def notify(store_id: str) -> Any:
    record = _store(store_id)
    if request.is_json:
        fields = _known(request.get_json(silent=True))
    else:
        fields = _known(request.form.to_dict() or request.args.to_dict())
    runtime().payments.on_notification(record, fields)
    # UPay records our answer as notify_url_response (upay-api.md §5.2). The same answer for a
    # notification that matched nothing: a forger learns nothing from it.
    return jsonify({"success": True, "message": "Success"}), 200


PAGE = """<!doctype html>
<html lang="{{ lang }}" dir="{{ 'rtl' if lang == 'ar' else 'ltr' }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ t.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}
#status{font-size:1.1rem}</style></head>
<body><h1>{{ t.title }}</h1><p id="status">{{ t.text }}</p>
{% if link %}<p><a id="back" href="{{ link }}">{{ t.link }}</a></p>{% endif %}
{% if poll %}<script>
(function () {
  var url = {{ poll | tojson }}, started = Date.now(), el = document.getElementById("status");
  var texts = {{ t | tojson }};
  function check() {
    fetch(url, {headers: {"Accept": "application/json"}}).then(function (r) { return r.json(); })
      .then(function (s) {
        if (s.state === "paid" && s.redirect) { el.textContent = texts.paid; window.location.href = s.redirect; return; }
        if (s.state === "review") { el.textContent = texts.review; return; }
        if (Date.now() - started > 120000) { el.textContent = texts.slow; return; }
        setTimeout(check, 2000);
      }).catch(function () { setTimeout(check, 4000); });
  }
  setTimeout(check, 1000);
})();
</script>{% endif %}
</body></html>"""

TEXTS = {
    ("return", "en"): dict(
        title="Thank you", text="We are confirming your payment with UPayments…",
        paid="Payment confirmed. Taking you back to the store…",
        review="We received your payment; the store will contact you about your order.",
        slow="This is taking longer than usual. Your order will be updated as soon as UPayments "
             "confirms the payment; you can close this page.", link="Back to the store"),
    ("return", "ar"): dict(
        title="شكراً لك", text="نتحقق من دفعتك لدى يو باي…",
        paid="تم تأكيد الدفع. نعيدك إلى المتجر…",
        review="استلمنا دفعتك؛ سيتواصل معك المتجر بشأن طلبك.",
        slow="يستغرق التحقق وقتاً أطول من المعتاد. سيتم تحديث طلبك فور تأكيد يو باي للدفع؛ "
             "يمكنك إغلاق هذه الصفحة.", link="العودة إلى المتجر"),
    ("cancel", "en"): dict(
        title="Payment not completed", text="Your payment was not completed. Your order is "
        "still waiting for payment; you can pay later with the link on your order.",
        paid="", review="", slow="", link="Back to the store"),
    ("cancel", "ar"): dict(
        title="لم تكتمل عملية الدفع", text="لم تكتمل دفعتك. ما زال طلبك بانتظار الدفع، ويمكنك "
        "الدفع لاحقاً عبر الرابط في طلبك.", paid="", review="", slow="", link="العودة إلى المتجر"),
}


def _page(kind: str, store_id: str, token: str) -> Any:
    record = _store(store_id)
    fields = _known(redirect_fields(request.query_string.decode("utf-8", "replace")))
    attempt = runtime().payments.on_return(record, _token(token), kind, fields)
    lang = record.settings.language.value
    poll = f"/upay/status/{record.id}/{_token(token)}" if attempt is not None and kind == "return" \
        else None
    store = adapter_for(record)
    link = None
    if attempt is not None:
        payload_text = runtime().pipeline._row(attempt.order_id).payload
        # WooCommerce's own "pay for order" page when there is one, else the shop.
        link = (json.loads(payload_text).get("payment_url") if kind == "cancel" else None) \
            or store.customer_order_url(store.parse_order(payload_text))
    status = 200 if attempt is not None else 404
    return render_template_string(PAGE, lang=lang, t=TEXTS[(kind, lang)], poll=poll,
                                  link=link), status


@bp.get("/return/<store_id>/<token>")
def returned(store_id: str, token: str) -> Any:
    return _page("return", store_id, token)


@bp.get("/cancel/<store_id>/<token>")
def cancelled(store_id: str, token: str) -> Any:
    return _page("cancel", store_id, token)


@bp.get("/status/<store_id>/<token>")
def status(store_id: str, token: str) -> Any:
    record = _store(store_id)
    return jsonify(runtime().payments.status_for(record, _token(token)))
