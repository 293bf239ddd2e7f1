"""Prometheus metrics, one ``CollectorRegistry`` per runtime (never the global default registry).

Several runtimes (tests, or the embedded layout's web app plus workers) may live in one process;
each gets its own registry, so they never collide. Counters and the latency histogram are *per
process*: with ``serve --no-worker`` and a separate ``upay-bridge worker`` the invoice counters and
most UPay latencies move in the worker's process, which has no ``/metrics`` of its own; that is
normal for Prometheus (each process is scraped, or the counters are read from the process that does
the work). The two gauges are read at scrape time from shared state (the queue and the database),
so they are right from any web process.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

from . import db

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .runtime import Runtime

__all__ = ["Metrics", "of", "for_runtime", "observe_upay", "CONTENT_TYPE_LATEST"]

_ATTR = "_upay_bridge_metrics"
_lock = threading.Lock()
_live: "weakref.WeakSet[Metrics]" = weakref.WeakSet()


class Metrics:
    def __init__(self, pipeline: Pipeline) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._pipeline = weakref.ref(pipeline)
        self._engine = pipeline.engine
        self._depth: Callable[[], int] | None = None
        r = self.registry
        self.deliveries = Counter("upay_bridge_deliveries", "Webhook deliveries recorded",
                                  ["store_kind", "outcome"], registry=r)
        self._delivery_counts: dict[tuple[str, str], Any] = {}
        self.invoices_created = Counter("upay_bridge_invoices_created",
                                        "Invoices created at UPay", registry=r)
        self.invoices_failed = Counter("upay_bridge_invoices_failed",
                                       "Invoices UPay refused (the order failed)", registry=r)
        self.upay_request_seconds = Histogram(
            "upay_bridge_upay_request_seconds", "Latency of requests to UPay's API", ["endpoint"],
            registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")))
        for endpoint in ("charge", "status"):
            self.upay_request_seconds.labels(endpoint)
        self.queue_depth = Gauge("upay_bridge_queue_depth", "Jobs pending in the queue",
                                 registry=r)
        self.queue_depth.set_function(self._queue_depth)
        self.reconciliation_lag = Gauge(
            "upay_bridge_reconciliation_lag_seconds",
            "Age of the oldest open invoice whose payment check is due (0 if none)", registry=r)
        self.reconciliation_lag.set_function(self._reconciliation_lag)

    def delivered(self, store_kind: str, outcome: str) -> None:
        """Count one delivery. Every webhook of a burst passes here: the labelled counter is
        kept, where ``labels()`` would look it up under the metric's lock each time."""
        count = self._delivery_counts.get((store_kind, outcome))
        if count is None:
            count = self._delivery_counts.setdefault(
                (store_kind, outcome), self.deliveries.labels(store_kind, outcome))
        count.inc()

    def owns_client(self, client: Any) -> bool:
        pipeline = self._pipeline()
        if pipeline is None:
            return False
        clients = getattr(pipeline, "_clients", {})
        return any(c is client for c in list(clients.values()))

    def _queue_depth(self) -> float:
        if self._depth is None:
            return float("nan")
        try:
            return float(self._depth())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the queue is down
            return float("nan")

    def _reconciliation_lag(self) -> float:
        now = time.time()
        o = db.orders.c
        try:
            # A scrape must not hold a web thread while the database stalls (see db.deadline).
            with db.deadline(3.0), db.reading(self._engine) as conn:
                oldest = conn.execute(sa.select(sa.func.min(o.created_at)).where(
                    o.payment_state == "open", o.invoice_id.is_not(None),
                    o.next_check_at.is_not(None), o.next_check_at <= now)).scalar()
        except Exception:  # noqa: BLE001
            return float("nan")
        return max(0.0, now - float(oldest)) if oldest is not None else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)


def of(pipeline: Pipeline) -> Metrics:
    """The metrics of the runtime this pipeline belongs to (created on first use)."""
    metrics = getattr(pipeline, _ATTR, None)
    if metrics is None:
        with _lock:
            metrics = getattr(pipeline, _ATTR, None)
            if metrics is None:
                metrics = Metrics(pipeline)
                setattr(pipeline, _ATTR, metrics)
                _live.add(metrics)
    return metrics


def for_runtime(runtime: Runtime) -> Metrics:
    metrics = of(runtime.pipeline)
    metrics._depth = runtime.jobs.depth
    runtime.metrics = metrics  # type: ignore[attr-defined]
    return metrics


def observe_upay(client: Any, endpoint: str, seconds: float) -> None:
    """Record one UPay request's latency in the metrics of the runtime that owns ``client``."""
    try:
        for metrics in list(_live):
            if metrics.owns_client(client):
                metrics.upay_request_seconds.labels(endpoint).observe(seconds)
                return
    except Exception:  # noqa: BLE001 - metrics never break a payment
        pass
