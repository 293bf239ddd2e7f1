"""Liveness for load balancers and operators: the database and the queue answer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from .. import db
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
