#!/usr/bin/env python3
"""Webhook intake benchmark: the bridge's signed WooCommerce ``order.created`` endpoint
against a bare Flask app that only reads the body and answers 200.

Both apps are served by waitress in the same way (same ``--threads``), each in its own
subprocess (this script re-runs itself with ``--serve bridge|bare``). One load generator in
this process drives both with the same signed, realistic KWD order body; every request gets a
distinct order id (and delivery id), so each one records a new order in the bridge.

Three measurements per app:

1. closed loop, ``--concurrency`` client threads on keep-alive connections: throughput in
   requests/s, in ``--rounds`` rounds (default 5), each ``--duration`` seconds of bare, then
   of the bridge. Each round's ratio bridge/bare is one sample; the median is the result,
   printed with every round's ratio. Both servers run for the whole benchmark, so the rounds
   alternate between them: a drift of the machine's speed (other load, the host) moves both
   halves of a round alike, where one long run of each would put it into the ratio;
2. the same with ``--overload`` client threads (default 4 x ``--threads``): more deliveries
   at once than the server has threads, as in a flash sale, so requests queue in waitress;
3. open loop at a fixed ``--rate`` (default 100 requests/s) for ``--duration`` seconds:
   p50/p99 latency, measured from each request's *scheduled* send time (so a stalled server
   is not hidden by the client waiting for it).

Both servers are made as ``upay-bridge serve`` makes its server (``bridge/web_server.py``) and
run with the interpreter switch interval it sets (``bridge/gil.py``); ``--switch-ms 5`` serves
both with CPython's default instead, ``--waitress-channels`` with waitress's own connections.

The bridge runs the embedded default (SQLite database and queue) with NO worker: only intake
is measured. Goal from the issue: ratio >= 0.6 and p99 < 50 ms at 100 rps. Nothing here asserts
a timing: the script prints the numbers and whether the goal was met.

Run: ``/tmp/v/bin/python bench/webhook_accept.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEBHOOK_SECRET = "whsec-bench-4b1d7e29c0aa57f3"
SENTINEL_ID = 987654321  # placeholder order id in the body template, replaced per request


# ------------------------------------------------------------------------------ servers

def serve_bridge(threads: int, data_dir: Path, switch_ms: float | None = None,
                 quiet: bool = True) -> None:
    """Child process: the bridge (embedded SQLite layout), web only, no worker. It logs as
    ``upay-bridge serve`` does: a JSON line per recorded order to stderr (the child's log
    file), at UPAY_BRIDGE_LOG_LEVEL (default INFO) in UPAY_BRIDGE_LOG_FORMAT (default json)."""
    from bridge.app import create_app
    from bridge.logging_setup import configure

    configure(os.environ.get("UPAY_BRIDGE_LOG_LEVEL", "INFO"),
              os.environ.get("UPAY_BRIDGE_LOG_FORMAT", "json"))
    rt, record = bench_runtime(data_dir)
    run_server(create_app(rt), threads, f"/webhooks/woocommerce/{record.id}", switch_ms, quiet)


def bench_runtime(data_dir: Path, **overrides: Any) -> tuple[Any, Any]:
    """The bridge's runtime on SQLite files in ``data_dir`` (embedded layout, no worker; or
    what ``overrides`` say, such as another database) and the WooCommerce store every intake
    benchmark posts to, signed with WEBHOOK_SECRET."""
    from bridge.config import load_settings
    from bridge.crypto import generate_key
    from bridge.registry import StoreSettings
    from bridge.runtime import bootstrap

    settings = load_settings({}, data_dir=data_dir).with_overrides(
        database_url=f"sqlite:///{data_dir / 'bridge.db'}",
        queue_url=f"sqlite:///{data_dir / 'queue.db'}",
        secret_keys=(generate_key(),),
        # Nothing is called during intake; point UPay at a closed loopback port anyway.
        upay_sandbox_url="http://127.0.0.1:9/api/v1/", upay_production_url="http://127.0.0.1:9/api/v1/"
    ).with_overrides(**overrides)
    rt = bootstrap(settings)
    record = rt.registry.add(
        "woocommerce", "http://127.0.0.1:9",
        {"consumer_key": "ck_" + "1" * 40, "consumer_secret": "cs_" + "2" * 40,
         "webhook_secret": WEBHOOK_SECRET, "upay_api_key": "upay-bench-key"},
        name="Bench shop", upay_sandbox=True, settings=StoreSettings())
    return rt, record


def serve_bare(threads: int, switch_ms: float | None = None, quiet: bool = True) -> None:
    """Child process: a Flask app whose one endpoint reads the body and answers 200."""
    import flask

    app = flask.Flask("bare")

    @app.post("/webhooks/woocommerce/<store_id>")
    def receive(store_id: str) -> tuple[str, int]:
        flask.request.get_data()
        return "", 200

    run_server(app, threads, "/webhooks/woocommerce/bare", switch_ms, quiet)


def run_server(app: Any, threads: int, path: str, switch_ms: float | None = None,
               quiet: bool = True) -> None:
    """Both apps are served by this, as ``upay-bridge serve`` serves the bridge: waitress with
    ``threads`` threads made by ``bridge.web_server.make_server`` (its connections left out of
    the write poll while a request thread writes, its "Task queue depth" warning held back) and
    the interpreter's switch interval set (``switch_ms``: another interval; ``quiet=False``:
    waitress's own connections)."""
    from bridge.gil import SWITCH_INTERVAL, tune_for_serving
    from bridge.web_server import make_server

    tune_for_serving(SWITCH_INTERVAL if switch_ms is None else switch_ms / 1000)

    server = make_server(app, host="127.0.0.1", port=0, threads=threads)
    if not quiet:
        from waitress.channel import HTTPChannel
        server.channel_class = HTTPChannel
    print(json.dumps({"port": server.effective_port, "path": path}), flush=True)
    server.run()


@dataclass
class Child:
    proc: subprocess.Popen[str]
    port: int
    path: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_child(kind: str, threads: int, data_dir: Path, log: Path,
                script: str = __file__, switch_ms: float | None = None,
                quiet: bool = True, cpus: str = "") -> Child:
    """``script --serve kind`` in a subprocess; it prints the port and path it serves."""
    cmd = [sys.executable, script, "--serve", kind, "--threads", str(threads),
           "--data-dir", str(data_dir)]
    if cpus:
        cmd += ["--cpus", cpus]
    if switch_ms is not None:
        cmd += ["--switch-ms", str(switch_ms)]
    if not quiet:
        cmd += ["--waitress-channels"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{kind} server did not start; see {log}")
    info = json.loads(line)
    return Child(proc, int(info["port"]), str(info["path"]))


# ------------------------------------------------------------------------------ load

def body_template() -> bytes:
    """A realistic KWD ``order.created`` body, as the fake WooCommerce store would send it,
    with the order id and number set to SENTINEL_ID (replaced per request)."""
    from bridge.fakes.woocommerce import FakeWooCommerce, wp_json_encode

    fake = FakeWooCommerce(decimals=3, currency="KWD")
    fake.set_base_url("https://shop.example.com")
    fake.add_product(11, "Arabic coffee beans 500 g", "4.750", sku="COF-500")
    fake.add_product(12, "Dallah coffee pot", "12.500", sku="DAL-1")
    fake.add_product(13, "Dates gift box", "7.250", sku="DAT-GB")
    order = fake.create_order(
        [{"product_id": 11, "quantity": 2}, {"product_id": 12, "quantity": 1},
         {"product_id": 13, "quantity": 3}],
        shipping_lines=[{"method_id": "flat_rate", "method_title": "Flat rate", "total": "1.500"}])
    order["id"] = SENTINEL_ID
    order["number"] = str(SENTINEL_ID)
    return wp_json_encode(order).encode("utf-8")


class Load:
    """Makes a distinct signed request per call (thread-safe: itertools.count is atomic)."""

    def __init__(self, template: bytes, first_id: int) -> None:
        from bridge.fakes.woocommerce import webhook_signature

        self._sign = webhook_signature
        self.template = template
        self.ids = itertools.count(first_id)

    def request(self) -> tuple[bytes, dict[str, str]]:
        order_id = next(self.ids)
        body = self.template.replace(str(SENTINEL_ID).encode(), str(order_id).encode())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "WooCommerce/7.9.0 Hookshot (WordPress/6.1.9)",
            "X-WC-Webhook-Source": "https://shop.example.com/",
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order",
            "X-WC-Webhook-Event": "created",
            "X-WC-Webhook-Signature": self._sign(body, WEBHOOK_SECRET),
            "X-WC-Webhook-ID": "1",
            "X-WC-Webhook-Delivery-ID": f"{order_id:032x}",
        }
        return body, headers


@dataclass
class Result:
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, latency: float) -> None:
        with self.lock:
            if ok:
                self.ok += 1
                self.latencies.append(latency)
            else:
                self.errors += 1


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]) -> bool:
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status == 200


def send(conn: http.client.HTTPConnection, child: Child, body: bytes,
         headers: dict[str, str]) -> tuple[bool, http.client.HTTPConnection]:
    """One POST; on a broken connection, counts a failure and opens a new connection."""
    try:
        return post(conn, child.path, body, headers), conn
    except (OSError, http.client.HTTPException):
        conn.close()
        return False, http.client.HTTPConnection("127.0.0.1", child.port, timeout=30)


def run_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def closed_loop(child: Child, load: Load, concurrency: int, duration: float) -> Result:
    """``concurrency`` threads, each posting back to back on its keep-alive connection."""
    result = Result()
    start = time.monotonic()
    deadline = start + duration

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", child.port, timeout=30)
        while time.monotonic() < deadline:
            body, headers = load.request()
            t0 = time.perf_counter()
            ok, conn = send(conn, child, body, headers)
            result.add(ok, time.perf_counter() - t0)
        conn.close()

    run_all([threading.Thread(target=run) for _ in range(concurrency)])
    result.elapsed = time.monotonic() - start
    return result


def open_loop(child: Child, load: Load, rate: float, duration: float, senders: int = 32) -> Result:
    """Request i is due at start + i/rate; sender k sends requests k, k+senders, ...
    Latency counts from the due time, so time spent waiting for a busy server is included."""
    result = Result()
    total = int(rate * duration)
    start = time.perf_counter() + 0.1

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", child.port, timeout=30)
        for i in range(k, total, senders):
            body, headers = load.request()
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ok, conn = send(conn, child, body, headers)
            result.add(ok, time.perf_counter() - due)
        conn.close()

    run_all([threading.Thread(target=run, args=(k,)) for k in range(senders)])
    result.elapsed = time.perf_counter() - start
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_orders(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "bridge.db") as conn:
        return int(conn.execute("select count(*) from orders").fetchone()[0])


def data_dir_for(tmp: Path, kind: str) -> Path:
    """The data folder ``start_children`` gives the app ``kind`` in ``tmp``."""
    return tmp / kind.replace("+", "-")


def start_children(kinds: list[str], threads: int, tmp: Path, script: str = __file__,
                   **options: Any) -> dict[str, Child]:
    """``script --serve kind`` for each kind, each with its data folder in ``tmp`` (named
    after the kind) and its log beside it; all stopped again if one fails to start."""
    children: dict[str, Child] = {}
    try:
        for kind in kinds:
            data_dir = data_dir_for(tmp, kind)
            data_dir.mkdir()
            children[kind] = start_child(kind, threads, data_dir, tmp / f"{data_dir.name}.log",
                                         script, **options)
    except BaseException:
        for child in children.values():
            child.stop()
        raise
    return children


def alternate(children: dict[str, Child], loads: dict[str, Load], concurrency: int,
              duration: float, rounds: int,
              after_run: Callable[[str, Result], None] | None = None) -> dict[str, list[Result]]:
    """``rounds`` rounds, each a closed-loop run of ``duration`` seconds on every child in
    turn; every child's results, one per round. All the children run for the whole time (the
    idle ones cost nothing), so a drift of the machine's speed moves every app of a round alike:
    each round's ratios are one sample. ``after_run(kind, result)`` is called after each run,
    outside the measured time."""
    results: dict[str, list[Result]] = {kind: [] for kind in children}
    for _ in range(rounds):
        for kind, child in children.items():
            result = closed_loop(child, loads[kind], concurrency, duration)
            results[kind].append(result)
            if after_run is not None:
                after_run(kind, result)
            time.sleep(0.5)
    return results


def measure(args: argparse.Namespace, template: bytes, tmp: Path) -> dict[str, Any]:
    """Both servers run side by side for the whole benchmark. The closed-loop throughput is
    measured in ``--rounds`` rounds (``alternate``), each a ``--duration`` run of bare and then
    of the bridge; each round's ratio is one sample and the median of the rounds is the result,
    reported with the lowest and highest.
    """
    children = start_children(["bare", "bridge"], args.threads, tmp, switch_ms=args.switch_ms,
                              quiet=not args.waitress_channels, cpus=args.cpus)
    loads = {kind: Load(template, first_id=1000) for kind in children}
    out: dict[str, Any] = {"bare": {}, "bridge": {}}
    try:
        for kind, child in children.items():
            closed_loop(child, loads[kind], args.concurrency, args.warmup)  # not reported
        runs = alternate(children, loads, args.concurrency, args.duration, args.rounds)
        for kind, child in children.items():
            over = closed_loop(child, loads[kind], args.overload or 4 * args.threads,
                               args.duration)
            out[kind].update(overload_rps=over.ok / over.elapsed, overload_errors=over.errors)
            time.sleep(0.5)
        for kind, child in children.items():
            ol = open_loop(child, loads[kind], args.rate, args.duration)
            out[kind].update(
                open_rate=args.rate, open_ok=ol.ok, open_errors=ol.errors,
                open_p50_ms=pct(ol.latencies, 0.5) * 1000,
                open_p99_ms=pct(ol.latencies, 0.99) * 1000,
                open_mean_ms=statistics.fmean(ol.latencies) * 1000 if ol.latencies else
                float("nan"))
    finally:
        for child in children.values():
            child.stop()
    rates = {kind: [r.ok / r.elapsed for r in runs[kind]] for kind in children}
    out["rounds"] = [bridge / bare for bridge, bare in zip(rates["bridge"], rates["bare"])]
    for kind in children:
        latencies = [x for r in runs[kind] for x in r.latencies]
        out[kind].update(throughput_rps=statistics.median(rates[kind]),
                         throughput_rps_rounds=rates[kind],
                         throughput_errors=sum(r.errors for r in runs[kind]),
                         closed_p50_ms=pct(latencies, 0.5) * 1000,
                         closed_p99_ms=pct(latencies, 0.99) * 1000,
                         sent=next(loads[kind].ids) - 1000)
    out["bridge"]["orders_recorded"] = count_orders(data_dir_for(tmp, "bridge"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="waitress threads (both apps; the CLI default)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads for throughput")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds per measurement (per app and round in the closed loop)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="closed-loop rounds, each bare then bridge (the median ratio counts)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unreported warm-up")
    parser.add_argument("--overload", type=int, default=0,
                        help="client threads for the overload throughput (default 4 x --threads)")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests per second")
    parser.add_argument("--switch-ms", type=float, default=None,
                        help="interpreter switch interval of both servers, in ms "
                             "(default: what upay-bridge serve sets)")
    parser.add_argument("--waitress-channels", action="store_true",
                        help="serve both apps with waitress's own connections instead of "
                             "bridge.web_server.QuietChannel (for an A/B)")
    parser.add_argument("--cpus", default="",
                        help="run both servers on these CPUs only (comma-separated numbers, as "
                             "taskset -c; default: wherever the kernel puts their threads)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--serve", choices=("bridge", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve and args.cpus:
        # Before any thread starts: threads inherit the affinity of the one that makes them.
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    if args.serve == "bridge":
        serve_bridge(args.threads, args.data_dir, args.switch_ms, not args.waitress_channels)
        return
    if args.serve == "bare":
        serve_bare(args.threads, args.switch_ms, not args.waitress_channels)
        return

    template = body_template()
    from bridge.gil import SWITCH_INTERVAL

    switch = args.switch_ms if args.switch_ms is not None else SWITCH_INTERVAL * 1000
    print(f"body: {len(template)} bytes; waitress threads={args.threads}; "
          f"switch interval {switch:g} ms; "
          f"connections: {'waitress' if args.waitress_channels else 'QuietChannel'}; "
          f"closed loop {args.concurrency} clients x {args.duration:.0f}s "
          f"(overload: {args.overload or 4 * args.threads} clients); "
          f"open loop {args.rate:.0f} rps x {args.duration:.0f}s; cpus={os.cpu_count()}"
          + (f"; servers on CPU {args.cpus}" if args.cpus else ""))
    with tempfile.TemporaryDirectory(prefix="bench-accept-") as tmpname:
        result = measure(args, template, Path(tmpname))
    bare, bridge, rounds = result["bare"], result["bridge"], result["rounds"]
    ratio = statistics.median(rounds)
    for name, r in (("bare", bare), ("bridge", bridge)):
        print(f"{name:>6}: {r['throughput_rps']:8.1f} req/s at max concurrency, median of "
              f"{args.rounds} rounds ({', '.join(f'{x:.0f}' for x in r['throughput_rps_rounds'])}; "
              f"errors {r['throughput_errors']}); at {r['open_rate']:.0f} rps: "
              f"p50 {r['open_p50_ms']:.1f} ms, p99 {r['open_p99_ms']:.1f} ms "
              f"({r['open_ok']} ok, {r['open_errors']} errors)")
    over_ratio = bridge["overload_rps"] / bare["overload_rps"]
    print(f"overload ({args.overload or 4 * args.threads} clients): bare "
          f"{bare['overload_rps']:.1f} req/s, bridge {bridge['overload_rps']:.1f} req/s "
          f"(errors {bare['overload_errors']}, {bridge['overload_errors']}); "
          f"ratio {over_ratio:.2f}")
    print(f"bridge orders recorded: {bridge['orders_recorded']} of {bridge['sent']} requests sent")
    ratio_ok = ratio >= 0.6
    p99_ok = bridge["open_p99_ms"] < 50.0
    print(f"ratio bridge/bare per round: {', '.join(f'{x:.2f}' for x in rounds)}; "
          f"{sum(x >= 0.6 for x in rounds)} of {len(rounds)} rounds at 0.6 or more")
    print(f"ratio bridge/bare: {ratio:.2f}, median of {len(rounds)} rounds "
          f"(lowest {min(rounds):.2f}, highest {max(rounds):.2f}; "
          f"goal >= 0.6: {'MET' if ratio_ok else 'NOT MET'})")
    print(f"bridge p99 at {args.rate:.0f} rps: {bridge['open_p99_ms']:.1f} ms "
          f"(goal < 50 ms: {'MET' if p99_ok else 'NOT MET'})")
    if args.json:
        print(json.dumps({"bare": bare, "bridge": bridge, "ratio": ratio, "round_ratios": rounds,
                          "overload_ratio": over_ratio,
                          "ratio_goal_met": ratio_ok, "p99_goal_met": p99_ok}, indent=2))


if __name__ == "__main__":
    main()
