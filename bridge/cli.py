"""The ``upay-bridge`` command: run the bridge, its workers, and manage stores and orders."""

from __future__ import annotations

import json
import secrets as pysecrets
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click
import sqlalchemy as sa

from . import db
from .config import Settings, load_settings
from .crypto import generate_key
from .errors import BridgeError, ConfigError
from .models import Language, NotificationType
from .netguard import check_store_url
from .pipeline import order_attempts, order_events
from .registry import StoreRecord, StoreSettings, validate_store_url
from .runtime import Runtime, bootstrap


def _setup_logging(level: str) -> None:
    import os

    from .logging_setup import configure

    # UPAY_BRIDGE_LOG_FORMAT=json (default: one JSON object per line) or text.
    configure(level, os.environ.get("UPAY_BRIDGE_LOG_FORMAT", "json"))


def _runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or load_settings()
    _setup_logging(settings.log_level)
    _engine(settings.database_url).dispose()  # a clear error for a URL no driver takes
    try:
        return bootstrap(settings)
    except ValueError as exc:  # an unsupported queue URL (make_huey)
        raise ConfigError(str(exc)) from None


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Main(click.Group):
    """Ordinary bad input (a setting the bridge cannot use, a key that does not decrypt the
    stored secrets, a database that does not answer) ends a command with one clear line on
    stderr and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            _fail(str(exc))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            # The driver's first line names host and port, never the URL's password.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            _fail("the database does not answer: " + (reason[0] if reason else type(exc).__name__))


def _engine(url: str) -> Any:
    try:
        return db.make_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError):
        # Not the URL itself in the message: it may hold the database password.
        raise ConfigError("UPAY_BRIDGE_DATABASE_URL is not a database URL the bridge supports "
                          "(sqlite:///path or postgresql://user@host/db)") from None


@click.group(cls=_Main)
@click.version_option(package_name="upay-bridge")
def main() -> None:
    """UPay invoices for WooCommerce orders: the bridge's command line."""


# -- running ------------------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="worker threads (default UPAY_BRIDGE_WORKERS)")
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True,
              help="web server threads")
@click.option("--no-worker", is_flag=True, help="serve the web app only (workers run elsewhere)")
def serve(host: str, port: int, workers: int | None, threads: int, no_worker: bool) -> None:
    """Run the web app and the workers in one process (the embedded default)."""
    from .app import create_app
    from .gil import tune_for_serving
    from .web_server import make_server

    tune_for_serving()
    rt = _runtime()
    app = create_app(rt)
    consumer = None
    if not no_worker:
        consumer = rt.jobs.consumer(workers or rt.settings.workers)
        consumer.start()
        rt.jobs.catch_up()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    click.echo(f"upay-bridge listening on http://{host}:{port} "
               f"(public URL {rt.settings.public_url}, data in {rt.settings.data_dir})")
    try:
        make_server(app, host=host, port=port, threads=threads).run()
    except KeyboardInterrupt:
        pass
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)
        rt.close()


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="worker threads (default UPAY_BRIDGE_WORKERS)")
def worker(workers: int | None) -> None:
    """Run workers only (the scale-out layout: web processes run `serve --no-worker`)."""
    rt = _runtime()
    consumer = rt.jobs.consumer(workers or rt.settings.workers)
    rt.jobs.catch_up()
    consumer.run()


@main.group("db")
def db_group() -> None:
    """Database commands."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest version."""
    settings = load_settings()
    engine = _engine(settings.database_url)
    db.migrate(engine)
    click.echo("database is up to date")


@main.command("secret-key")
def secret_key() -> None:
    """Print a new encryption key for UPAY_BRIDGE_SECRET_KEY."""
    click.echo(generate_key())


@main.command("rotate-secrets")
def rotate_secrets() -> None:
    """Re-encrypt every stored secret with the newest key.

    Put the new key first in UPAY_BRIDGE_SECRET_KEY (keeping the old one after it), run this,
    then drop the old key.
    """
    rt = _runtime()
    click.echo(f"re-encrypted the secrets of {rt.registry.rotate_secrets()} store(s)")


@main.group()
def merchant() -> None:
    """Accounts for the settings page."""


@merchant.command("create")
@click.argument("email")
@click.option("--password", envvar="UPAY_BRIDGE_MERCHANT_PASSWORD", prompt=True,
              hide_input=True, confirmation_prompt=True,
              help="(or env UPAY_BRIDGE_MERCHANT_PASSWORD; asked for when omitted)")
@click.option("--language", type=click.Choice(["en", "ar"]), default="en", show_default=True)
def merchant_create(email: str, password: str, language: str) -> None:
    """Create a merchant account (the first one is made by the operator)."""
    rt = _runtime()
    try:
        account = rt.accounts.create(email, password, language)
    except BridgeError as exc:
        _fail(str(exc))
        return
    click.echo(f"created {account.email}; sign in at {rt.settings.public_url}/app/login")


# -- stores -------------------------------------------------------------------------------------

@main.group()
def store() -> None:
    """Register, list, show and remove stores."""


def _webhook_url(rt: Runtime, record: StoreRecord) -> str:
    return f"{rt.settings.public_url}/webhooks/{record.kind}/{record.id}"


def _store_json(rt: Runtime, record: StoreRecord) -> dict[str, Any]:
    data = record.public_dict()
    data["webhook_url"] = _webhook_url(rt, record)
    return data


@store.command("add")
@click.argument("kind", type=click.Choice(["woocommerce"]))
@click.option("--url", required=True, help="the store's home URL, e.g. https://shop.example.com")
@click.option("--name", default="", help="a name for the store")
@click.option("--consumer-key", required=True, envvar="UPAY_BRIDGE_STORE_CONSUMER_KEY",
              help="WooCommerce REST API consumer key (or env UPAY_BRIDGE_STORE_CONSUMER_KEY)")
@click.option("--consumer-secret", required=True, envvar="UPAY_BRIDGE_STORE_CONSUMER_SECRET",
              help="WooCommerce REST API consumer secret (or env UPAY_BRIDGE_STORE_CONSUMER_SECRET)")
@click.option("--webhook-secret", default=None, envvar="UPAY_BRIDGE_STORE_WEBHOOK_SECRET",
              help="the secret of the WooCommerce webhook (generated and shown once if omitted)")
@click.option("--upay-api-key", required=True, envvar="UPAY_BRIDGE_STORE_UPAY_API_KEY",
              help="the merchant's UPay API key (or env UPAY_BRIDGE_STORE_UPAY_API_KEY)")
@click.option("--upay-sandbox", is_flag=True, help="use UPay's sandbox instead of production")
@click.option("--notification-type", type=click.Choice([t.value for t in NotificationType]),
              default="link", show_default=True, help="how UPay sends the invoice")
@click.option("--language", type=click.Choice([lang.value for lang in Language]), default="en",
              show_default=True, help="language of the payment page and of the bridge's notes")
@click.option("--note", "note_kind", type=click.Choice(["customer", "private"]), default="customer",
              show_default=True, help="a customer note makes WooCommerce e-mail the link")
@click.option("--payment-method", "payment_methods", multiple=True,
              help="invoice only orders with this payment method (repeatable; default all)")
@click.option("--status", "statuses", multiple=True,
              help="invoice orders in this status (repeatable; default pending and on-hold)")
@click.option("--currency", "currencies", multiple=True,
              help="invoice only orders in this currency (repeatable; default all UPay supports)")
@click.option("--paid-status", type=click.Choice(["processing", "completed"]),
              default="processing", show_default=True,
              help="the status an on-hold or re-opened order gets once paid")
@click.option("--paid-after-cancel", type=click.Choice(["reopen", "flag"]), default="reopen",
              show_default=True,
              help="a payment on an order the store cancelled: re-open it as paid, or only flag it")
@click.option("--reconcile-expiry-hours", type=float, default=72.0, show_default=True,
              help="stop asking UPay about an unpaid invoice after this many hours")
@click.option("--merchant", "merchant_email", default=None,
              help="the merchant account that sees this store on the settings page")
@click.option("--allow-private", is_flag=True,
              help="accept a store on a loopback, private or link-local address (this store "
                   "only; UPAY_BRIDGE_ALLOW_PRIVATE_STORE_URLS=1 allows it everywhere)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def store_add(kind: str, url: str, name: str, consumer_key: str, consumer_secret: str,
              webhook_secret: str | None, upay_api_key: str, upay_sandbox: bool,
              notification_type: str, language: str, note_kind: str,
              payment_methods: tuple[str, ...], statuses: tuple[str, ...],
              currencies: tuple[str, ...], paid_status: str, paid_after_cancel: str,
              reconcile_expiry_hours: float, merchant_email: str | None, allow_private: bool,
              as_json: bool) -> None:
    """Register a store; prints its id and the webhook delivery URL."""
    config = load_settings()
    # Checked before anything is written (or the database is even opened).
    checked = check_store_address(
        url, kind, allow_private=allow_private or config.allow_private_store_urls)
    rt = _runtime(config)
    generated = webhook_secret is None
    webhook_secret = webhook_secret or pysecrets.token_urlsafe(32)
    settings = StoreSettings(
        notification_type=NotificationType(notification_type), language=Language(language),
        customer_note=note_kind == "customer", payment_methods=payment_methods,
        statuses=statuses or ("pending", "on-hold"), currencies=tuple(c.upper() for c in currencies),
        paid_status=paid_status, paid_after_cancel=paid_after_cancel,
        reconcile_expiry_hours=reconcile_expiry_hours)
    owner = None
    if merchant_email:
        account = rt.accounts.by_email(merchant_email)
        if account is None:
            _fail(f"no merchant account {merchant_email!r} (create it with `merchant create`)")
            return
        owner = account.id
    try:
        record = rt.registry.add(kind, url, {
            "consumer_key": consumer_key, "consumer_secret": consumer_secret,
            "webhook_secret": webhook_secret, "upay_api_key": upay_api_key,
        }, name=name, upay_sandbox=upay_sandbox, settings=settings, merchant_id=owner)
    except BridgeError as exc:
        _fail(str(exc))
        return
    out = {"id": record.id, "webhook_url": _webhook_url(rt, record)}
    if generated:
        out["webhook_secret"] = webhook_secret  # shown once, so it can be pasted into WooCommerce
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"store id:     {record.id}")
    click.echo(f"webhook URL:  {out['webhook_url']}")
    if generated:
        click.echo(f"webhook secret (shown once): {webhook_secret}")
    if not checked:
        click.echo(f"note: {urlsplit(record.url).hostname} does not resolve from this machine; "
                   "its address was not checked")
    click.echo("In WooCommerce: Settings > Advanced > Webhooks > Add webhook, topic "
               "'Order created', with the URL and secret above.")


def check_store_address(url: str, kind: str, *, allow_private: bool) -> bool:
    """The connect form's address check, for ``store add``: a ``ConfigError`` (one ``error:``
    line, exit 1) for a store on a loopback, private, link-local or shared address, unless
    ``allow_private``. Returns False when the host name does not resolve from here: then there
    is no address to judge, and an operator may register a store before its DNS answers (or
    from a machine with another resolver), so it is let through, unchecked."""
    url = validate_store_url(url, kind)  # a malformed URL keeps its own message
    if allow_private:
        return True
    host = urlsplit(url).hostname or ""
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    try:
        check_store_url(url, allow_private=False)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (pass --allow-private for a store on the bridge's own "
                          "network)") from None
    return True


@store.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def store_list(as_json: bool) -> None:
    """List the registered stores."""
    rt = _runtime()
    records = rt.registry.list()
    if as_json:
        click.echo(json.dumps([_store_json(rt, r) for r in records]))
        return
    if not records:
        click.echo("no stores")
    for r in records:
        mode = "sandbox" if r.upay_sandbox else "production"
        click.echo(f"{r.id}  {r.kind:<12} {mode:<10} {r.url}  {r.name}")


@store.command("show")
@click.argument("store_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def store_show(store_id: str, as_json: bool) -> None:
    """Show one store (secrets masked)."""
    rt = _runtime()
    record = rt.registry.find(store_id)
    if record is None:
        _fail(f"no store with id {store_id!r}")
        return
    data = _store_json(rt, record)
    if as_json:
        click.echo(json.dumps(data))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@store.command("remove")
@click.argument("store_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def store_remove(store_id: str, yes: bool) -> None:
    """Remove a store and everything the bridge recorded for it."""
    rt = _runtime()
    # A removal that was interrupted left the store hidden from every lookup: running this
    # again finishes it.
    unfinished = store_id in rt.registry.pending_removals()
    if not unfinished and rt.registry.find(store_id) is None:
        _fail(f"no store with id {store_id!r}")
        return
    if not yes:
        click.confirm(f"Remove store {store_id} and its order records?", abort=True)
    rt.registry.remove(store_id)
    click.echo(f"removed {store_id}" + (" (finished an interrupted removal)" if unfinished else ""))


@store.command("catch-up")
@click.argument("store_id", required=False)
@click.option("--min-age", type=float, default=None,
              help="also take orders younger than this many seconds (default: the periodic "
                   "check's 120 s, which leaves deliveries in flight alone)")
def store_catch_up(store_id: str | None, min_age: float | None) -> None:
    """Check the webhooks and catch up lost orders now (the workers do it every 5 minutes).

    After an outage of the bridge, WooCommerce does not send again what it could not deliver:
    this finds those orders at the store and queues them (an order already known is left alone).
    """
    rt = _runtime()
    if min_age is not None:
        rt.health.min_age_seconds = max(0.0, min_age)
    records = rt.registry.list() if store_id is None else [rt.registry.find(store_id)]
    if records == [None]:
        _fail(f"no store with id {store_id!r}")
        return
    for record in records:
        if record is None or record.kind != "woocommerce":
            continue  # Saleor re-delivers what failed by itself
        rt.health.check(record)
        click.echo(f"{record.id}: {rt.health.catch_up(record)} lost order(s) queued")


# -- orders -------------------------------------------------------------------------------------

@main.group()
def orders() -> None:
    """See what the bridge did with each order, and retry parked ones."""


def _order_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "store_id": row.store_id, "order_id": row.external_id,
            "number": row.number, "total": row.total, "currency": row.currency,
            "state": row.state, "reason": row.reason, "invoice_id": row.invoice_id,
            "invoice_url": row.invoice_url, "upay_order_id": row.upay_order_id,
            "note": row.note_state, "retries": row.retries, "last_error": row.last_error,
            "created_at": row.created_at, "updated_at": row.updated_at}


@orders.command("list")
@click.option("--store", "store_id", default=None, help="only this store")
@click.option("--state", default=None, help="only orders in this state (e.g. parked)")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def orders_list(store_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List the most recent orders the bridge has seen."""
    rt = _runtime()
    o = db.orders.c
    query = sa.select(db.orders).order_by(o.id.desc()).limit(limit)
    if store_id:
        query = query.where(o.store_id == store_id)
    if state:
        query = query.where(o.state == state)
    with db.reading(rt.engine) as conn:
        rows = conn.execute(query).all()
    if as_json:
        click.echo(json.dumps([_order_dict(r) for r in rows]))
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at))
        click.echo(f"{r.id:>6}  {when}  {r.store_id}  #{r.number:<10} {r.total:>12} {r.currency}  "
                   f"{r.state:<16} {r.invoice_url or r.reason or r.last_error}")


@orders.command("show")
@click.argument("row_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def orders_show(row_id: int, as_json: bool) -> None:
    """Show one order: its state, its invoice attempts and its history."""
    rt = _runtime()
    with db.reading(rt.engine) as conn:
        row = conn.execute(sa.select(db.orders).where(db.orders.c.id == row_id)).first()
    if row is None:
        _fail(f"no order {row_id}")
        return
    data = _order_dict(row)
    data["attempts"] = order_attempts(rt.engine, row_id)
    data["events"] = order_events(rt.engine, row_id)
    if as_json:
        click.echo(json.dumps(data))
        return
    for key in ("id", "store_id", "order_id", "number", "total", "currency", "state", "reason",
                "invoice_id", "invoice_url", "note", "retries", "last_error"):
        click.echo(f"{key}: {data[key]}")
    click.echo("attempts:")
    for a in data["attempts"]:
        click.echo(f"  {a['number']}. {a['upay_order_id']} {a['state']} {a['invoice_url'] or a['error']}")
    click.echo("history:")
    for e in data["events"]:
        click.echo(f"  {time.strftime('%H:%M:%S', time.gmtime(e['at']))} {e['kind']}: {e['message']}")


@orders.command("retry")
@click.argument("row_id", type=int)
def orders_retry(row_id: int) -> None:
    """Try a parked or failed order again now (a running worker picks it up)."""
    rt = _runtime()
    try:
        rt.pipeline.retry(row_id)
    except BridgeError as exc:
        _fail(str(exc))
        return
    click.echo(f"order {row_id} queued again")


@main.command()
@click.option("--store", type=click.Choice(["woocommerce", "saleor"]), default="woocommerce",
              show_default=True, help="which kind of store to simulate")
@click.option("--keep-running", is_flag=True, help="leave the demo running to explore it")
def demo(store: str, keep_running: bool) -> None:
    """Watch the bridge work: a simulated store and a simulated UPay on this machine."""
    from .demo import run_demo

    _setup_logging("WARNING")
    sys.exit(run_demo(keep_running=keep_running, store=store))


if __name__ == "__main__":  # pragma: no cover
    main()
