"""Structured logs: one JSON object per line, with the web request's id.

Only the message and a few known identifiers (``request_id``, ``store_id``, ``order_id``) are
written, never arbitrary ``extra`` fields, headers or bodies, so nothing secret reaches the log
by accident.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

from .batched_log import BatchedStreamHandler

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "upay_bridge_request_id", default=None)

_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_FIELDS = ("request_id", "store_id", "order_id")
_FIELD_KEYS = {field: f', "{field}": ' for field in _FIELDS}  # as a JSON line writes them


# Fresh ids: a random prefix per process and a counter, 32 hex digits like a UUID's. They only
# correlate log lines, so they need to be unique, not unguessable; a counter costs no system
# call for randomness on every request.
_ID_PREFIX = os.urandom(10).hex()
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:  # a forked web process (gunicorn --preload) gets its own
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(10).hex()


os.register_at_fork(after_in_child=_new_id_prefix)


def request_id_from(incoming: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a short token, else a fresh id."""
    if incoming and _TOKEN.fullmatch(incoming):
        return incoming
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


# A JSON string literal, as json.dumps(..., ensure_ascii=False) writes one (its C function).
_json_string = json.encoder.encode_basestring


class JSONFormatter(logging.Formatter):
    # The time's text up to the second, kept for the second it names: every line of a burst
    # falls in the same few seconds, and formatting a datetime was a third of a line's cost.
    _second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        # The object json.dumps would write for {"time": ..., "level": ..., "logger": ...,
        # "message": ..., and the ids}, every value a string, written out directly: building
        # the dict and encoding it took twice as long, for every order of a burst.
        parts = ['{"time": "', self._time(record), '", "level": ', _json_string(record.levelname),
                 ', "logger": ', _json_string(record.name),
                 ', "message": ', _json_string(record.getMessage())]
        if getattr(record, "request_id", None) is None:
            rid = request_id_var.get()
            if rid is not None:
                parts += (', "request_id": ', _json_string(str(rid)))
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                parts += (_FIELD_KEYS[field], _json_string(str(value)))
        if record.exc_info:
            parts += (', "exception": ', _json_string(self.formatException(record.exc_info)))
        parts.append("}")
        return "".join(parts)



def keep_request_id(record: logging.LogRecord) -> bool:
    """A handler filter (it runs in the thread that logs): the request id, from that thread's
    context, kept on the record for a formatter that runs elsewhere."""
    if getattr(record, "request_id", None) is None:
        record.request_id = request_id_var.get()
    return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None) or request_id_var.get()
        return f"{text} [request_id={rid}]" if rid else text


class _HoldBackRepeats(logging.Filter):
    """Lets one record through per ``interval`` seconds and counts the ones held back."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            held, self._held, self._next = self._held, 0, now + self.interval
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval:g} s)"
        return True


def hold_back_repeats(logger_name: str, interval: float = 10.0) -> None:
    """At most one line per ``interval`` from ``logger_name``.

    For waitress's "Task queue depth is N": it warns on every request that finds all of the
    server's threads busy, so a burst that saturates the server writes a line per request,
    spending CPU on logging exactly when there is none to spare."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _HoldBackRepeats) for f in logger.filters):
        logger.addFilter(_HoldBackRepeats(interval))


class HeldBackWarnings:
    """Stands in for a logger of which only ``warning`` is called on every request: lets one
    line per ``interval`` through, counting the rest, as ``hold_back_repeats`` does, but before
    a log record is built. A filter only drops a record after it is made, and making it was
    the cost: in a saturating burst, waitress's one warning per request took 7 % of the
    interpreter lock's time in a profile of the webhook benchmark."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.interval
        if held:
            msg = f"{msg} ({held} more like it in the last {self.interval:g} s)"
        self.logger.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else goes to the logger itself
        return getattr(self.logger, name)


def hold_back_queue_warnings(server: Any, interval: float = 10.0) -> None:
    """waitress's "Task queue depth is N", written on every request that finds all of the
    ``server``'s threads busy, held back to one line per ``interval``."""
    dispatcher = server.task_dispatcher
    dispatcher.queue_logger = HeldBackWarnings(dispatcher.queue_logger, interval)


def configure(level: str = "INFO", fmt: str = "json", stream=None) -> logging.Handler | None:
    """Like ``logging.basicConfig``: a no-op when someone else (a test runner, an embedding
    program) already configured the root logger; otherwise install (or replace) our handler."""
    root = logging.getLogger()
    if any(not getattr(h, "_upay_bridge", False) for h in root.handlers):
        return None
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()  # writes what it kept
    # Lines are written in batches by a writer thread (bridge/batched_log.py): one write per
    # line was a sixth of the webhook intake's throughput in a burst.
    handler = BatchedStreamHandler(stream or sys.stderr)
    handler.addFilter(keep_request_id)  # the writer formats the record, in another thread
    handler._upay_bridge = True  # type: ignore[attr-defined]
    handler.setFormatter(TextFormatter() if fmt.lower() == "text" else JSONFormatter())
    root.addHandler(handler)
    # What no formatter here writes, not worked out for every record: the caller's file and
    # line (a walk up the stack), the thread's and process's names (the logging HOWTO's
    # "Optimization" section names these switches). 1.4 of 7 µs per line.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    hold_back_repeats("waitress.queue")
    return handler
