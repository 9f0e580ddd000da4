"""One JSON line → one typed row or one reject with its reason: the rule both engines apply to a Glue
catalog table's JSON-lines files (pure, so DuckDB's fallback and Spark's executors run the same code).

The catalog's declared type is the contract, as a PostgreSQL column's is: a value lands exactly or the
row is rejected (`type_mismatch`), never nulled, rounded or widened. The accepted forms are those of
pyarrow's JSON reader (the DuckDB engine's fast path for files without a bad line):

- bigint: a JSON integer in the 64-bit range (not 1.5, not "12", not true);
- double: a JSON number; decimal(p,s): a JSON number or numeral string with at most s decimals and p digits;
- boolean: true or false; date: a "YYYY-MM-DD" string;
- timestamp: an ISO-8601 string (date, then optional time, fraction up to microseconds, and offset;
  an offset converts to UTC, as pyarrow and Athena read it);
- string: a JSON string as it is; any other value (a number, an object or array: a nested column) as its
  compact JSON text.

A line that is not a JSON object is `malformed_json`; a line with bytes that are not UTF-8
`invalid_encoding`; a blank line is no record. `_line` is the physical 1-based line number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

# Constants only: the Spark engine ships this module's functions to its executors by value, and a
# function of another tidemark module would need the package installed there.
from ingestion.plan.rejects import INVALID_ENCODING, MALFORMED_JSON, REPLACEMENT_CHAR, TYPE_MISMATCH

_INT64 = (-(2**63), 2**63 - 1)
_NUMERAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)


class _Misfit(Exception):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_text(value: Any) -> str:
    """Compact JSON text of a parsed value (numbers as they were written: parsed as Decimal)."""
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{json_text(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def convert(value: Any, ltype: str) -> Any:
    """A parsed JSON value as the landed type's Python value; `_Misfit` when it does not fit exactly."""
    if value is None:
        return None
    if ltype == "string":
        return value if isinstance(value, str) else json_text(value)
    if ltype == "bigint":
        if isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]:
            return value
        raise _Misfit
    if ltype == "double":
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            out = float(value)
            if out not in (float("inf"), float("-inf")):
                return out
        raise _Misfit
    if ltype.startswith("decimal("):
        p, _, s = ltype[len("decimal(") : -1].partition(",")
        precision, scale = int(p), int(s or 0)
        try:
            numeral = isinstance(value, str) and _NUMERAL.fullmatch(value)
            d = Decimal(value) if numeral or isinstance(value, Decimal) or type(value) is int else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite():
            raise _Misfit
        try:
            exact = d.quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:
            raise _Misfit from None
        if exact != d or len(exact.as_tuple().digits) > precision:
            raise _Misfit
        return exact
    if ltype == "boolean":
        if isinstance(value, bool):
            return value
        raise _Misfit
    if ltype == "date":
        if isinstance(value, str) and _DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise _Misfit from None
        raise _Misfit
    if ltype in ("timestamp", "timestamptz"):
        if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
            try:
                t = datetime.fromisoformat(value)
            except ValueError:
                raise _Misfit from None
            if t.tzinfo is not None:
                t = t.astimezone(timezone.utc)
                return t if ltype == "timestamptz" else t.replace(tzinfo=None)
            return t.replace(tzinfo=timezone.utc) if ltype == "timestamptz" else t
        raise _Misfit
    raise _Misfit


def parse_line(
    text: str, fields: Sequence[tuple[str, str, str]]
) -> tuple[tuple[Any, ...] | None, tuple[str, str, str | None] | None]:
    """One line against the declared (JSON name, landed name, landed type) fields: the row's values in field order, or
    the reject's (code, reason, column). Missing fields are null; fields not declared are ignored (as
    Athena and Spark read a table). A blank line gives (None, None)."""
    if not text.strip():
        return None, None
    if REPLACEMENT_CHAR in text:
        return None, (INVALID_ENCODING, "bytes that are not valid UTF-8", None)
    try:
        doc = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except ValueError as exc:
        return None, (MALFORMED_JSON, f"not valid JSON: {exc}", None)
    if not isinstance(doc, dict):
        return None, (MALFORMED_JSON, f"a JSON {type(doc).__name__}, not an object", None)
    values = []
    for name, landed, ltype in fields:
        value = doc.get(name)
        try:
            values.append(convert(value, ltype))
        except _Misfit:
            shown = value if isinstance(value, str) else json_text(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."  # as `rejects.type_reason`
            return None, (TYPE_MISMATCH, f"column {landed}: {shown!r} is not a valid {ltype}", landed)
    return tuple(values), None


def split_lines(data: bytes) -> list[str]:
    """A file's lines as text (`\\n` or `\\r\\n` ends them; bytes that are not UTF-8 become U+FFFD, as
    Hadoop's text reader decodes them)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r").decode("utf-8", errors="replace") for line in lines]


def json_rows(
    fields: Sequence[tuple[str, str, str]], relpath: str, content: bytes
) -> Iterator[tuple[Any, ...]]:
    """A file's rows as the Spark engine's executors produce them: the typed values, then file, line, and
    the reject's code, reason, column and raw line (None for a good row); blank lines give none."""
    empty = (None,) * len(fields)
    for number, text in enumerate(split_lines(content), 1):
        row, bad = parse_line(text, fields)
        if bad is not None:
            yield (*empty, relpath, number, *bad, text)
        elif row is not None:
            yield (*row, relpath, number, None, None, None, None)


def file_rows(
    fields: Sequence[tuple[str, str, str]], relpath: str, path_and_content: tuple[str, bytes]
) -> Iterator[tuple[Any, ...]]:
    """`json_rows` of a (path, content) pair as Spark's `binaryFiles` gives it."""
    return json_rows(fields, relpath, bytes(path_and_content[1]))
