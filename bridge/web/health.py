"""Liveness for load balancers and operators (the database and the queue answer), and metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .. import db
from ..metrics import CONTENT_TYPE_LATEST
from ..app import runtime

bp = Blueprint("health", __name__)
logger = logging.getLogger(__name__)

#: Seconds the database probe may take, however the server behaves. A stalled PostgreSQL
#: otherwise held the web thread (one of a handful) for as long as the stall lasted, and every
#: load balancer probe took another. The queue's probe is bounded by the Redis socket timeouts
#: (bridge/queue.py): /healthz answers within about 3 s when the database stalls, 5 s when
#: Redis does, 8 s when both do.
DATABASE_PROBE_SECONDS = 3.0


@bp.get("/healthz")
def healthz() -> Any:
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        db.ping(rt.engine, timeout=DATABASE_PROBE_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        logger.warning("healthz: the database does not answer: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        checks["queue"] = f"ok ({rt.jobs.depth()} pending)"
    except Exception as exc:  # noqa: BLE001
        logger.warning("healthz: the queue does not answer: %s", exc)
        checks["queue"] = f"error: {type(exc).__name__}"
    failing = [name for name, value in checks.items() if not value.startswith("ok")]
    if not failing:
        return jsonify({"ok": True, "checks": checks}), 200
    # Only the names and exception types: the details (hosts, users) go to the log.
    return jsonify({"ok": False, "checks": checks,
                    "error": f"{' and '.join(failing)} unreachable"}), 503


@bp.get("/metrics")
def prometheus_metrics() -> Any:
    # Prometheus text format, from this runtime's own registry (see bridge/metrics.py: counters
    # are per process; the queue depth and reconciliation lag are read now, at scrape time).
    return Response(current_app.extensions["upay_bridge_metrics"].render(),
                    content_type=CONTENT_TYPE_LATEST)
