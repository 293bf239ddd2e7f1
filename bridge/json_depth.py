"""How deeply a JSON document may nest.

Every body the bridge reads is shallow: a WooCommerce order nests 4 levels, Saleor's ORDER_CREATED
subscription payload about 8. A body nested deeper is refused as malformed, well before the
parser's own limit (Python's recursion limit, about 1,000 levels).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH, *, text: str | bytes | None = None) -> bool:
    """True when ``value`` has containers nested more than ``limit`` levels (the top is 1).

    ``text``, the JSON ``value`` was decoded from, lets most bodies skip the walk: with no more
    brackets than ``limit`` it cannot nest deeper, and counting runs in C. (Brackets inside
    strings are counted too, which can only send a body on to the walk.)"""
    if not isinstance(value, (dict, list)):
        return False
    if text is not None:
        opened = (text.count(b"{") + text.count(b"[") if isinstance(text, bytes)
                  else text.count("{") + text.count("["))
        if opened <= limit:
            return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False
