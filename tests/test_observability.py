"""/metrics, request ids and JSON logs that never carry secrets or customer contact details."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.logging_setup import JSONFormatter, request_id_from

from .conftest import UPAY_KEY, WEBHOOK_SECRET, wait_for

BILLING = {"first_name": "Fatima", "last_name": "Al-Sabah", "email": "fatima.obs@example.com",
           "phone": "+965 5551 2345", "country": "KW"}


@pytest.fixture
def json_log():
    """Every log record, formatted by the bridge's JSON formatter, at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.M)
    return float(match.group(1)) if match else None


def place(shop):
    shop.add_product(101, "Arabic Coffee 250g", "4.500", sku="COF-250")
    order = shop.create_order([{"product_id": 101, "quantity": 2}], billing=BILLING)
    shop.deliver_queued()
    return order


def test_metrics_move_after_an_order(bridge, connect_store, fake_wc):
    connect_store(bridge)
    before = requests.get(f"{bridge.url}/metrics", timeout=5)
    assert before.status_code == 200
    assert before.headers["Content-Type"].startswith("text/plain")
    assert sample(before.text, "upay_bridge_invoices_created_total") == 0
    assert sample(before.text, "upay_bridge_reconciliation_lag_seconds") == 0
    assert sample(before.text, "upay_bridge_queue_depth") is not None
    order = place(fake_wc)
    bridge.wait_state(order["id"], "done")
    text = requests.get(f"{bridge.url}/metrics", timeout=5).text
    assert sample(text, "upay_bridge_invoices_created_total") == 1
    assert sample(text, "upay_bridge_invoices_failed_total") == 0
    assert sample(text, "upay_bridge_deliveries_total",
                  store_kind="woocommerce", outcome="queued") == 1, text
    assert sample(text, "upay_bridge_upay_request_seconds_count", endpoint="charge") == 1
    assert sample(text, "upay_bridge_upay_request_seconds_count", endpoint="status") == 0
    assert sample(text, "upay_bridge_reconciliation_lag_seconds") >= 0


def test_two_apps_have_their_own_registries(bridge_factory):
    a, b = bridge_factory(worker=False), bridge_factory(worker=False)
    assert a.runtime.metrics.registry is not b.runtime.metrics.registry
    a.runtime.metrics.invoices_created.inc()
    assert sample(requests.get(f"{b.url}/metrics", timeout=5).text,
                  "upay_bridge_invoices_created_total") == 0


def test_reconciliation_lag_counts_overdue_open_invoices(bridge_factory, connect_store, fake_wc):
    import time

    import sqlalchemy as sa

    from bridge import db

    bridge = bridge_factory()
    connect_store(bridge)
    order = place(fake_wc)
    row = bridge.wait_state(order["id"], "done")
    bridge.stop_worker()
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().where(db.orders.c.id == row.id).values(
            created_at=time.time() - 600, next_check_at=time.time() - 1, payment_state="open"))
    lag = sample(requests.get(f"{bridge.url}/metrics", timeout=5).text,
                 "upay_bridge_reconciliation_lag_seconds")
    assert 590 < lag < 700
    with bridge.runtime.engine.begin() as conn:
        conn.execute(db.orders.update().values(next_check_at=time.time() + 3600))
    assert sample(requests.get(f"{bridge.url}/metrics", timeout=5).text,
                  "upay_bridge_reconciliation_lag_seconds") == 0
    del sa


def test_request_id_is_echoed_and_logged(bridge, connect_store, json_log):
    record = connect_store(bridge, webhook=False)
    resp = requests.post(bridge.webhook_url(record), data=b"{}", timeout=5,
                         headers={"X-Request-ID": "req-abc.123", "X-WC-Webhook-Signature": "x",
                                  "X-WC-Webhook-Topic": "order.created"})
    assert resp.status_code == 401
    assert resp.headers["X-Request-ID"] == "req-abc.123"
    mine = [line for line in lines(json_log) if line.get("request_id") == "req-abc.123"]
    assert mine, json_log.getvalue()
    assert any("bad signature" in line["message"] and line.get("store_id") == record.id
               for line in mine)
    for line in mine:
        assert {"time", "level", "logger", "message"} <= set(line)
    # an unusable id is replaced, not echoed
    resp = requests.get(f"{bridge.url}/healthz", headers={"X-Request-ID": "bad id\x7f" * 20},
                        timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    assert requests.get(f"{bridge.url}/healthz", timeout=5).headers["X-Request-ID"]


def test_request_id_tokens():
    assert request_id_from("abc-123") == "abc-123"
    assert request_id_from("x" * 65) != "x" * 65
    assert request_id_from("a\nb") != "a\nb"
    assert request_id_from(None)


def test_a_full_run_logs_no_secret_or_contact_detail(bridge, connect_store, fake_wc, fake_upay,
                                                     json_log):
    record = connect_store(bridge)
    order = place(fake_wc)
    row = bridge.wait_state(order["id"], "done")
    fake_upay.complete_payment(row.invoice_id, "CAPTURED")
    wait_for(lambda: fake_wc.order(order["id"])["status"] == "processing")
    wait_for(lambda: bridge.order(order["id"]).payment_state == "paid")
    text = json_log.getvalue()
    parsed = lines(json_log)
    assert parsed and any(line.get("order_id") == str(order["id"]) for line in parsed)
    assert any(line["level"] == "DEBUG" for line in parsed) or len(parsed) > 3
    for secret in (WEBHOOK_SECRET, UPAY_KEY, record.secrets["consumer_key"],
                   record.secrets["consumer_secret"], BILLING["email"], BILLING["phone"],
                   BILLING["phone"].replace(" ", "")):
        assert secret not in text, secret


def test_a_line_repeated_on_every_request_is_held_back(caplog) -> None:
    # waitress warns "Task queue depth is N" on every request that finds its threads busy.
    import logging
    import time

    from bridge.logging_setup import hold_back_repeats

    hold_back_repeats("test.repeats", interval=0.3)
    hold_back_repeats("test.repeats", interval=0.3)  # idempotent: one filter
    log = logging.getLogger("test.repeats")
    with caplog.at_level(logging.WARNING, logger="test.repeats"):
        for depth in range(100):
            log.warning("Task queue depth is %d", depth)
        assert [r.getMessage() for r in caplog.records] == ["Task queue depth is 0"]
        time.sleep(0.35)
        log.warning("Task queue depth is %d", 7)
    assert caplog.records[-1].getMessage() == \
        "Task queue depth is 7 (99 more like it in the last 0.3 s)"


def test_waitress_queue_warnings_are_held_back_before_a_record_is_made(caplog) -> None:
    # A server with one thread and a slow app: every request after the first finds the thread
    # busy, and waitress warns "Task queue depth is N" for each of them.
    import logging
    import threading
    import time

    from waitress.server import create_server

    from bridge.logging_setup import hold_back_queue_warnings

    def slow(environ, start_response):
        time.sleep(0.05)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    server = create_server(slow, host="127.0.0.1", port=0, threads=1)
    hold_back_queue_warnings(server, interval=60)
    made = []
    real_make = logging.Logger.makeRecord

    def counting(self, *args, **kwargs):
        record = real_make(self, *args, **kwargs)
        if record.name == "waitress.queue":
            made.append(record)
        return record

    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    try:
        with caplog.at_level(logging.WARNING, logger="waitress.queue"):
            logging.Logger.makeRecord = counting  # type: ignore[method-assign]
            try:
                port = server.effective_port
                threads = [threading.Thread(target=requests.get, args=(f"http://127.0.0.1:{port}/",),
                                            kwargs={"timeout": 10}) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            finally:
                logging.Logger.makeRecord = real_make  # type: ignore[method-assign]
    finally:
        server.close()
    warnings = [r for r in caplog.records if r.name == "waitress.queue"]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("Task queue depth is")
    assert len(made) == 1  # the held-back ones never became records


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=400, deadline=None)
@given(message=_TEXT, name=_TEXT,
       ids=st.lists(_TEXT | st.integers() | st.none(), min_size=4, max_size=4))
def test_a_json_line_is_what_json_dumps_writes(message: str, name: str, ids: list) -> None:
    """The formatter writes its line itself; it is the object json.dumps would write, key for
    key and byte for byte (quotes, backslashes, control characters, any script)."""
    from bridge.logging_setup import request_id_var

    record = logging.LogRecord(name or "bridge", logging.WARNING, "(unknown file)", 0,
                               "%s!", (message,), None)
    context_id, record_id, store_id, order_id = ids
    for field, value in (("request_id", record_id), ("store_id", store_id),
                         ("order_id", order_id)):
        if value is not None:
            setattr(record, field, value)
    formatter = JSONFormatter()
    token = request_id_var.set(None if context_id is None else str(context_id))
    try:
        line = formatter.format(record)
    finally:
        request_id_var.reset(token)
    expected = {"time": formatter._time(record), "level": "WARNING", "logger": record.name,
                "message": f"{message}!"}
    if record_id is None and context_id is not None:
        expected["request_id"] = str(context_id)
    for field, value in (("request_id", record_id), ("store_id", store_id),
                         ("order_id", order_id)):
        if value is not None:
            expected[field] = str(value)
    assert line == json.dumps(expected, ensure_ascii=False)
