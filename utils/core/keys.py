"""The settings key that names cached folders (same settings, same folder), and comma-separated lists."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def settings_key(settings: Any, length: int = 10) -> str:
    """A short stable hash of JSON-able settings (dict keys sorted; paths and other values as text)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def split_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the configuration's comma-separated lists."""
    return [t.strip() for t in str(text or "").split(",") if t.strip()]
