"""Engine-neutral normalization rules: column names, metadata columns, type inference, dedup order.

Both engines implement these rules in their own SQL; keeping them here as data is what makes the DuckDB
and Spark engines land the same columns and types (the parity tests check it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingestion.contract import METADATA_COLUMNS
from ingestion.errors import SchemaError

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def clean_column_name(raw: str) -> str:
    """Lowercase, turn runs of non-alphanumerics into `_`, trim `_` at both ends (`"First Name!"` → `first_name`).

    Cleaned names never start with `_`, so they cannot collide with the metadata columns.
    """
    return _NON_ALNUM.sub("_", raw.strip().lower()).strip("_")


def clean_header(raw_names: Sequence[str], *, file: str) -> list[str]:
    """Clean every name of a file's header; collisions and empty names are errors naming the file."""
    cleaned: list[str] = []
    for i, raw in enumerate(raw_names):
        name = clean_column_name(raw)
        if not name:
            name = f"column_{i + 1}"
        elif name[0].isdigit():
            name = f"c{name}"  # keep identifiers unquoted-safe in every warehouse
        cleaned.append(name)
    seen: dict[str, list[str]] = {}
    for raw, name in zip(raw_names, cleaned, strict=True):
        seen.setdefault(name, []).append(raw)
    collisions = {name: raws for name, raws in seen.items() if len(raws) > 1}
    if collisions:
        detail = "; ".join(f"{raws} → {name!r}" for name, raws in collisions.items())
        raise SchemaError(
            f"{file}: columns collide after name cleaning: {detail}",
            hint="rename the columns in the file so their cleaned names differ",
        )
    return cleaned


@dataclass(frozen=True)
class TypeRule:
    """A logical column type and the pattern every non-null string value must match to infer it.

    `fmt` (strftime) is set for dates/timestamps in a configured format: values are parsed with it
    instead of cast. `lengths` bounds the length of any string the pattern matches: engines test it
    first, so most values skip the regex (type inference is the dearest step of a CSV load).
    """

    name: str
    pattern: str  # full-match regex in the common subset of RE2 (DuckDB) and java.util.regex (Spark)
    fmt: str | None = None
    lengths: tuple[int, int | None] = (1, None)  # (min, max or None) characters of a matching value


DECIMAL = "decimal"
# decimal(38,18) holds 20 integer digits; a value with more, or an exponent, stays double.
DECIMAL_PRECISION, DECIMAL_SCALE = 38, 18
# Tried in order; a column gets the first type whose pattern all its non-null values match *and* to
# which every value casts. Inference scans all rows of the batch, not a sample.
TYPE_RULES: tuple[TypeRule, ...] = (
    TypeRule("boolean", r"(?i)(true|false)", lengths=(4, 5)),
    # A number with a leading zero (`02134`, `00.5`) is an identifier (zip code, account number): it
    # stays text unless the column is declared numeric (then `DECLARED_NUMBERS` applies).
    TypeRule("bigint", r"[+-]?(0|[1-9][0-9]{0,17})", lengths=(1, 19)),
    TypeRule(DECIMAL, r"[+-]?((0|[1-9][0-9]{0,19})(\.[0-9]{0,18})?|\.[0-9]{1,18})", lengths=(1, 40)),
    # An integer too long for bigint is an identifier, not a measurement: it stays a string, exactly.
    TypeRule(
        "double",
        r"[+-]?(((0|[1-9][0-9]{0,17})|(0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(0|[1-9][0-9]*)[eE][+-]?[0-9]+)",
    ),
    TypeRule("date", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", lengths=(10, 10)),
    TypeRule(
        "timestamp",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?",
        lengths=(16, 26),
    ),
    TypeRule(
        "timestamptz",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)",
        lengths=(17, 32),
    ),
)
STRING = "string"
LOGICAL_TYPES = (*(r.name for r in TYPE_RULES), STRING)
# A column declared numeric takes leading zeros too (`007` is 7): the patterns without that exclusion.
DECLARED_NUMBERS: dict[str, str] = {
    "bigint": r"[+-]?[0-9]{1,18}",
    DECIMAL: r"[+-]?([0-9]{1,20}(\.[0-9]{0,18})?|\.[0-9]{1,18})",
    "double": r"[+-]?(([0-9]{1,18}|[0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)",
}
# A cursor is a time or a number, never text (nor a boolean).
CURSOR_TYPES = ("bigint", DECIMAL, "double", "date", "timestamp", "timestamptz")


def fit_rules(rules: Sequence[TypeRule], *, declared: bool) -> dict[str, TypeRule]:
    """The rules by name that decide whether a value fits a column: declared numeric columns take leading zeros."""
    out = {r.name: r for r in rules}
    if declared:
        for name, pattern in DECLARED_NUMBERS.items():
            if name in out:
                out[name] = TypeRule(name, pattern, out[name].fmt, out[name].lengths)
    return out


def type_rules(date_format: str | None = None, timestamp_format: str | None = None) -> tuple[TypeRule, ...]:
    """The rules for a table's files: a configured date/timestamp format replaces the ISO rule."""
    from ingestion.formats import has_offset, to_regex

    rules = []
    for rule in TYPE_RULES:
        if rule.name == "date" and date_format:
            rule = TypeRule("date", to_regex(date_format), date_format)
        elif timestamp_format and rule.name == (
            "timestamptz" if has_offset(timestamp_format) else "timestamp"
        ):
            rule = TypeRule(rule.name, to_regex(timestamp_format), timestamp_format)
        rules.append(rule)
    return tuple(rules)


def choose_type(matches: dict[str, bool], non_null: int, *, decimal: bool = False) -> str:
    """Pick the first rule every value satisfied; `string` when none did or the column is all null.

    `decimal`: non-integer numbers become decimal(38,18) when they all fit, else double.
    """
    if non_null == 0:
        return STRING
    for rule in TYPE_RULES:
        if rule.name == DECIMAL and not decimal:
            continue
        if matches.get(rule.name):
            return rule.name
    return STRING


# Type changes between files that keep every landed value: the landed column takes the wider type.
_WIDENS_TO: dict[str, tuple[str, ...]] = {
    "bigint": (DECIMAL, "double"),
    DECIMAL: ("double",),
    "date": ("timestamp",),
}


def widen(current: str, new: str) -> str | None:
    """The type a column takes when a file brings `new` values into a `current` column; None: incompatible.

    A string column takes anything; numbers widen bigint → decimal → double; dates widen to timestamps.
    """
    if current in (new, STRING):
        return current
    if new in _WIDENS_TO.get(current, ()):
        return new
    if current in _WIDENS_TO.get(new, ()):
        return current
    return None


# Type inference first tests every rule on this many rows of a file, then only the rules all of them
# satisfied on the whole file: most columns then skip most rules (a string column skips all of them).
SAMPLE_ROWS = 10_000


def candidate_rules(
    sample: dict[str, ColumnStats], rules: Sequence[TypeRule], exact: Sequence[str] = ()
) -> dict[str, tuple[TypeRule, ...]]:
    """Per column, the rules every non-null value of the sample satisfied (all of them for an all-null sample).

    Columns in `exact` (the cursor) keep every rule: their type is the one most values satisfy, so a
    value failing a rule in the sample must not rule it out.
    """
    return {
        c: tuple(rules) if c in exact else tuple(r for r in rules if st.ok.get(r.name, 0) == st.non_null)
        for c, st in sample.items()
    }


# Type inference scans a file once per this many columns: a wide file's query stays small.
COLUMN_BATCH = 64


def column_batches(rules: dict[str, tuple[TypeRule, ...]]) -> list[dict[str, tuple[TypeRule, ...]]]:
    """The columns of `rules` in groups of `COLUMN_BATCH`, in order."""
    items = list(rules.items())
    return [dict(items[i : i + COLUMN_BATCH]) for i in range(0, len(items), COLUMN_BATCH)]


def unpack_rule_counts(rules: dict[str, tuple[TypeRule, ...]], row: Sequence[Any]) -> dict[str, ColumnStats]:
    """Stats from one aggregate row laid out per column as: its non-empty values, its empty strings,
    then one count per rule."""
    out, at = {}, 0
    for c, col_rules in rules.items():
        counts = row[at + 2 : at + 2 + len(col_rules)]
        ok = {r.name: int(k) for r, k in zip(col_rules, counts, strict=True)}
        out[c] = ColumnStats(int(row[at]), ok, empty=int(row[at + 1]))
        at += 2 + len(col_rules)
    return out


def with_lower_bounds(full: dict[str, ColumnStats], rules: Sequence[TypeRule]) -> dict[str, ColumnStats]:
    """Full-file stats of the candidate rules, with 0 (a lower bound) for the rules the sample ruled out."""
    return {
        c: ColumnStats(st.non_null, {r.name: st.ok.get(r.name, 0) for r in rules}, st.empty)
        for c, st in full.items()
    }


def accepted_rules(target: str) -> tuple[str, ...]:
    """Rules whose values a `target` column takes: its own and those that widen into it."""
    return (target, *(t for t, wider in _WIDENS_TO.items() if target in wider))


@dataclass(frozen=True)
class ColumnStats:
    """One column of one file: non-null values, and how many satisfy each type rule (pattern and cast).

    `ok[rule]` is exact for a rule that every value of a sample satisfied; for the others (a value of
    the sample already fails them) it is a lower bound, 0. So `matches()` is exact, and `failing()`
    never under-counts: a file it flags has its misfit rows found exactly by the engine.
    """

    non_null: int  # values other than null and the empty string (which types nothing)
    ok: dict[str, int]
    empty: int = 0  # empty strings (a quoted ""): a value of a text column, null in a typed one

    def matches(self) -> dict[str, bool]:
        return {rule: n == self.non_null for rule, n in self.ok.items()}

    def failing(self, target: str) -> int:
        """Non-null values a `target` column can't take (numeric patterns nest; date/timestamp don't)."""
        if target == STRING:
            return 0
        good = self.ok.get(target, 0)
        if target == "timestamp":
            good += self.ok.get("date", 0)
        return max(self.non_null - good, 0)


@dataclass(frozen=True)
class TypePlan:
    """The landed type of every column of a batch, and why some values of some files can't be taken."""

    types: dict[str, str]
    # (file, column) → values that don't fit the column's type: those rows are rejected.
    misfits: dict[tuple[str, str], int]
    # Columns with no value yet (all null in every file, never landed or declared): no type yet. They land
    # as string in this batch's files but are not committed, so the first values that arrive type them.
    untyped: frozenset[str] = frozenset()


def choose_cursor_type(st: ColumnStats, *, decimal: bool) -> str | None:
    """The time or number type that takes the most of a cursor's values (the narrowest on a tie).

    The values it doesn't take are rejected (`bad_cursor`); None when no value parses as any of them.
    """
    best: tuple[int, str] | None = None
    for name in CURSOR_TYPES:
        if name == DECIMAL and not decimal:
            continue
        bad = st.failing(name)
        if bad < st.non_null and (best is None or bad < best[0]):
            best = (bad, name)
    return best[1] if best else None


def plan_types(
    files: Sequence[tuple[str, dict[str, ColumnStats]]],
    *,
    committed: dict[str, str],
    declared: dict[str, str],
    keys: Sequence[str] = (),
    double_as_decimal: bool = True,
    decimal_keys: bool = False,
    cursor: str | None = None,
) -> TypePlan:
    """Fold the files (in landing order) into one type per column, starting from declared and committed types.

    A declared type never changes. Otherwise a column keeps the first type it got (in an earlier run or
    an earlier file) and widens when a file brings a compatible wider type; a file whose values don't
    fit (an incompatible change) keeps the column's type and has those rows rejected.

    The `cursor` is a time or a number, never text: its type is the one most of its values satisfy,
    and the values that don't parse are misfits (rejected as `bad_cursor`), never a text watermark.
    """
    types: dict[str, str] = {**committed, **declared}
    if cursor and cursor not in declared and types.get(cursor) == STRING:
        del types[cursor]  # a text cursor committed by an older version: typed again from its values
    misfits: dict[tuple[str, str], int] = {}
    for _, stats in files:
        for col, st in stats.items():
            if st.non_null == 0:
                continue  # all null: says nothing about the type
            decimal = double_as_decimal and (decimal_keys or col not in keys)
            if col == cursor:
                found = choose_cursor_type(st, decimal=decimal)
                if found is None:
                    continue  # no value parses: every one is a misfit, the type comes from other files
                inferred = found
            else:
                inferred = choose_type(st.matches(), st.non_null, decimal=decimal)
            current = types.get(col)
            if current is None:
                types[col] = inferred
            elif col not in declared:
                types[col] = widen(current, inferred) or current
    untyped = set()
    for _, stats in files:
        for col, st in stats.items():
            if col not in types and st.empty and col != cursor:
                types[col] = STRING  # only empty strings: text, and they land as written
    for _, stats in files:
        for col in stats:
            if col not in types:
                untyped.add(col)
                # all null everywhere (or a cursor with no parseable value): nothing to go by yet
                types[col] = "timestamptz" if col == cursor else STRING
    for relpath, stats in files:
        for col, st in stats.items():
            bad = st.failing(types[col])
            if bad:
                misfits[(relpath, col)] = bad
    return TypePlan(types, misfits, frozenset(untyped))


def output_columns(data_columns: Sequence[str]) -> list[str]:
    """Column order of a landed file: the data columns in first-seen order, then the metadata columns."""
    return [*data_columns, *METADATA_COLUMNS]


def union_columns(headers: Sequence[Sequence[str]]) -> list[str]:
    """Union of several files' cleaned headers, by name, in first-seen order."""
    out: dict[str, None] = {}
    for header in headers:
        out.update(dict.fromkeys(header))
    return list(out)


# --- Landing in one pass ---------------------------------------------------------------------------------
# The exact flow reads a CSV file twice: once for its type statistics (every rule the sample left open,
# on every value), once to cast, dedup and write. When every value of the file satisfies what its first
# rows already show, those statistics are known without reading them: the rules every sample value
# satisfied are satisfied by every value, the others keep their lower bound. An engine can then land the
# file in one pass that checks this of every value while it writes, and the type plan is the one the exact
# flow would make. A value that breaks it stops that pass (nothing is kept) and the exact flow runs.


@dataclass(frozen=True)
class ValueCheck:
    """What every value of one column of one file must be for the one-pass landing to hold."""

    # Every value other than null and "" satisfies each of these rules (the ones every sample value did).
    rules: tuple[TypeRule, ...] = ()
    # False: the sample had no value, and the file may hold none either (null only, "" when `empty`).
    values: bool = True
    empty: bool = True  # "" may occur (only matters when `values` is False)
    present: bool = False  # a key column: never null, never ""


def sample_rules(st: ColumnStats, rules: Sequence[TypeRule]) -> tuple[TypeRule, ...]:
    """The rules every non-null value of a sample satisfied."""
    return tuple(r for r in rules if st.ok.get(r.name, 0) == st.non_null)


def value_checks(
    sample: dict[str, ColumnStats], rules: Sequence[TypeRule], keys: Sequence[str]
) -> dict[str, ValueCheck]:
    """Per column of a file, what its values must satisfy for `assumed_stats` to be the file's statistics."""
    out = {}
    for c, st in sample.items():
        if st.non_null == 0:
            out[c] = ValueCheck(values=False, empty=st.empty > 0, present=c in keys)
        else:
            out[c] = ValueCheck(sample_rules(st, rules), present=c in keys)
    return out


def assumed_stats(
    sample: dict[str, ColumnStats], rules: Sequence[TypeRule], cursor: str | None
) -> dict[str, ColumnStats]:
    """The statistics the exact flow would gather over a whole file whose values all pass `value_checks`.

    The counts stand for the file's (`non_null` is the sample's; the plan only asks whether a column has
    values and whether a rule takes all of them): a rule every sample value satisfied takes every value; the
    others keep the exact flow's lower bound (0; the sample's own count for the cursor, whose rules the
    exact flow counts in full, so the cursor's type must be one of the rules that take every value:
    `one_pass_plan` checks it).
    """
    out = {}
    for c, st in sample.items():
        if st.non_null == 0:
            out[c] = ColumnStats(0, {r.name: 0 for r in rules}, empty=st.empty)
            continue
        every = {r.name for r in sample_rules(st, rules)}
        ok = {
            r.name: st.non_null if r.name in every else (st.ok.get(r.name, 0) if c == cursor else 0)
            for r in rules
        }
        out[c] = ColumnStats(st.non_null, ok, empty=st.empty)
    return out


def one_pass_plan(
    samples: Sequence[tuple[str, dict[str, ColumnStats]]],
    rules: Sequence[TypeRule],
    *,
    cursor: str | None = None,
    **options: Any,
) -> TypePlan | None:
    """The type plan of files whose values all pass their `value_checks`, or None when a landing in one
    pass can't be exact: some values would not fit (the exact flow rejects them), or the cursor's type
    depends on counts only a full read gives. `options`: the rest of `plan_types`' own."""
    assumed = [(path, assumed_stats(st, rules, cursor)) for path, st in samples]
    plan = plan_types(assumed, cursor=cursor, **options)
    if plan.misfits:
        return None
    fits = [
        plan.types[cursor] in {r.name for r in sample_rules(st[cursor], rules)}
        for _, st in samples
        if cursor and cursor in st and st[cursor].non_null
    ]
    return plan if all(fits) else None
