"""The webhook endpoint is served in front of Flask (bridge/web/webhooks.py): it must answer
the way the Flask app answers every other request, over real HTTP."""

from __future__ import annotations

import http.client
import json
import logging
from urllib.parse import urlsplit

import pytest
import requests

from bridge import db
from bridge.stores.woocommerce import webhook_signature

from .conftest import WEBHOOK_SECRET
from . import test_observability
from .test_observability import lines
from .test_webhooks import assert_json_error, order_payload, php_json, post

json_log = test_observability.json_log  # the fixture, shared


@pytest.fixture
def quiet_bridge(bridge_factory):
    return bridge_factory(worker=False)


def test_answer_has_the_apps_headers_and_the_callers_request_id(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge)
    resp = post(quiet_bridge, record, php_json(order_payload(501)),
                extra={"X-Request-ID": "shop-req-501"})
    assert resp.status_code == 200 and resp.json() == {"ok": True, "order": "queued"}
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Request-ID"] == "shop-req-501"
    page = requests.get(f"{quiet_bridge.url}/healthz", timeout=5)  # a Flask answer
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Cache-Control"):
        assert resp.headers[name] == page.headers[name], name
    # a caller's id that is not a short token is replaced, as on every other endpoint
    resp = post(quiet_bridge, record, php_json(order_payload(502)),
                extra={"X-Request-ID": "x" * 200})
    assert resp.status_code == 200 and len(resp.headers["X-Request-ID"]) == 32


def test_log_lines_of_a_delivery_carry_its_request_id(quiet_bridge, connect_store, json_log):
    record = connect_store(quiet_bridge)
    post(quiet_bridge, record, php_json(order_payload(503)), extra={"X-Request-ID": "rid-503"})
    post(quiet_bridge, record, php_json(order_payload(504)), signature="forged",
         extra={"X-Request-ID": "rid-504"})
    logged = lines(json_log)
    accepted = [line for line in logged if line.get("request_id") == "rid-503"]
    rejected = [line for line in logged if line.get("request_id") == "rid-504"]
    assert any("order 503" in line["message"] and "queued" in line["message"]
               for line in accepted), logged
    assert any("bad signature" in line["message"] for line in rejected)
    assert any("rejected: 401 bad_signature" in line["message"] for line in rejected)
    assert not [line for line in logged if "rid-50" in json.dumps(line)
                and line.get("request_id") not in ("rid-503", "rid-504")]


def test_a_failure_inside_is_a_json_500_and_is_logged(quiet_bridge, connect_store, caplog,
                                                      monkeypatch):
    record = connect_store(quiet_bridge)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(quiet_bridge.runtime.pipeline, "accept", broken)
    with caplog.at_level(logging.ERROR):
        resp = post(quiet_bridge, record, php_json(order_payload(505)))
    assert_json_error(resp, 500, "internal_error")
    assert "disk on fire" not in resp.text  # nothing internal is echoed
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("path", ["/webhooks/woocommerce", "/webhooks/woocommerce/abc/extra",
                                  "/webhooks/", "/webhooks/woocommerce/"])
def test_a_post_to_no_webhook_url_is_flasks_json_404(quiet_bridge, path):
    resp = requests.post(quiet_bridge.url + path, data=b"{}", timeout=5)
    assert_json_error(resp, 404, "not_found")


def test_unknown_saleor_and_wrong_kind_are_404(quiet_bridge, connect_store):
    record = connect_store(quiet_bridge)
    resp = requests.post(f"{quiet_bridge.url}/webhooks/saleor", data=b"{}", timeout=5,
                         headers={"Saleor-Api-Url": "https://nowhere.example/graphql/"})
    assert_json_error(resp, 404, "unknown_store")
    resp = requests.post(f"{quiet_bridge.url}/webhooks/saleor/{record.id}", data=b"{}", timeout=5)
    assert_json_error(resp, 404, "unknown_store")
    assert quiet_bridge.count(db.deliveries) == 0


def test_a_chunked_delivery_is_read_whole_and_an_oversized_one_is_413(quiet_bridge,
                                                                      connect_store):
    record = connect_store(quiet_bridge)
    body = php_json(order_payload(506))
    target = urlsplit(quiet_bridge.webhook_url(record))

    def send_chunked(data: bytes) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        conn.putrequest("POST", target.path)
        for name, value in {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                            "X-WC-Webhook-Topic": "order.created",
                            "X-WC-Webhook-Source": record.url + "/",
                            "X-WC-Webhook-Signature": webhook_signature(data, WEBHOOK_SECRET),
                            "X-WC-Webhook-Delivery-ID": "c" * 32}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for i in range(0, len(data), 1000):
            piece = data[i:i + 1000]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        return conn.getresponse()

    answer = send_chunked(body)
    assert answer.status == 200 and json.loads(answer.read())["order"] == "queued"
    limit = quiet_bridge.runtime.settings.max_body_bytes
    answer = send_chunked(body + b" " * (limit + 1))
    assert answer.status == 413
    assert json.loads(answer.read())["error"]["code"] == "body_too_large"
    assert quiet_bridge.count(db.orders) == 1


# -- the endpoint answers as the Flask app's views did (a review of the move out of Flask) -----

@pytest.fixture
def wsgi(quiet_bridge):
    from bridge.app import create_app

    return create_app(quiet_bridge.runtime).test_client()


def test_a_body_shorter_than_its_content_length_is_flasks_400_not_a_500(
        quiet_bridge, connect_store, wsgi, caplog):
    record = connect_store(quiet_bridge)
    body = php_json(order_payload(507))
    with caplog.at_level(logging.INFO):
        resp = wsgi.post(f"/webhooks/woocommerce/{record.id}", data=body,
                         environ_overrides={"CONTENT_LENGTH": str(len(body) + 50)})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["code"] == "bad_request"
    assert not [r for r in caplog.records if r.exc_info]
    assert quiet_bridge.count(db.deliveries) == 0 and quiet_bridge.count(db.orders) == 0


@pytest.mark.parametrize("raw, shown", [
    ("/webhooks/woocommerce/%C3%A9t%C3%A9", "no woocommerce store with id 'été'"),
    ("/webhooks/w%C3%B6o/abc", "no wöo store with id 'abc'"),
    ("/webhooks/woocommerce/%FF%FE", "no woocommerce store with id '\ufffd\ufffd'"),
])
def test_a_non_ascii_path_is_read_as_utf8_as_flask_reads_it(wsgi, caplog, raw, shown):
    from urllib.parse import unquote

    with caplog.at_level(logging.INFO):
        resp = wsgi.post(raw, data=b"{}")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["message"] == shown
    path = unquote(raw, errors="replace")
    assert [r.name for r in caplog.records
            if r.getMessage() == f"POST {path} rejected: 404 unknown_store"] == ["bridge.app"]


def test_a_lowercase_post_is_a_post_as_for_flask(quiet_bridge, connect_store, wsgi):
    # werkzeug's development server passes the method as sent; Flask upper-cases it.
    record = connect_store(quiet_bridge)
    body = php_json(order_payload(508))
    resp = wsgi.post(f"/webhooks/woocommerce/{record.id}", data=body,
                     headers={"X-WC-Webhook-Topic": "order.created",
                              "X-WC-Webhook-Source": record.url + "/",
                              "X-WC-Webhook-Signature": webhook_signature(body, WEBHOOK_SECRET)},
                     environ_overrides={"REQUEST_METHOD": "post"})
    assert resp.status_code == 200 and resp.get_json() == {"ok": True, "order": "queued"}


def test_flask_still_routes_post_to_the_webhook_urls(quiet_bridge, connect_store, wsgi):
    record = connect_store(quiet_bridge)
    allowed = wsgi.options(f"/webhooks/woocommerce/{record.id}").headers["Allow"]
    assert "POST" in allowed
    assert "POST" in wsgi.options("/webhooks/saleor").headers["Allow"]
    # a doubled slash is merged by Flask's routing, with a redirect that keeps the method
    resp = wsgi.post(f"/webhooks//woocommerce/{record.id}", data=b"{}")
    assert resp.status_code == 308
    assert resp.headers["Location"].endswith(f"/webhooks/woocommerce/{record.id}")


def test_error_answers_match_flasks_byte_for_byte(quiet_bridge, connect_store, wsgi, caplog):
    record = connect_store(quiet_bridge)
    limit = quiet_bridge.runtime.settings.max_body_bytes
    with caplog.at_level(logging.INFO):
        resp = wsgi.post(f"/webhooks/woocommerce/{record.id}", data=b"x" * (limit + 1))
    assert resp.status == "413 REQUEST ENTITY TOO LARGE"
    assert resp.get_json()["error"] == {
        "code": "body_too_large",
        "message": "The data value transmitted exceeds the capacity limit."}
    assert resp.headers["Vary"] == "Cookie"
    assert [r.name for r in caplog.records if "rejected: 413" in r.getMessage()] == ["bridge.app"]
    body = b'{"id": 1}'
    resp = wsgi.post(f"/webhooks/woocommerce/{record.id}", data=body,
                     headers={"X-WC-Webhook-Topic": "product.created",
                              "X-WC-Webhook-Source": record.url + "/",
                              "X-WC-Webhook-Signature": webhook_signature(body, WEBHOOK_SECRET)})
    assert resp.get_data() == b'{"ignored":"product.created","ok":true}\n'  # jsonify's order


# -- the endpoint's own readers of the request: what werkzeug's would give ---------------------

class _Pieces:
    """A terminated input stream that hands its body over a few bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        piece, self.data = self.data[:size], self.data[size:]
        return piece


@pytest.mark.parametrize("length", [0, 1, 99, 100, 101, 250])
@pytest.mark.parametrize("announced", [True, False])  # Content-Length, or chunked (none)
@pytest.mark.parametrize("terminated", [True, False])  # waitress marks its input terminated
def test_the_body_is_read_as_werkzeug_reads_it(length: int, announced: bool,
                                                terminated: bool) -> None:
    import io

    from werkzeug.exceptions import RequestEntityTooLarge
    from werkzeug.wsgi import get_input_stream

    from bridge.web.webhooks import _read_body

    data, limit = bytes(range(256))[:length], 100

    def environ(stream: object) -> dict:
        env = {"wsgi.input": stream}
        if announced:
            env["CONTENT_LENGTH"] = str(length)
        if terminated:
            env["wsgi.input_terminated"] = True
        return env

    try:
        expected = get_input_stream(environ(io.BytesIO(data)), max_content_length=limit + 1).read()
        if len(expected) > limit:
            expected = None
    except RequestEntityTooLarge:
        expected = None
    for stream in (io.BytesIO(data), _Pieces(data, 7)):
        assert _read_body(environ(stream), limit) == expected, stream
    if terminated:  # what waitress serves: the whole body up to the limit, else refused
        assert expected == (data if length <= limit else None)


@pytest.mark.parametrize("length", ["\u00b2", " 5", "-1", "abc", "", "999", "5"])
@pytest.mark.parametrize("chunked", [True, False])
def test_an_odd_content_length_reads_as_werkzeug_reads_it(length: str, chunked: bool) -> None:
    import io

    from werkzeug.exceptions import RequestEntityTooLarge
    from werkzeug.wsgi import get_input_stream

    from bridge.web.webhooks import _read_body

    def environ() -> dict:
        env = {"wsgi.input": io.BytesIO(b"12345"), "wsgi.input_terminated": True,
               "CONTENT_LENGTH": length}
        if chunked:
            env["HTTP_TRANSFER_ENCODING"] = "chunked"
        return env

    try:
        expected = get_input_stream(environ(), max_content_length=11).read()
    except RequestEntityTooLarge:
        expected = None
    assert _read_body(environ(), 10) == expected


@pytest.mark.parametrize("name", ["X-WC-Webhook-Signature", "x-wc-webhook-topic", "Content-Type",
                                  "content-length", "Saleor-Api-Url", "X-Missing", "X-Request-ID"])
def test_the_header_view_reads_as_werkzeugs(name: str) -> None:
    from werkzeug.datastructures import EnvironHeaders

    from bridge.web.webhooks import _Headers

    environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "12",
               "HTTP_X_WC_WEBHOOK_SIGNATURE": "c2ln", "HTTP_X_WC_WEBHOOK_TOPIC": "order.created",
               "HTTP_SALEOR_API_URL": "https://s.example/graphql/", "HTTP_CONTENT_TYPE": "x"}
    ours, theirs = _Headers(environ), EnvironHeaders(environ)
    for _ in range(2):  # the second read comes from the kept key
        assert ours.get(name) == theirs.get(name)
        assert ours.get(name, "-") == theirs.get(name, "-")
        assert ours.get(name, type=len) == theirs.get(name, type=len)
        assert (name in ours) == (name in theirs)
        if name in theirs:
            assert ours[name] == theirs[name]
        else:
            with pytest.raises(KeyError):
                ours[name]
    assert dict(ours) == dict(theirs)
