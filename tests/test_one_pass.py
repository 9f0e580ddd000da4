"""The DuckDB engine lands a CSV batch in one read when every value bears out what the files' first rows
show (issue 20): the rows, types, counts and rejects are those of the landing in passes, whatever the
file holds after its sample. Each case lands the same files twice, in one pass (`one_pass: true`, the
default) and in passes only (`one_pass: false`), and compares everything the run commits."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ingestion.config import CsvOptions, DuckDBConfig
from ingestion.engines.base import CsvBatch
from ingestion.engines.duckdb.engine import DuckDBEngine
from ingestion.lake.model import Watermark
from ingestion.plan.csv import FileFacts
from ingestion.plan.normalize import (
    DECIMAL,
    SAMPLE_ROWS,
    TYPE_RULES,
    ColumnStats,
    assumed_stats,
    one_pass_plan,
)

N = SAMPLE_ROWS + 5_000  # rows past the sample: what the one-pass checks alone see
FALLBACK = "one-pass landing not possible: landing in passes"


def _row(i: int) -> list[str]:
    day = 1 + i % 28
    return [
        str(i),  # id
        str(i % 97),  # qty
        f"{i % 1000}.{i % 100:02d}",  # price: decimal
        f"2025-01-{day:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}",  # updated_at
        ["true", "false"][i % 2],  # flag
        f"name {i}",  # name
        "",  # note: empty in every row unless a case fills it
    ]


HEADER = ["id", "qty", "price", "updated_at", "flag", "name", "note"]


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    def field(v: str) -> str:
        return f'"{v}"' if any(ch in v for ch in ',"\n') else v

    return ("\n".join(",".join(field(v) for v in r) for r in [header, *rows]) + "\n").encode()


def _rows(edit: dict[int, dict[int, str]] | None = None, n: int = N) -> list[list[str]]:
    rows = [_row(i) for i in range(n)]
    for i, cols in (edit or {}).items():
        for k, v in cols.items():
            rows[i][k] = v
    return rows


def _batch(tmp: Path, files: dict[str, bytes], **kw: Any) -> CsvBatch:
    inbox = tmp / "inbox"
    facts = []
    for relpath, data in files.items():
        path = inbox / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        facts.append(FileFacts(relpath, str(path), len(data), 1))
    fields: dict[str, Any] = {
        "source": "s",
        "table": "t",
        "files": tuple(facts),
        "options": CsvOptions(),
        "primary_key": ("id",),
        "cursor": "updated_at",
        "run_id": "20260101T000000000000Z-abcdef",
        "ingested_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "target": str(tmp / "lake" / "landing" / "s" / "t"),
        "lake_root": str(tmp / "lake"),
    }
    fields.update(kw)
    return CsvBatch(**fields)


def _engine(one_pass: bool, spark: Any = None) -> Any:
    if spark is None:
        return DuckDBEngine(DuckDBConfig(one_pass=one_pass))
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    return SparkEngine(SparkConfig(one_pass=one_pass), spark=spark)


def _land(
    tmp: Path, files: dict[str, bytes], one_pass: bool, caplog: Any, spark: Any = None, **kw: Any
) -> dict[str, Any]:
    """Land the files; everything the run would commit, and whether the one-pass landing stood."""
    batch = _batch(tmp, files, **kw)
    engine = _engine(one_pass, spark)
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="tidemark"):
            out = engine.land_csv(batch)
    finally:
        engine.close()
    landed = sorted(Path(batch.target).glob("**/*.parquet"))
    rows: list[tuple] = []
    schema: list[tuple] = []
    if landed:
        con = duckdb.connect()
        rel = con.sql(f"SELECT * FROM read_parquet({[str(p) for p in landed]})")
        schema = [(c, str(t)) for c, t in zip(rel.columns, rel.types, strict=True)]
        rows = sorted(rel.fetchall(), key=repr)
        con.close()
    q = out.quarantine
    return {
        "rows": rows,
        "schema": schema,
        "counts": (out.rows_read, out.rows_landed, out.rows_rejected, out.rows_filtered),
        "watermark": out.max_cursor,
        "columns": out.columns,
        "rejects": sorted((r.file, r.record, r.line, r.code, r.column, r.raw) for r in q.rejects)
        + sorted((f, code, col, n) for f, c in q.kept.items() for (code, col), n in c.items()),
        "refused": q.refused,
        "fell_back": any(FALLBACK in r.getMessage() for r in caplog.records),
    }


def _both(tmp: Path, files: dict[str, bytes], caplog: Any, spark: Any = None, **kw: Any) -> tuple[dict, dict]:
    one = _land(tmp / "one", files, True, caplog, spark, **kw)
    passes = _land(tmp / "passes", files, False, caplog, spark, **kw)
    assert not passes["fell_back"]  # the passes never try
    for key in ("rows", "schema", "counts", "watermark", "columns", "rejects", "refused"):
        assert one[key] == passes[key], key
    return one, passes


def test_a_clean_file_lands_in_one_pass_as_in_passes(tmp_path: Path, caplog: Any) -> None:
    one, _ = _both(tmp_path, {"a.csv": _csv(_rows())}, caplog)
    assert not one["fell_back"]
    assert one["counts"] == (N, N, 0, 0)
    types = dict(one["columns"])
    assert types == {
        "id": "bigint",
        "qty": "bigint",
        "price": "decimal",
        "updated_at": "timestamp",
        "flag": "boolean",
        "name": "string",
    }  # note: no value, not written


# Each case: what changes past the sample, and whether the one-pass landing still stands.
CASES = {
    # a decimal value in an integer column: the column widens (the sample said bigint)
    "widened number": ({N - 10: {1: "2.5"}}, False),
    # text in a number column: the column becomes text
    "text in numbers": ({N - 10: {2: "n/a"}}, False),
    # a value in a column the sample saw empty
    "late value": ({N - 3: {6: "hello"}}, False),
    # a number with a leading zero: an identifier, so text (the fast integer check must not take it)
    "leading zero": ({N - 7: {1: "007"}}, False),
    # integers spelled with a sign or as -0: bigint by the rule, though DuckDB prints them otherwise
    "signed integers": ({N - 7: {1: "+5"}, N - 6: {1: "-0"}}, True),
    # a 19-digit integer: out of the bigint rule (18 digits), still a decimal
    "long integer": ({N - 5: {1: "1234567890123456789"}}, False),
    # timestamps in other spellings the ISO rule takes
    "other timestamp spellings": ({N - 9: {3: "2025-01-02T03:04:05"}, N - 8: {3: "2025-01-02 03:04"}}, True),
    # a year before 1000 printed back as five characters: still the ISO rule
    "negative year": ({N - 9: {3: "-999-01-01 00:00:00"}}, False),
    # a bad cursor: the row is rejected (bad_cursor)
    "bad cursor": ({N - 4: {3: "yesterday"}}, False),
    # a null key: the row is rejected
    "null key": ({N - 2: {0: ""}}, False),
    # a boolean spelled otherwise: the column becomes text
    "boolean spelling": ({N - 1: {4: "yes"}}, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_past_the_sample_land_as_in_passes(tmp_path: Path, caplog: Any, case: str) -> None:
    edit, stands = CASES[case]
    one, _ = _both(tmp_path, {"a.csv": _csv(_rows(edit))}, caplog)
    assert one["fell_back"] is (not stands)


def test_records_the_parser_rejects_past_the_sample(tmp_path: Path, caplog: Any) -> None:
    data = _csv(_rows())
    lines = data.split(b"\n")
    lines[N - 100] += b",extra"  # a field too many
    lines[N - 50] = b"1,2"  # fields missing
    lines[N - 20] = lines[N - 20].replace(b"name", b"n\xe4me")  # not UTF-8
    one, _ = _both(tmp_path, {"a.csv": b"\n".join(lines)}, caplog)
    assert one["fell_back"] and len(one["rejects"]) == 3


@pytest.mark.parametrize("typed", [True, False])
def test_a_repeated_header_line_past_the_sample(tmp_path: Path, caplog: Any, typed: bool) -> None:
    """Typed columns refuse the header's names, so a repeated header line stops the write through
    them; a file of text columns only needs its own header test."""
    if typed:
        rows = _rows()
        header = HEADER
        kw: dict[str, Any] = {}
    else:
        rows = [[f"k{i}", f"v{i}"] for i in range(N)]
        header = ["id", "v"]
        kw = {"cursor": None}
    rows.insert(N - 30, list(header))
    one, _ = _both(tmp_path, {"a.csv": _csv(rows, header)}, caplog, **kw)
    assert one["fell_back"] and [r[3] for r in one["rejects"]] == ["repeated_header"]


def test_an_empty_string_in_a_column_the_sample_saw_null(tmp_path: Path, caplog: Any) -> None:
    rows = [[str(i), "", "x"] for i in range(N)]
    rows[N - 1][1] = '""'  # written quoted below: the empty string, not null
    data = ("id,maybe,v\n" + "\n".join(",".join(r) for r in rows) + "\n").encode()
    one, _ = _both(tmp_path, {"a.csv": data}, caplog, cursor=None)
    assert one["fell_back"] and one["columns"]["maybe"] == "string"


def test_a_lower_bound_filters_after_the_checks(tmp_path: Path, caplog: Any) -> None:
    """Incremental: rows under the bound are still checked (a misfit there changes the plan as in passes)
    and never win a key over a kept row; a key with an old row and a null-cursor row lands the latter."""
    rows = _rows()
    rows[5][3] = ""  # key 5: a null cursor (kept)
    rows.append(["5", "1", "1.00", "2025-01-01 00:00:01", "true", "old", ""])  # key 5: under the bound
    bound = Watermark(value="2025-01-15T00:00:00.000000", type="timestamp")
    one, _ = _both(tmp_path, {"a.csv": _csv(rows)}, caplog, lower_bound=bound)
    assert not one["fell_back"] and one["counts"][3] > 0  # rows filtered
    five = [r for r in one["rows"] if r[0] == 5]
    assert len(five) == 1 and five[0][3] is None
    # a misfit only under the bound, past the sample: still seen
    old = next(i for i in range(SAMPLE_ROWS + 10, N) if 1 + i % 28 < 15)
    rows[old][1] = "1.5"
    one, _ = _both(tmp_path / "misfit", {"a.csv": _csv(rows)}, caplog, lower_bound=bound)
    assert one["fell_back"] and one["columns"]["qty"] == "decimal"


def test_a_batch_of_files_with_different_columns(tmp_path: Path, caplog: Any) -> None:
    b_rows = [[str(N + i), f"2025-02-01 00:00:{i % 60:02d}", str(i)] for i in range(300)]
    files = {
        "a.csv": _csv(_rows()),
        "b.csv": _csv(b_rows, ["id", "updated_at", "extra"]),
        "c.csv": _csv([r[:4] for r in _rows(n=50)], HEADER[:4]),  # ids shared with a.csv
    }
    one, _ = _both(tmp_path, files, caplog)
    assert not one["fell_back"]
    assert one["counts"][0] == N + 300 + 50 and one["columns"]["extra"] == "bigint"


def test_the_plan_from_a_sample_is_the_plan_of_the_whole_file() -> None:
    """`assumed_stats` are what the passes count over a file whose values all pass the checks; a cursor
    typed by counts only a full read gives (dates and timestamps mixed) is not planned in one pass."""
    rules = TYPE_RULES
    names = [r.name for r in rules]
    ok = {n: (10 if n in ("bigint", DECIMAL, "double") else 0) for n in names}
    sample = {"n": ColumnStats(10, ok, empty=0), "e": ColumnStats(0, dict.fromkeys(names, 0), empty=2)}
    assumed = assumed_stats(sample, rules, cursor=None)
    assert assumed["n"].matches() == {n: n in ("bigint", DECIMAL, "double") for n in names}
    assert assumed["e"].non_null == 0 and assumed["e"].empty == 2
    mixed = dict.fromkeys(names, 0) | {"date": 4, "timestamp": 6}
    plan_args: dict[str, Any] = {"committed": {}, "declared": {}, "keys": (), "cursor": "c"}
    assert one_pass_plan([("f", {"c": ColumnStats(10, mixed)})], rules, **plan_args) is None
    iso = dict.fromkeys(names, 0) | {"timestamp": 10}
    plan = one_pass_plan([("f", {"c": ColumnStats(10, iso)})], rules, **plan_args)
    assert plan is not None and plan.types["c"] == "timestamp"
    # a committed type the sample's values don't fit: their rows are rejected, so the passes run
    committed = {**plan_args, "committed": {"c": "bigint"}}
    assert one_pass_plan([("f", {"c": ColumnStats(10, iso)})], rules, **committed) is None


def test_one_pass_can_be_turned_off(tmp_path: Path) -> None:
    """`duckdb: {one_pass: false}` is read from the config."""
    from ingestion.config import PipelineConfig

    cfg = PipelineConfig.model_validate(
        {
            "pipeline": "p",
            "lake": {"root": str(tmp_path)},
            "duckdb": {"one_pass": False},
            "sources": [
                {
                    "name": "s",
                    "kind": "csv",
                    "path": str(tmp_path),
                    "tables": [{"name": "t", "pattern": "*.csv"}],
                }
            ],
        }
    )
    assert cfg.duckdb.one_pass is False


# The Spark engine: the same landing in one job (no cache), against its own passes.
SPARK_CASES = ["widened number", "text in numbers", "late value", "signed integers", "bad cursor", "null key"]


@pytest.mark.slow
@pytest.mark.spark
def test_spark_lands_a_clean_batch_in_one_pass_as_in_passes(spark: Any, tmp_path: Path, caplog: Any) -> None:
    files = {
        "a.csv": _csv(_rows()),
        "b.csv": _csv([r[:4] for r in _rows(n=50)], HEADER[:4]),
        # a.csv's header: read with it, each file's rows checked by its own sample's findings
        "c.csv": _csv([[str(N + i), *r[1:6], "note"] for i, r in enumerate(_rows(n=100))]),
    }
    one, _ = _both(tmp_path, files, caplog, spark)
    assert not one["fell_back"] and one["counts"] == (N + 150, N + 100, 0, 0)
    # and with a lower bound: rows under it still checked, never winning a key
    bound = Watermark(value="2025-01-15T00:00:00.000000", type="timestamp")
    one, _ = _both(tmp_path / "bounded", files, caplog, spark, lower_bound=bound)
    assert not one["fell_back"] and one["counts"][3] > 0
    # a file of the same layout with a value past its sample: the one job stops, the passes land it
    late = _rows({N - 10: {1: "2.5"}})
    files["c.csv"] = _csv([[str(N + i), *r[1:]] for i, r in enumerate(late)])
    one, _ = _both(tmp_path / "late", files, caplog, spark)
    assert one["fell_back"] and one["columns"]["qty"] == "decimal"


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("case", SPARK_CASES)
def test_spark_values_past_the_sample_land_as_in_passes(
    spark: Any, tmp_path: Path, caplog: Any, case: str
) -> None:
    edit, stands = CASES[case]
    one, _ = _both(tmp_path, {"a.csv": _csv(_rows(edit))}, caplog, spark)
    assert one["fell_back"] is (not stands)


@pytest.mark.slow
@pytest.mark.spark
def test_spark_records_it_finds_malformed_past_the_sample(spark: Any, tmp_path: Path, caplog: Any) -> None:
    data = _csv(_rows())
    lines = data.split(b"\n")
    lines[N - 100] += b",extra"
    lines[N - 20] = lines[N - 20].replace(b"name", b"n\xe4me")
    lines.insert(N - 10, b",".join(h.encode() for h in HEADER))
    one, _ = _both(tmp_path, {"a.csv": b"\n".join(lines)}, caplog, spark)
    assert one["fell_back"] and len(one["rejects"]) == 3


def test_a_file_without_the_key_column_is_refused(tmp_path: Path, caplog: Any) -> None:
    """Its rows would land with no key (they did, before): the file is refused whole, the others land."""
    files = {
        "a.csv": _csv(_rows(n=100)),
        "b.csv": _csv([["x", "2025-01-01 00:00:00"]], ["name", "updated_at"]),
    }
    one, _ = _both(tmp_path, files, caplog)
    assert "b.csv" in one["refused"] and "primary key" in one["refused"]["b.csv"]
    assert one["counts"][:2] == (100, 100) and all(r[0] is not None for r in one["rows"])
