"""The merchant's pages: sign-in, connecting a store, its settings, and its activity.

Every form carries a CSRF token bound to the session (compared in constant time); every store
page checks that the store belongs to the signed-in merchant; secrets are write-only.
"""

from __future__ import annotations

import hmac
import secrets
import time
import unicodedata
from decimal import Decimal
from functools import wraps
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from flask import (Blueprint, abort, flash, g, redirect, render_template, request, session,
                   url_for)

from .. import db
from ..accounts import SignInThrottled
from ..app import runtime
from ..errors import BridgeError, ConfigError, OrderBusyError, StoreError, UPayError
from ..i18n import text
from ..models import Language, NotificationType
from ..money import quantize
from ..netguard import check_store_url, webhook_delivery_problem
from ..notes import payment_link_note
from ..pipeline import order_attempts, order_events
from ..registry import StoreRecord, StoreSettings, validate_store_url
from ..stores import adapter_for

# Row ids are 64-bit integers; a larger number in a URL is a 404, not an overflow in the driver.
MAX_ROW_ID = 2 ** 63 - 1

bp = Blueprint("merchant", __name__, url_prefix="/app")

ATTENTION = ("failed", "parked", "not_invoiceable")
INSTALL_TTL = 3600.0
# installs.store_id while one callback is creating the store: not NULL, so no other callback can
# claim the install, and falsy, so the install still reads as "not connected".
INSTALL_CLAIMED = ""


@bp.before_request
def _load_merchant() -> Any:
    g.merchant = None
    merchant_id = session.get("merchant_id")
    if merchant_id is not None:
        merchant = runtime().accounts.get(int(merchant_id))
        # A cookie issued before the merchant last signed out (from any browser) is signed out
        # too: the cookie itself cannot be revoked, the version it carries can be outdated.
        if merchant is None or session.get("session_version") != merchant.session_version:
            session.clear()
        else:
            g.merchant = merchant
    elif session.get("saleor_stores") and not _dashboard_session_current():
        # The same for a session opened from the Saleor Dashboard: it carries its store's
        # Dashboard session version, raised by a sign-out from any Dashboard session of that
        # store (or a reinstall of the app); a removed store ends its sessions too.
        session.clear()
    g.lang = g.merchant.language if g.merchant else session.get("lang", "en")
    if request.method == "POST" and request.endpoint != "merchant.connect_callback":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf_token", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            flash(text(g.lang, "csrf"), "error")
            return redirect(request.path if request.endpoint != "merchant.login"
                            else url_for("merchant.login")), 303
    return None


def _dashboard_session_current() -> bool:
    """Whether every store of this Saleor Dashboard session still exists and is still at the
    session version the session was opened under (a session from before versions had none)."""
    stores = session.get("saleor_stores")
    issued = session.get("saleor_versions")
    if not isinstance(stores, list) or not isinstance(issued, dict):
        return False
    current = runtime().accounts.dashboard_session_versions(stores)
    return all(store_id in current and issued.get(store_id) == current[store_id]
               for store_id in stores)


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    lang = getattr(g, "lang", "en")
    return {"t": lambda key, **v: text(lang, key, **v), "lang": lang,
            "dir": "rtl" if lang == "ar" else "ltr", "csrf_token": session["csrf_token"],
            "merchant": getattr(g, "merchant", None), "fmt_time": _fmt_time}


def _fmt_time(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at else ""


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # A merchant account, or a Saleor Dashboard user let in by the Dashboard's token for one
        # store (bridge/web/saleor_app.py).
        if g.merchant is None and not session.get("saleor_stores"):
            return redirect(url_for("merchant.login"))
        return view(*args, **kwargs)
    return wrapper


def _own_store(store_id: str) -> StoreRecord:
    record = runtime().registry.find(store_id[:32])
    # Someone else's store looks exactly like a missing one.
    mine = record is not None and (
        (g.merchant is not None and record.merchant_id == g.merchant.id)
        or record.id in session.get("saleor_stores", []))
    if not mine:
        abort(404)
    return record


# -- sign-in ------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        try:
            merchant = runtime().accounts.authenticate(request.form.get("email", ""),
                                                       request.form.get("password", ""),
                                                       request.remote_addr or "")
        except SignInThrottled:
            flash(text(g.lang, "throttled"), "error")
            return render_template("app/login.html"), 429
        if merchant is None:
            flash(text(g.lang, "bad_login"), "error")
            return render_template("app/login.html"), 401
        session.clear()  # a new session on sign-in: no fixation
        session["merchant_id"] = merchant.id
        session["session_version"] = merchant.session_version
        session["csrf_token"] = secrets.token_urlsafe(32)
        session.permanent = True
        return redirect(url_for("merchant.home"), 303)
    return render_template("app/login.html")


@bp.post("/logout")
def logout() -> Any:
    # Past the CSRF check in _load_merchant. Signing out ends every session of the merchant,
    # including copies of this cookie, which would otherwise stay valid until they expire.
    if g.merchant is not None:
        runtime().accounts.end_sessions(g.merchant.id)
    else:
        # A Saleor Dashboard session has no account: it ends every Dashboard session of its
        # store (any staff user reopens the app from the Dashboard without a password).
        # _load_merchant has already cleared a session that was no longer current.
        for store_id in session.get("saleor_stores") or []:
            runtime().accounts.end_dashboard_sessions(str(store_id))
    session.clear()
    return redirect(url_for("merchant.login"), 303)


@bp.post("/language")
def language() -> Any:
    lang = request.form.get("language", "en")
    if g.merchant is not None:
        runtime().accounts.set_language(g.merchant.id, lang)
    session["lang"] = lang if lang in ("en", "ar") else "en"
    return redirect(request.form.get("next") if _local(request.form.get("next")) else
                    url_for("merchant.home"), 303)


def _local(path: str | None) -> bool:
    r"""Whether ``path`` is a path on this site, safe to redirect to.

    Browsers drop tab and newline from a URL and read a backslash as a slash, so "/\t/evil",
    "/\evil" or "/\n/evil" all lead to //evil, another host: refused, like any whitespace or
    control character, a scheme or a host.
    """
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return False
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in path):
        return False
    parts = urlsplit(path)
    return not parts.scheme and not parts.netloc


# -- stores -------------------------------------------------------------------------------------

@bp.get("/")
@signed_in
def home() -> Any:
    rt = runtime()
    if g.merchant is not None:
        stores = rt.registry.list(merchant_id=g.merchant.id)
    else:
        stores = [s for s in (rt.registry.find(i) for i in session.get("saleor_stores", [])) if s]
    return render_template("app/home.html", stores=stores,
                           unsafe=webhook_delivery_problem(rt.settings.public_url),
                           public_url=rt.settings.public_url)


@bp.post("/connect")
@signed_in
def connect() -> Any:
    rt = runtime()
    if g.merchant is None:  # a Saleor Dashboard session manages its own store only
        abort(403)
    try:
        url = validate_store_url(request.form.get("store_url", ""))
        check_store_url(url, allow_private=rt.settings.allow_private_store_urls)
    except ConfigError as exc:
        flash(str(exc), "error")
        return redirect(url_for("merchant.home"), 303)
    token = secrets.token_urlsafe(24)
    with rt.engine.begin() as conn:
        conn.execute(db.installs.insert().values(token=token, merchant_id=g.merchant.id,
                                                 store_url=url, created_at=time.time()))
    # WooCommerce's own app authorization (woocommerce.md §4.4): the merchant approves in their
    # admin, WooCommerce posts the keys to the callback, then sends the browser to return_url.
    query = urlencode({
        "app_name": "UPay Bridge", "scope": "read_write", "user_id": token,
        "return_url": f"{rt.settings.public_url}/app/connect/return/{token}",
        "callback_url": f"{rt.settings.public_url}/app/connect/callback/{token}",
    })
    return redirect(f"{url}/wc-auth/v1/authorize?{query}", 303)


@bp.post("/connect/callback/<token>")
def connect_callback(token: str) -> Any:
    """WooCommerce posts the new API keys here; it wants exactly 200, or it deletes the key."""
    rt = runtime()
    data = request.get_json(silent=True, force=True)
    with db.reading(rt.engine) as conn:
        install = conn.execute(sa.select(db.installs).where(db.installs.c.token == token[:64])).first()
    valid = (install is not None and install.store_id is None
             and time.time() - install.created_at < INSTALL_TTL and isinstance(data, dict)
             and hmac.compare_digest(str(data.get("user_id", "")).encode(), token.encode())
             and data.get("consumer_key") and data.get("consumer_secret")
             and data.get("key_permissions") == "read_write")
    refused = {"error": {"code": "invalid_install", "message": "unknown or expired install"}}, 400
    if not valid:
        return refused
    # The checks above read a snapshot: replayed at once, every copy of the callback passed them
    # and each created a store. Claiming the install with one conditional UPDATE lets exactly
    # one of them through (the others find store_id no longer NULL).
    installs = db.installs.c
    with rt.engine.begin() as conn:
        claimed = conn.execute(db.installs.update().where(
            installs.token == install.token, installs.store_id.is_(None),
            installs.created_at > time.time() - INSTALL_TTL,
        ).values(store_id=INSTALL_CLAIMED)).rowcount == 1
    if not claimed:
        return refused
    try:
        record = rt.registry.add("woocommerce", install.store_url, {
            "consumer_key": str(data["consumer_key"]),
            "consumer_secret": str(data["consumer_secret"]),
            "webhook_secret": secrets.token_urlsafe(32),
        }, name=install.store_url.split("://", 1)[-1], upay_sandbox=True,
            merchant_id=install.merchant_id, require_upay_key=False)
    except BaseException:
        # No store was written: give the install back so the merchant can approve again.
        with rt.engine.begin() as conn:
            conn.execute(db.installs.update().where(
                installs.token == install.token, installs.store_id == INSTALL_CLAIMED,
            ).values(store_id=None))
        raise
    with rt.engine.begin() as conn:
        conn.execute(db.installs.update().where(installs.token == install.token)
                     .values(store_id=record.id))
    # The webhook is registered by a worker: WooCommerce pings the bridge while that call is
    # still open, and this callback must answer WooCommerce quickly.
    rt.jobs.enqueue_webhook_setup(record.id)
    return {"ok": True}, 200


@bp.get("/connect/return/<token>")
@signed_in
def connect_return(token: str) -> Any:
    if g.merchant is None:
        abort(403)
    with db.reading(runtime().engine) as conn:
        install = conn.execute(sa.select(db.installs).where(db.installs.c.token == token[:64])).first()
    # A store_id of INSTALL_CLAIMED ("") is a callback still at work: not connected yet.
    if install is None or install.merchant_id != g.merchant.id or not install.store_id \
            or request.args.get("success") != "1":
        flash(text(g.lang, "connect_failed"), "error")
        return redirect(url_for("merchant.home"), 303)
    flash(text(g.lang, "connected"), "ok")
    return redirect(url_for("merchant.store_settings", store_id=install.store_id), 303)


@bp.route("/stores/<store_id>", methods=["GET", "POST"])
@signed_in
def store_settings(store_id: str) -> Any:
    rt = runtime()
    record = _own_store(store_id)
    if request.method == "POST":
        f = request.form
        try:
            settings = StoreSettings(
                notification_type=NotificationType(f.get("notification_type", "link")),
                language=Language(f.get("language", "en")),
                customer_note=f.get("customer_note") == "on",
                payment_methods=_list(f.get("payment_methods", "")),
                statuses=_list(f.get("statuses", "")) or ("pending", "on-hold"),
                currencies=tuple(c.upper() for c in _list(f.get("currencies", ""))),
                paid_status=f.get("paid_status", "processing"),
                paid_after_cancel=f.get("paid_after_cancel", "reopen"),
                reconcile_expiry_hours=float(f.get("reconcile_expiry_hours", "72") or 72))
            new_key = f.get("upay_api_key", "").strip()
            rt.registry.update(record.id, settings=settings,
                               secrets={"upay_api_key": new_key} if new_key else None,
                               upay_sandbox=f.get("upay_sandbox") == "on")
        except (ValueError, BridgeError) as exc:
            flash(str(exc), "error")
            return redirect(request.path, 303)
        flash(text(g.lang, "saved"), "ok")
        return redirect(request.path, 303)
    with db.reading(rt.engine) as conn:
        health = conn.execute(sa.select(db.store_health).where(
            db.store_health.c.store_id == record.id)).first()
        last_delivery = conn.execute(sa.select(sa.func.max(db.deliveries.c.received_at)).where(
            db.deliveries.c.store_id == record.id)).scalar()
    return render_template("app/store.html", store=record, health=health,
                           last_delivery=last_delivery,
                           key_hint=_hint(record.secrets.get("upay_api_key", "")))


def _list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.replace("\n", ",").split(",") if x.strip())


def _hint(secret: str) -> str:
    return ("•" * 8 + secret[-4:]) if len(secret) > 8 else ("•" * len(secret))


@bp.post("/stores/<store_id>/test-upay")
@signed_in
def test_upay(store_id: str) -> Any:
    record = _own_store(store_id)
    try:
        if not record.secrets.get("upay_api_key"):
            raise ConfigError(text(g.lang, "not_set"))
        runtime().pipeline._client(record).check_key()
        flash(f"{text(g.lang, 'test_upay')}: {text(g.lang, 'ok')}", "ok")
    except (UPayError, ConfigError) as exc:
        flash(f"{text(g.lang, 'test_upay')}: {text(g.lang, 'failed')}: {exc}", "error")
    return redirect(url_for("merchant.store_settings", store_id=record.id), 303)


@bp.post("/stores/<store_id>/test-store")
@signed_in
def test_store(store_id: str) -> Any:
    record = _own_store(store_id)
    try:
        adapter_for(record).check_connection()
        flash(f"{text(g.lang, 'test_store')}: {text(g.lang, 'ok')}", "ok")
    except StoreError as exc:
        flash(f"{text(g.lang, 'test_store')}: {text(g.lang, 'failed')}: {exc}", "error")
    return redirect(url_for("merchant.store_settings", store_id=record.id), 303)


@bp.post("/stores/<store_id>/disconnect")
@signed_in
def disconnect(store_id: str) -> Any:
    rt = runtime()
    record = _own_store(store_id)
    try:
        adapter_for(record).remove_webhooks(f"{rt.settings.public_url}/webhooks/{record.kind}/{record.id}")
    except StoreError as exc:
        flash(f"{text(g.lang, 'failed')}: {exc}", "error")
        return redirect(url_for("merchant.store_settings", store_id=record.id), 303)
    # Hidden at once; its history is deleted by a worker (seconds for a big store).
    rt.registry.mark_removing(record.id)
    rt.jobs.enqueue_store_removal(record.id)
    flash(text(g.lang, "disconnected"), "ok")
    return redirect(url_for("merchant.home"), 303)


# -- activity -----------------------------------------------------------------------------------

@bp.get("/stores/<store_id>/activity")
@signed_in
def activity(store_id: str) -> Any:
    rt = runtime()
    record = _own_store(store_id)
    q = request.args.get("q", "").strip()[:100]
    o = db.orders.c
    query = sa.select(db.orders).where(o.store_id == record.id).order_by(o.id.desc()).limit(100)
    if q:
        query = query.where(sa.or_(o.number == q, o.external_id == q))
    with db.reading(rt.engine) as conn:
        rows = conn.execute(query).all()
    orders = [{"row": r, "attempts": order_attempts(rt.engine, r.id),
               "events": order_events(rt.engine, r.id),
               "attention": r.state in ATTENTION or r.payment_state == "flagged"} for r in rows]
    return render_template("app/activity.html", store=record, orders=orders, q=q)


@bp.post(f"/stores/<store_id>/orders/<int(max={MAX_ROW_ID}):pk>/retry")
@signed_in
def retry(store_id: str, pk: int) -> Any:
    record = _own_store(store_id)
    _own_order(record, pk)
    try:
        runtime().pipeline.retry(pk)
    except OrderBusyError as exc:  # a worker holds it right now
        flash(str(exc), "error")
        return redirect(url_for("merchant.activity", store_id=record.id,
                                q=request.form.get("q", "")), 303)
    flash(text(g.lang, "queued"), "ok")
    return redirect(url_for("merchant.activity", store_id=record.id, q=request.form.get("q", "")), 303)


@bp.post(f"/stores/<store_id>/orders/<int(max={MAX_ROW_ID}):pk>/resend")
@signed_in
def resend(store_id: str, pk: int) -> Any:
    rt = runtime()
    record = _own_store(store_id)
    row = _own_order(record, pk)
    if row.invoice_url and row.payment_state == "open":
        note = payment_link_note(row.invoice_url, quantize(Decimal(row.total), row.currency),
                                 row.currency, record.settings.language)
        rt.pipeline.add_action(pk, "note", f"resend:{pk}:{time.time():.3f}", text=note,
                               customer=True)
        rt.pipeline.schedule(pk, 0.0)
        flash(text(g.lang, "resent"), "ok")
    return redirect(url_for("merchant.activity", store_id=record.id, q=request.form.get("q", "")), 303)


def _own_order(record: StoreRecord, pk: int) -> Any:
    with db.reading(runtime().engine) as conn:
        row = conn.execute(sa.select(db.orders).where(db.orders.c.id == pk)).first()
    if row is None or row.store_id != record.id:
        abort(404)
    return row

