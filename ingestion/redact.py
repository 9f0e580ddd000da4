"""Secrets never leave the process in text: a registry of known secrets and a `redact()` for any string."""

from __future__ import annotations

import re
import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
# Secrets tidemark did not register but that drivers like to echo: `password=…` in conninfo strings,
# `user:pass@` in URLs, `"password": "…"` in option dumps.
_PATTERNS = (
    re.compile(r"(?i)(password\s*[=:]\s*['\"]?)([^'\"\s,;&)}]+)"),
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)"),
)


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it wherever it shows up."""
    if value:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret and every `password=…`/`user:pass@` value masked."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _PATTERNS[0].sub(lambda m: m.group(1) + MASK, text)
    return _PATTERNS[1].sub(lambda m: m.group(1) + MASK + m.group(3), text)
