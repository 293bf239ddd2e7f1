"""The order notes the bridge writes into the store, in English and Arabic.

Notes are read by the merchant in the store's admin, so each one says what happened and, when
something is wrong, what to change. URLs and amounts are kept as they are in both languages.
"""

from __future__ import annotations

from decimal import Decimal

from bridge.mapping import CUSTOMER_EMAIL_LIMIT, SUPPORTED_CURRENCIES, Blocker, truncate_text
from bridge.models import Language
from bridge.money import format_amount

# In Arabic text the phone example is wrapped in LRM marks (U+200E) so that its leading "+" stays
# on the left of the digits instead of jumping to the far side in right-to-left display.

# Store errors and UPay messages can be long (HTML error pages); a note is not a log.
REASON_LIMIT = 1000

_CURRENCY_LIST = ", ".join(sorted(SUPPORTED_CURRENCIES))

_BLOCKER_SENTENCES: dict[Language, dict[Blocker, str]] = {
    Language.EN: {
        Blocker.UNSUPPORTED_CURRENCY: (
            "The order's currency is not one UPay accepts ({currencies}); change the store "
            "currency or take payment for this order another way."),
        Blocker.ZERO_TOTAL: (
            "The order total is zero, so there is nothing for the customer to pay; add the "
            "missing items or prices, or complete the order without payment."),
        Blocker.NO_EMAIL: (
            "The order has no valid billing e-mail (at most {email_limit} characters), but the "
            "store sends UPay invoices by e-mail; add the customer's e-mail address to the "
            "billing details."),
        Blocker.NO_MOBILE: (
            "The order has no usable billing phone number, but the store sends UPay invoices by "
            "SMS; add the customer's mobile number with its country code (for example "
            "+96512345678) to the billing details."),
    },
    Language.AR: {
        Blocker.UNSUPPORTED_CURRENCY: (
            "عملة الطلب ليست من العملات التي تقبلها UPay ({currencies})؛ غيّر عملة المتجر أو "
            "اقبض قيمة هذا الطلب بطريقة أخرى."),
        Blocker.ZERO_TOTAL: (
            "إجمالي الطلب صفر، فلا يوجد ما يدفعه العميل؛ أضف المنتجات أو الأسعار الناقصة، أو "
            "أكمل الطلب دون دفع."),
        Blocker.NO_EMAIL: (
            "لا يحتوي الطلب على بريد إلكتروني صالح للفوترة (بحد أقصى {email_limit} حرفًا)، "
            "والمتجر يرسل فواتير UPay بالبريد الإلكتروني؛ أضف بريد العميل الإلكتروني إلى "
            "بيانات الفوترة."),
        Blocker.NO_MOBILE: (
            "لا يحتوي الطلب على رقم هاتف صالح للفوترة، والمتجر يرسل فواتير UPay برسالة نصية "
            "(SMS)؛ أضف رقم جوال العميل مع رمز الدولة (مثل \u200e+96512345678\u200e) إلى بيانات الفوترة."),
    },
}

_NOT_INVOICEABLE_INTRO = {
    Language.EN: "UPay cannot invoice this order yet.",
    Language.AR: "لا يمكن إصدار فاتورة UPay لهذا الطلب بعد.",
}


def payment_link_note(url: str, amount: Decimal, currency: str, language: Language) -> str:
    money = f"{format_amount(amount, currency)} {currency.strip().upper()}"
    if Language(language) == Language.AR:
        return f"ادفع {money} لهذا الطلب عبر UPayments: {url}"
    return f"Pay {money} for this order with UPayments: {url}"


def not_invoiceable_note(blockers: list[Blocker], language: Language) -> str:
    if not blockers:
        raise ValueError("not_invoiceable_note needs at least one blocker")
    language = Language(language)
    sentences = _BLOCKER_SENTENCES[language]
    parts = [_NOT_INVOICEABLE_INTRO[language]]
    # A blocker listed twice should not repeat its sentence in the note.
    for blocker in dict.fromkeys(Blocker(b) for b in blockers):
        parts.append(sentences[blocker].format(currencies=_CURRENCY_LIST,
                                               email_limit=CUSTOMER_EMAIL_LIMIT))
    return " ".join(parts)


def invoice_failed_note(reason: str, language: Language) -> str:
    reason = truncate_text(reason, REASON_LIMIT) or "no reason given"
    if Language(language) == Language.AR:
        return f"لم تُنشئ UPay فاتورة لهذا الطلب: {reason}"
    return f"UPay did not create an invoice for this order: {reason}"


# --- payment confirmation ---------------------------------------------------------------------

def payment_confirmed_note(*, amount: Decimal, currency: str, payment_id: str, track_id: str,
                           payment_type: str, upay_order_id: str, language: Language) -> str:
    paid = f"{format_amount(amount, currency)} {currency}"
    method = payment_type or "?"
    if language == Language.AR:
        return (f"تم تأكيد الدفع لدى UPay: {paid} عبر {method}. رقم الدفعة {payment_id}، "
                f"رقم التتبع {track_id}، رقم الطلب لدى UPay {upay_order_id}.")
    return (f"Payment confirmed with UPay: {paid} by {method}. Payment ID {payment_id}, "
            f"track ID {track_id}, UPay order ID {upay_order_id}.")


def payment_not_completed_note(result: str, language: Language) -> str:
    if language == Language.AR:
        return (f"لم تكتمل محاولة دفع عبر UPay (النتيجة: {result}). الطلب ما زال بانتظار الدفع "
                "ويمكن للعميل الدفع بالرابط نفسه.")
    return (f"A UPay payment attempt did not complete (result: {result}). The order is still "
            "awaiting payment; the customer can pay with the same link.")


def paid_after_cancel_note(reopened: bool, language: Language) -> str:
    if language == Language.AR:
        if reopened:
            return "وصلت الدفعة بعد إلغاء الطلب، فأعيد فتح الطلب كطلب مدفوع. راجع المخزون."
        return ("وصلت دفعة مؤكدة بعد إلغاء الطلب. لم يتغير الطلب: أعد فتحه أو استرد المبلغ "
                "للعميل.")
    if reopened:
        return ("The payment arrived after the order had been cancelled, so the order was "
                "re-opened as paid. Check the stock for its items.")
    return ("A confirmed payment arrived after the order had been cancelled. The order was left "
            "as it is: re-open it or refund the customer.")


def double_payment_note(*, payment_id: str, track_id: str, language: Language) -> str:
    if language == Language.AR:
        return (f"تحذير: دفعة مؤكدة ثانية لهذا الطلب لدى UPay (رقم الدفعة {payment_id}، رقم "
                f"التتبع {track_id}). دفع العميل مرتين: استرد إحدى الدفعتين.")
    return (f"Warning: a second confirmed UPay payment for this order (payment ID {payment_id}, "
            f"track ID {track_id}). The customer paid twice: refund one of the payments.")


def payment_mismatch_note(reason: str, language: Language) -> str:
    reason = truncate_text(reason, REASON_LIMIT)
    if language == Language.AR:
        return (f"أبلغت UPay عن دفعة لا تطابق هذا الطلب ({reason}). لم يتم تعليم الطلب كمدفوع؛ "
                "راجع الدفعة في لوحة UPay.")
    return (f"UPay reported a payment that does not match this order ({reason}). The order was "
            "not marked paid; check the payment in the UPay dashboard.")
