"""Secrets never leave the process in text: one masker for logs, ledger rows and error messages.

It masks secrets tidemark registered (JDBC passwords read from the environment or a secret store) and
the secrets drivers and SDKs like to echo: `user:pass@` in URLs, `password=…`/`"token": "…"` values,
AWS access key ids and secret access keys.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import overload

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host → scheme://user:***@host (JDBC, PostgreSQL, S3-compatible URLs)
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)"), rf"\g<head>{MASK}"),
    # key=value / key: value / "key": "value" for secret-looking keys (password, pwd, token, secret, …)
    (
        re.compile(
            r"(?P<head>(?i:[\"']?[\w.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|credentials?)"
            r"[\w.\-]*[\"']?\s*[=:]\s*[\"']?))(?P<value>[^\s\"'&;,)}]+)"
        ),
        rf"\g<head>{MASK}",
    ),
    # AWS access key ids (long-term AKIA…, temporary ASIA…)
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"), MASK),
)
# A bare 40-character AWS secret access key; mixed case and a digit, so hex digests and paths survive.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it wherever it shows up."""
    if value:
        with _lock:
            _secrets.add(value)


def _mask_aws_secret(m: re.Match[str]) -> str:
    s = m.group(0)
    mixed = any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    return MASK if mixed else s


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
def redact(text: str | None) -> str | None:
    """`text` with registered secrets, URL passwords, `password=…`-style values and AWS keys masked."""
    if text is None:
        return None
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return _AWS_SECRET.sub(_mask_aws_secret, text)


def error_text(exc: BaseException) -> str:
    """`Class: message` of an exception, redacted: what outcomes, logs and the ledger carry."""
    return redact(f"{type(exc).__name__}: {exc}")


# The SDK loggers whose DEBUG records carry request and response bodies (a Glue connection's password,
# a Secrets Manager secret).
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


@contextmanager
def sdk_bodies_unlogged() -> Iterator[None]:
    """Within: the AWS SDK logs nothing below INFO, so a response holding a secret is never in a log
    record, whatever handlers the process has (the secret is registered only once it has arrived)."""
    names = [n for n in [*SDK_LOGGERS, *logging.root.manager.loggerDict] if n.split(".")[0] in SDK_LOGGERS]
    loggers = [logging.getLogger(n) for n in dict.fromkeys(names)]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)
