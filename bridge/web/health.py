"""Liveness for load balancers and operators (the database and the queue answer), and metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .. import db
from ..metrics import CONTENT_TYPE_LATEST
from ..app import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        db.ping(rt.engine)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        checks["queue"] = f"ok ({rt.jobs.depth()} pending)"
    except Exception as exc:  # noqa: BLE001
        checks["queue"] = f"error: {type(exc).__name__}"
    ok = all(v.startswith("ok") for v in checks.values())
    return jsonify({"ok": ok, "checks": checks}), 200 if ok else 503


@bp.get("/metrics")
def prometheus_metrics() -> Any:
    # Prometheus text format, from this runtime's own registry (see bridge/metrics.py: counters
    # are per process; the queue depth and reconciliation lag are read now, at scrape time).
    return Response(current_app.extensions["upay_bridge_metrics"].render(),
                    content_type=CONTENT_TYPE_LATEST)
