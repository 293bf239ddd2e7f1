"""What UPay sends back: the server notification and the customer's browser (return/cancel).

The notification is unsigned (upay-api.md §6.2): it is only recorded here, never trusted. The
return and cancel pages read UPay's parameters despite the double-``?`` quirk.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, jsonify, render_template_string, request

from .. import db
from ..app import runtime
from ..errors import UnknownStoreError
from ..upay import redirect_fields

bp = Blueprint("upay_callbacks", __name__, url_prefix="/upay")

# The fields UPay sends (upay-api.md §6.1); anything else is dropped, and values are capped, so
# an unauthenticated caller cannot make the bridge store arbitrary data.
FIELDS = ("payment_id", "result", "post_date", "tran_id", "ref", "track_id", "auth", "order_id",
          "requested_order_id", "refund_order_id", "payment_type", "payment_method", "invoice_id",
          "transaction_date", "receipt_id", "trn_udf", "upay_order_id")


def _known(fields: dict[str, Any]) -> dict[str, str]:
    return {k: str(fields[k])[:200] for k in FIELDS if k in fields and fields[k] is not None}


def _record(store_id: str, kind: str, fields: dict[str, str]) -> None:
    rt = runtime()
    if rt.registry.find(store_id[:32]) is None:
        raise UnknownStoreError(f"no store with id {store_id[:32]!r}")
    with rt.engine.begin() as conn:
        conn.execute(db.notifications.insert().values(
            store_id=store_id, kind=kind, fields=json.dumps(fields, sort_keys=True),
            received_at=time.time()))


@bp.post("/notify/<store_id>")
def notify(store_id: str) -> Any:
    if request.is_json:
        data = request.get_json(silent=True)
        fields = data if isinstance(data, dict) else {}
    else:
        fields = request.form.to_dict() or request.args.to_dict()
    _record(store_id, "notify", _known(fields))
    # UPay records our answer as notify_url_response (upay-api.md §5.2).
    return jsonify({"success": True, "message": "Success"}), 200


PAGE = """<!doctype html>
<html lang="{{ lang }}" dir="{{ 'rtl' if lang == 'ar' else 'ltr' }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto;">
<h1>{{ title }}</h1><p>{{ text }}</p></body></html>"""

TEXTS = {
    ("return", "en"): ("Thank you", "We are confirming your payment with UPayments. "
                                    "Your order will be updated in a moment."),
    ("return", "ar"): ("شكراً لك", "نتحقق من دفعتك لدى يو باي. سيتم تحديث طلبك خلال لحظات."),
    ("cancel", "en"): ("Payment not completed", "Your payment was not completed. "
                                                "You can pay later with the link on your order."),
    ("cancel", "ar"): ("لم تكتمل عملية الدفع", "لم تكتمل دفعتك. يمكنك الدفع لاحقاً عبر الرابط في طلبك."),
}


def _page(kind: str, store_id: str, ref: str) -> Any:
    fields = _known(redirect_fields(request.query_string.decode("utf-8", "replace")))
    fields["upay_order_id"] = ref[:40]
    _record(store_id, kind, fields)
    record = runtime().registry.get(store_id[:32])
    lang = record.settings.language.value
    title, text = TEXTS[(kind, lang)]
    return render_template_string(PAGE, lang=lang, title=title, text=text)


@bp.get("/return/<store_id>/<ref>")
def returned(store_id: str, ref: str) -> Any:
    return _page("return", store_id, ref)


@bp.get("/cancel/<store_id>/<ref>")
def cancelled(store_id: str, ref: str) -> Any:
    return _page("cancel", store_id, ref)
