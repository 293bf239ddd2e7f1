"""Scripted failures for the fakes: "the next N requests to this endpoint fail this way"."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class Fault:
    endpoint: str
    kind: str
    remaining: int
    params: dict[str, Any]


class FaultScript:
    """Faults are used up in the order added, by the next matching request (thread-safe)."""

    def __init__(self, kinds: Mapping[str, tuple[str, ...]]) -> None:
        self.kinds = dict(kinds)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired: list[Fault] = []

    def add(self, endpoint: str, kind: str, count: int = 1, **params: Any) -> Fault:
        if endpoint not in self.kinds:
            raise ValueError(f"unknown fault endpoint {endpoint!r}; expected one of "
                             f"{tuple(self.kinds)}")
        if kind not in self.kinds[endpoint]:
            raise ValueError(f"unknown fault kind {kind!r} for {endpoint!r}; expected one of "
                             f"{self.kinds[endpoint]}")
        if int(count) < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(endpoint, kind, int(count), dict(params))
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request, if one is scripted; uses up one of its ``count``."""
        with self._lock:
            for fault in self._faults:
                if fault.endpoint == endpoint:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self.fired.append(fault)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.endpoint, f.kind, f.remaining, dict(f.params)) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)
