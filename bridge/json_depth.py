"""How deeply a JSON document may nest.

Every body the bridge reads is shallow: a WooCommerce order nests 4 levels, Saleor's ORDER_CREATED
subscription payload about 8. A body nested deeper is refused as malformed, well before the
parser's own limit (Python's recursion limit, about 1,000 levels).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


def cannot_be_too_deep(text: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text has too few brackets to nest more than ``limit`` levels, so the
    walk of the decoded value can be skipped: counting runs in C, and most bodies pass here.
    (Brackets inside strings are counted too, which can only make the answer False.)"""
    if isinstance(text, bytes):
        return text.count(b"{") + text.count(b"[") <= limit
    return text.count("{") + text.count("[") <= limit


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` has containers nested more than ``limit`` levels (the top is 1)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False
