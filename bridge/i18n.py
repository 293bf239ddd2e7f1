"""The settings page's words in English and Arabic (the merchant chooses; Arabic is RTL)."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "app": "UPay Bridge", "sign_in": "Sign in", "sign_out": "Sign out", "email": "E-mail",
        "password": "Password", "bad_login": "Wrong e-mail or password.",
        "throttled": "Too many attempts. Try again later.", "stores": "Your stores",
        "no_stores": "No store is connected yet.", "connect": "Connect a WooCommerce store",
        "store_url": "Store address", "connect_go": "Connect",
        "connect_help": "You will approve the connection in your WooCommerce admin; the bridge "
                        "receives its API keys and adds its webhook itself.",
        "settings": "Settings", "activity": "Activity", "save": "Save", "saved": "Settings saved.",
        "upay_key": "UPay API key", "upay_key_help": "Write-only: type a new key to replace it.",
        "not_set": "not set", "sandbox": "UPay sandbox (test mode)",
        "notification_type": "How UPay sends the invoice", "language": "Invoice language",
        "customer_note": "Send the payment link to the customer (customer note)",
        "payment_methods": "Payment methods (comma-separated, empty = all)",
        "statuses": "Order statuses to invoice (comma-separated)",
        "currencies": "Currencies (comma-separated, empty = all UPay supports)",
        "paid_status": "Status of a paid on-hold order", "paid_after_cancel":
        "A payment on a cancelled order", "reopen": "Re-open it as paid", "flag": "Flag it only",
        "expiry": "Stop checking unpaid invoices after (hours)", "test_upay": "Test UPay key",
        "test_store": "Test store connection", "ok": "OK", "failed": "Failed",
        "health": "Webhook", "last_delivery": "Last delivery", "last_failure": "Last failure",
        "never": "never", "none": "none", "search": "Order number", "find": "Find",
        "order": "Order", "total": "Total", "state": "State", "payment": "Payment",
        "invoice": "Invoice", "retry": "Retry now", "resend": "Send the link again",
        "history": "History", "needs_you": "needs your attention", "queued": "Queued.",
        "resent": "The link will be sent again.", "disconnect": "Disconnect",
        "disconnected": "Store disconnected; its webhooks were removed.",
        "connected": "Store connected. Enter your UPay API key to start.",
        "connect_failed": "The store did not approve the connection.",
        "unsafe_url": "WooCommerce refuses to deliver webhooks to this bridge's address ({url}): "
                      "it is a loopback or private address, or its port is not 80, 443 or "
                      "8080. Give the bridge a public https address.",
        "switch": "العربية", "csrf": "The form expired; please try again.",
    },
    "ar": {
        "app": "جسر يو باي", "sign_in": "تسجيل الدخول", "sign_out": "تسجيل الخروج",
        "email": "البريد الإلكتروني", "password": "كلمة المرور",
        "bad_login": "البريد الإلكتروني أو كلمة المرور غير صحيحة.",
        "throttled": "محاولات كثيرة. حاول لاحقاً.", "stores": "متاجرك",
        "no_stores": "لم يتم ربط أي متجر بعد.", "connect": "ربط متجر ووكومرس",
        "store_url": "عنوان المتجر", "connect_go": "ربط",
        "connect_help": "ستوافق على الربط من لوحة ووكومرس؛ يستلم الجسر مفاتيح الواجهة ويضيف "
                        "الويب هوك بنفسه.",
        "settings": "الإعدادات", "activity": "النشاط", "save": "حفظ", "saved": "تم حفظ الإعدادات.",
        "upay_key": "مفتاح واجهة يو باي", "upay_key_help": "للكتابة فقط: اكتب مفتاحاً جديداً لاستبداله.",
        "not_set": "غير محدد", "sandbox": "بيئة الاختبار في يو باي",
        "notification_type": "طريقة إرسال الفاتورة", "language": "لغة الفاتورة",
        "customer_note": "إرسال رابط الدفع إلى العميل (ملاحظة للعميل)",
        "payment_methods": "طرق الدفع (مفصولة بفواصل، فارغ = الكل)",
        "statuses": "حالات الطلب التي تُصدر لها فواتير (مفصولة بفواصل)",
        "currencies": "العملات (مفصولة بفواصل، فارغ = كل ما تدعمه يو باي)",
        "paid_status": "حالة الطلب المعلّق بعد الدفع", "paid_after_cancel": "دفعة على طلب ملغى",
        "reopen": "إعادة فتحه كمدفوع", "flag": "التنبيه فقط",
        "expiry": "التوقف عن متابعة الفواتير غير المدفوعة بعد (ساعات)",
        "test_upay": "اختبار مفتاح يو باي", "test_store": "اختبار الاتصال بالمتجر", "ok": "تم",
        "failed": "فشل", "health": "الويب هوك", "last_delivery": "آخر استلام",
        "last_failure": "آخر خطأ", "never": "لا يوجد", "none": "لا يوجد", "search": "رقم الطلب",
        "find": "بحث", "order": "الطلب", "total": "الإجمالي", "state": "الحالة",
        "payment": "الدفع", "invoice": "الفاتورة", "retry": "أعد المحاولة الآن",
        "resend": "أرسل الرابط مجدداً", "history": "السجل", "needs_you": "يحتاج إلى تدخلك",
        "queued": "تمت الجدولة.", "resent": "سيُرسل الرابط مجدداً.", "disconnect": "فصل المتجر",
        "disconnected": "تم فصل المتجر وحذف الويب هوك الخاص به.",
        "connected": "تم ربط المتجر. أدخل مفتاح واجهة يو باي للبدء.",
        "connect_failed": "لم يوافق المتجر على الربط.",
        "unsafe_url": "يرفض ووكومرس إرسال الويب هوك إلى عنوان هذا الجسر ({url}): فهو عنوان "
                      "محلي أو خاص أو منفذه ليس 80 أو 443 أو 8080. امنح الجسر عنوان https عاماً.",
        "switch": "English", "csrf": "انتهت صلاحية النموذج؛ حاول مرة أخرى.",
    },
}


def text(language: str, key: str, **values: str) -> str:
    table = TEXTS.get(language, TEXTS["en"])
    value = table.get(key) or TEXTS["en"].get(key, key)
    return value.format(**values) if values else value
