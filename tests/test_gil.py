"""The serving processes shorten the interpreter's switch interval (see bridge/gil.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bridge import cli
from bridge.gil import SWITCH_INTERVAL, tune_for_serving


@pytest.fixture
def restore_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_tune_for_serving_sets_the_switch_interval(restore_interval) -> None:
    sys.setswitchinterval(0.005)
    tune_for_serving()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    assert SWITCH_INTERVAL < 0.005  # shorter than CPython's default, which let a burst stall


def test_serve_sets_it_before_it_serves(restore_interval, monkeypatch, tmp_path) -> None:
    # The web server is replaced by one that records the interval it would have run with.
    seen: list[float] = []

    class Server:
        def run(self) -> None:
            seen.append(sys.getswitchinterval())

    monkeypatch.setattr("bridge.web_server.make_server", lambda *a, **k: Server())
    monkeypatch.setenv("UPAY_BRIDGE_DATA_DIR", str(tmp_path))
    sys.setswitchinterval(0.005)
    result = CliRunner().invoke(cli.main, ["serve", "--no-worker"])
    assert result.exit_code == 0, result.output
    assert seen == [pytest.approx(SWITCH_INTERVAL)]


def test_the_wsgi_entry_point_sets_it(tmp_path) -> None:
    # What a gunicorn web process imports; a process of its own, so this one is untouched.
    env = {**os.environ, "UPAY_BRIDGE_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", "import sys, bridge.wsgi; print(sys.getswitchinterval())"],
        env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert float(out.split()[-1]) == pytest.approx(SWITCH_INTERVAL)
