"""The Saleor App manifest: ``plugin_manifest.json`` with the bridge's public URL filled in.

Saleor requires absolute URLs in the manifest (saleor.md §1.4), so the file in the repository is a
template with ``{BASE_URL}`` and the bridge serves it with its own public base URL.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__

TEMPLATE = "plugin_manifest.json"
PLACEHOLDER = "{BASE_URL}"


@lru_cache(maxsize=1)
def _template_text() -> str:
    # bridge/plugin_manifest.json links to the repository root's file; a wheel holds a copy.
    return (Path(__file__).parent / TEMPLATE).read_text(encoding="utf-8")


def manifest(public_url: str) -> dict[str, Any]:
    base = public_url.rstrip("/")
    data = json.loads(_template_text().replace(PLACEHOLDER, base))
    data["version"] = __version__
    return data
