"""The interpreter's thread switch interval for the processes that serve webhooks.

CPython makes a thread that wants the GIL wait up to ``sys.getswitchinterval()`` (5 ms by
default) before the thread holding it is asked to let go. Intake writes a burst in batches
(``bridge/group_commit.py``): one thread, the batch's leader, runs the database statements while
the others wait for it, and it gives up the GIL on every statement. When more deliveries arrive
than the server has threads, there is always another thread with Python to run (waitress parsing
the queued requests, requests decoding their bodies), so the leader waited up to 5 ms to get the
GIL back after each of its dozen statements, and the whole burst waited behind it. Once that
starts it sustains itself: with 32 clients on the default 8 threads, three of four runs took
about 700-790 deliveries a second where 16 clients got 1,600. With 1 ms none did (1,380-1,550
a second), and nothing else measured moved (``bench/webhook_accept.py --concurrency 32
--switch-ms 5`` against ``--switch-ms 1``; numbers in the README). A shorter interval costs a
CPU-bound thread more switches; a serving process has none that long.
"""

from __future__ import annotations

import sys

#: Seconds, for sys.setswitchinterval in a serving process.
SWITCH_INTERVAL = 0.001


def tune_for_serving(interval: float = SWITCH_INTERVAL) -> None:
    """Set the switch interval of this process (it is per process, not per thread)."""
    sys.setswitchinterval(interval)
