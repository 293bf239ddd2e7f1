"""PostgreSQL and Redis that stop answering: the bridge gives up within bounded times.

The fault is real, not a mock: a loopback TCP proxy in front of the real PostgreSQL and Redis
(conftest's scale-out servers) that can be made to stall. While stalled it keeps every socket
open and forwards no byte in either direction, and it accepts new connections without ever
answering them, which is what a hung server (or a network that swallows packets) looks like to a
client: the connection is there, the answer never comes. Without timeouts every thread that
touched the database then waited forever; ``/healthz`` hung instead of answering 503.

Bounds asserted here are generous on purpose (a wait designed to take ~3 s must end within 15 s):
the tests tell "bounded" from "forever", not one timing from another.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa

from bridge import db

from .conftest import PG_ADMIN_URL, REDIS_URL, PgDatabases, require_scaled, wait_for

# Every bounded wait below must end within this (the designs: 3 s for /healthz, 5 s for a new
# connection or a Redis command, statement timeout + 5 s for a statement on a stalled server).
GENEROUS = 15.0


class StallProxy:
    """A loopback TCP proxy to ``host:port`` that can be switched to "stall".

    Stalled, it forwards nothing either way but keeps the sockets open (the kernel still
    acknowledges what the client sends, as it does for a hung server), and it accepts new
    connections without connecting them anywhere. :meth:`resume` forwards what was held.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"stall-proxy-{self.port}").start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        """Drop every connection (a client still waiting on a stalled one gets an error)."""
        self._closed = True
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it; close() does not
            except OSError:
                pass
            sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # stalled: accepted, and never answered
        if self._closed:
            return
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        self._track(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # stalled: hold these bytes
                if self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def bounded(fn: Callable[[], Any],
            seconds: float = GENEROUS) -> tuple[Any, BaseException | None, float]:
    """``fn()`` on a thread: (result, exception, elapsed seconds); a call still running after
    ``seconds`` fails the test instead of hanging it (the thread is released when the proxy
    closes its sockets at teardown)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - start
    if thread.is_alive():
        pytest.fail(f"still waiting after {seconds:g} s: no timeout bounds this call")
    return box.get("result"), box.get("error"), elapsed


def _answers(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except Exception:  # noqa: BLE001 - not yet
        return False
    return True


def _proxy_for(url: str) -> StallProxy:
    parts = urlsplit(url)
    return StallProxy(parts.hostname or "127.0.0.1", parts.port or 0)


@pytest.fixture
def pg_proxy() -> Iterator[StallProxy]:
    require_scaled()
    proxy = _proxy_for(PG_ADMIN_URL)
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy() -> Iterator[StallProxy]:
    require_scaled()
    proxy = _proxy_for(REDIS_URL)
    yield proxy
    proxy.close()


@pytest.fixture
def databases() -> Iterator[PgDatabases]:
    require_scaled()
    made = PgDatabases()
    yield made
    made.drop_all()


def _through(proxy: StallProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


@pytest.fixture
def proxied(bridge_factory, databases, pg_proxy, redis_proxy):
    """A bridge (scale-out layout, no worker) whose database and queue are behind the proxies."""
    name = databases.create()
    bridge = bridge_factory(worker=False,
                            database_url=_through(pg_proxy, databases.url(name)),
                            queue_url=_through(redis_proxy, REDIS_URL), queue_name=name)
    assert bridge.runtime.engine.dialect.name == "postgresql"
    yield bridge
    # Release anything still waiting on a stalled socket before the bridge is closed.
    pg_proxy.close()
    redis_proxy.close()


def _healthz(bridge) -> requests.Response:
    return requests.get(f"{bridge.url}/healthz", timeout=GENEROUS + 5)


def _healthz_during_stall(bridge) -> tuple[requests.Response, float]:
    start = time.monotonic()
    try:
        resp = _healthz(bridge)
    except requests.Timeout:
        pytest.fail(f"/healthz did not answer within {GENEROUS + 5:g} s during a stall")
    return resp, time.monotonic() - start


# -- /healthz ----------------------------------------------------------------------------------

def test_healthz_answers_503_naming_the_database_while_postgres_stalls(proxied, pg_proxy):
    assert _healthz(proxied).status_code == 200  # the pool now holds an established connection
    pg_proxy.stall()
    # First on the pooled connection (its pre-ping gets no answer), then on a new connection
    # (accepted, never answered): both end in 503 within the probe's bound.
    for _ in range(2):
        resp, elapsed = _healthz_during_stall(proxied)
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["ok"] is False
        assert body["checks"]["database"].startswith("error"), body
        assert body["checks"]["queue"].startswith("ok"), body
        assert "database" in body["error"], body
        assert elapsed < GENEROUS, elapsed
    pg_proxy.resume()
    wait_for(lambda: _healthz(proxied).status_code == 200, timeout=30)


def test_healthz_answers_503_naming_the_queue_while_redis_stalls(proxied, redis_proxy):
    assert _healthz(proxied).status_code == 200
    redis_proxy.stall()
    for _ in range(2):
        resp, elapsed = _healthz_during_stall(proxied)
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["checks"]["queue"].startswith("error"), body
        assert body["checks"]["database"] == "ok", body
        assert "queue" in body["error"], body
        assert elapsed < GENEROUS, elapsed
    redis_proxy.resume()
    wait_for(lambda: _healthz(proxied).status_code == 200, timeout=30)


# -- the engine --------------------------------------------------------------------------------

def test_a_new_connection_to_a_stalled_postgres_fails_within_the_connect_timeout(databases,
                                                                                 pg_proxy):
    engine = db.make_engine(_through(pg_proxy, databases.url(databases.create())))
    try:
        pg_proxy.stall()
        _, error, elapsed = bounded(lambda: db.ping(engine))
        assert isinstance(error, sa.exc.OperationalError), error
        assert elapsed < GENEROUS
        pg_proxy.resume()
        db.ping(engine)
    finally:
        engine.dispose()


def test_connect_timeout_0_in_the_url_means_no_limit_as_libpq_reads_it(databases, pg_proxy):
    # The operator's URL wins, 0 included: libpq then waits as long as it takes. It used to be
    # raised to 2 s. A deadline (/healthz) still bounds it.
    url = _through(pg_proxy, databases.url(databases.create()))
    engine = db.make_engine(url + ("&" if "?" in url else "?") + "connect_timeout=0")
    try:
        pg_proxy.stall()
        box: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: box.update(ok=db.ping(engine) is None),
                                   daemon=True)
        waiting.start()
        waiting.join(4.0)
        assert waiting.is_alive(), box  # still connecting, past the 2 s it used to be cut at
        _, error, elapsed = bounded(lambda: db.ping(engine, timeout=2.0))
        assert isinstance(error, sa.exc.OperationalError), error
        assert elapsed < GENEROUS
        pg_proxy.resume()
        waiting.join(GENEROUS)
        assert box == {"ok": True}
    finally:
        engine.dispose()


def test_a_statement_on_a_stalled_connection_fails_within_a_bound(databases, pg_proxy):
    engine = db.make_engine(_through(pg_proxy, databases.url(databases.create())),
                            statement_timeout=2.0)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))  # established
            pg_proxy.stall()
            _, error, elapsed = bounded(lambda: conn.execute(sa.text("SELECT 1")))
            assert isinstance(error, sa.exc.OperationalError), error
            assert elapsed < GENEROUS
            # The connection's state is unknown: it is never used again.
            assert conn.invalidated
        pg_proxy.resume()
        db.ping(engine)  # a new connection, once the server answers again
    finally:
        engine.dispose()


def test_a_slow_statement_is_cancelled_by_the_statement_timeout(databases):
    engine = db.make_engine(databases.url(databases.create()), statement_timeout=1.0)
    try:
        with engine.connect() as conn:
            start = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(30)"))
            assert time.monotonic() - start < GENEROUS
            conn.rollback()
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1  # the server answered: kept
    finally:
        engine.dispose()


def test_the_bridge_engine_sets_a_generous_statement_timeout(proxied):
    with proxied.runtime.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "30s"
        # The migration at start lifted both limits for its transaction only.
        assert conn.connection.dbapi_connection.stall_timeout == 35.0


def test_web_and_worker_threads_are_released_during_a_postgres_stall(bridge_factory, databases,
                                                                     pg_proxy, monkeypatch):
    # A short statement timeout, so the bound (statement timeout + grace) is quick to test.
    monkeypatch.setattr(db, "STATEMENT_TIMEOUT", 2.0)
    bridge = bridge_factory(worker=False,
                            database_url=_through(pg_proxy, databases.url(databases.create())),
                            queue_url="memory://")
    bridge.runtime.pipeline.sweep()
    pg_proxy.stall()
    _, error, elapsed = bounded(bridge.runtime.pipeline.sweep)  # a worker's job
    assert isinstance(error, sa.exc.OperationalError), error
    assert elapsed < GENEROUS
    _, error, elapsed = bounded(lambda: requests.get(f"{bridge.url}/metrics", timeout=60))
    assert error is None and elapsed < GENEROUS  # a web thread (the scrape reads the database)
    pg_proxy.resume()
    wait_for(lambda: _answers(bridge.runtime.pipeline.sweep), timeout=30)
    pg_proxy.close()


# -- the queue ---------------------------------------------------------------------------------

def test_queueing_a_job_during_a_redis_stall_gives_up_within_a_bound(proxied, redis_proxy):
    jobs = proxied.runtime.jobs
    jobs.enqueue(1)
    redis_proxy.stall()
    # A web thread queueing a job: the failure is logged (the sweep finds the order later).
    _, error, elapsed = bounded(lambda: jobs.enqueue(2))
    assert error is None and elapsed < GENEROUS
    _, error, elapsed = bounded(jobs.depth)
    assert error is not None and elapsed < GENEROUS
    redis_proxy.resume()
    wait_for(lambda: jobs.depth() >= 1, timeout=30)
