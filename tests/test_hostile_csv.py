"""Hostile CSV input across runs: what a bad value in one run must not do to the next (issue 15).

The corpus (test_csv_corpus.py) checks single runs; these check the state a run commits: the watermark
stays a typed time, a column empty in the first run is typed by the values of a later one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ingestion.config import parse_config
from ingestion.engines.duckdb.engine import DuckDBEngine
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

ENGINES = ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]


def _engine(name: str, request):
    if name == "duckdb":
        return DuckDBEngine()
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    return SparkEngine(SparkConfig(), spark=request.getfixturevalue("spark"))


def _doc(inbox: Path, lake: Path, **table: Any) -> dict[str, Any]:
    return {
        "pipeline": "hostile",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "drops",
                "kind": "csv",
                "path": str(inbox),
                "archive": {"enabled": True},
                "tables": [{"name": "t", "pattern": "t_*.csv", **table}],
            }
        ],
    }


def _types(lake: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in sorted((lake / "landing" / "drops" / "t").glob("**/*.parquet")):
        for field in pq.read_schema(f):
            out[field.name] = str(field.type)
    return out


@pytest.mark.parametrize("engine_name", ENGINES)
def test_an_unparseable_cursor_value_never_poisons_the_watermark(tmp_path, request, engine_name):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    rows = [f"{i},2026-01-{i:02d} 10:00:00" for i in range(1, 20)]
    rows.insert(5, "99,yesterday")
    (inbox / "t_1.csv").write_text("id,updated_at\n" + "\n".join(rows) + "\n")
    cfg = parse_config(_doc(inbox, lake, primary_key=["id"], cursor="updated_at", cursor_timezone="UTC"))
    first = run_pipeline(cfg, engine=_engine(engine_name, request))
    assert first.ok and first.tables[0].rows_landed == 19 and first.tables[0].rows_rejected == 1
    state = StateStore(str(lake), "hostile").read("drops", "t")
    assert state is not None and state.watermark is not None
    assert (state.watermark.type, state.watermark.value) == ("timestamp", "2026-01-19T10:00:00.000000+00:00")
    assert state.columns["updated_at"] == "timestamp"
    # The next file's rows are newer than the real maximum: they land, none is filtered.
    (inbox / "t_2.csv").write_text("id,updated_at\n20,2026-01-20 10:00:00\n21,2026-01-21 10:00:00\n")
    second = run_pipeline(cfg, engine=_engine(engine_name, request))
    t = second.tables[0]
    assert (t.status, t.rows_landed, t.rows_filtered) == ("landed", 2, 0)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_column_empty_in_the_first_run_is_typed_by_later_values(tmp_path, request, engine_name):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text("id,score\n1,\n2,\n")
    cfg = parse_config(_doc(inbox, lake, primary_key=["id"]))
    assert run_pipeline(cfg, engine=_engine(engine_name, request)).ok
    state = StateStore(str(lake), "hostile").read("drops", "t")
    assert state is not None and "score" not in state.columns  # no values yet: no type yet
    assert "score" not in _types(lake)  # nor a column in the lake
    (inbox / "t_2.csv").write_text("id,score\n3,17\n4,18\n")
    second = run_pipeline(cfg, engine=_engine(engine_name, request))
    assert second.ok and second.tables[0].rows_landed == 2
    state = StateStore(str(lake), "hostile").read("drops", "t")
    assert state is not None and state.columns["score"] == "bigint"
    assert _types(lake)["score"] == "int64"


def test_a_file_two_tables_match_is_refused_naming_both_and_defaults_that_overlap_warn(tmp_path, caplog):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "order_1.csv").write_text("id\n1\n")
    (inbox / "orders_1.csv").write_text("id\n2\n")
    doc = _doc(inbox, lake)
    doc["sources"][0]["tables"] = [{"name": "order"}, {"name": "orders"}]
    with caplog.at_level("WARNING", logger="tidemark"):
        cfg = parse_config(doc)
    assert "'order*.csv' also matches table orders" in caplog.text
    report = run_pipeline(cfg, engine=DuckDBEngine())
    assert not report.ok
    for t in report.tables:  # neither lands it, both say why
        assert t.status == "failed"
        assert "orders_1.csv" in (t.error or "") and "drops.order " in t.error and "drops.orders " in t.error
    assert (inbox / "orders_1.csv").exists()
    assert not (lake / "landing" / "drops" / "order").exists()
    # Explicit patterns that don't overlap: each file lands once, in its own table.
    doc["sources"][0]["tables"] = [
        {"name": "order", "pattern": "order_*.csv"},
        {"name": "orders", "pattern": "orders_*.csv"},
    ]
    report = run_pipeline(parse_config(doc), engine=DuckDBEngine())
    assert report.ok and [t.rows_landed for t in report.tables] == [1, 1]


def test_a_symlink_out_of_the_inbox_is_neither_landed_nor_moved(tmp_path):
    inbox, lake, outside = tmp_path / "inbox", tmp_path / "lake", tmp_path / "elsewhere"
    inbox.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_text("id\n99\n")
    (inbox / "t_1.csv").write_text("id\n1\n")
    (inbox / "t_2.csv").symlink_to(outside / "secret.csv")
    (inbox / "sub").symlink_to(outside, target_is_directory=True)
    doc = _doc(inbox, lake)
    doc["sources"][0]["tables"][0]["pattern"] = "**/*.csv"
    report = run_pipeline(parse_config(doc), engine=DuckDBEngine())
    assert report.ok and report.tables[0].rows_landed == 1
    assert (outside / "secret.csv").read_text() == "id\n99\n"  # still where it was
    assert (inbox / "t_2.csv").is_symlink() and not (inbox / "t_1.csv").exists()
    archived = [p.name for p in (inbox / "archive").rglob("*.csv")]
    assert archived == ["t_1.csv"]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_an_undecodable_row_keeps_its_bytes_and_a_refused_file_keeps_its_rows(tmp_path, request, engine_name):
    import duckdb

    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_bytes(
        b"id,city\n1,Bern\n2,Z\xfcrich\n" + b"".join(b"%d,x\n" % i for i in range(3, 12))
    )
    (inbox / "t_2.csv").write_text("id,city\n1\n2\n3,ok\n")  # mostly ragged: refused whole
    cfg = parse_config(_doc(inbox, lake))
    report = run_pipeline(cfg, engine=_engine(engine_name, request))
    t = report.tables[0]
    assert t.rows_landed == 10 and t.rows_rejected == 1
    why = t.files_refused["t_2.csv"]
    assert "2 of 3 rows rejected" in why and "missing_columns: 2" in why
    rows = duckdb.sql(
        f"select _source_file, _line, _reason_code, _raw from read_parquet('{lake}/_rejected/**/*.parquet') "
        "order by all"
    ).fetchall()
    assert rows == [
        ("t_1.csv", 3, "invalid_encoding", "2,Z\\xfcrich"),
        ("t_2.csv", 2, "missing_columns", "1"),
        ("t_2.csv", 3, "missing_columns", "2"),
    ]


def _rejected_lines(lake: Path) -> list[tuple[int, str]]:
    import duckdb

    return duckdb.sql(
        f"select _line, _reason_code from read_parquet('{lake}/_rejected/**/*.parquet') order by all"
    ).fetchall()


def test_an_undecodable_value_in_a_column_the_write_leaves_out_still_rejects_its_row(tmp_path):
    """The DuckDB engine reads a file once per pass, and DuckDB checks the encoding only of the columns a
    query reads: `note` has no value but the undecodable one, so it is untyped and not written. Its row
    must still be rejected (not landed by the write), and the rows after it keep their identity: the
    null-key row after it is the one left out, at its own line."""
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_bytes(b"id,city,note\n1,Bern,\n2,Basel,Z\xfcrich\n3,Chur,\n,Genf,\n5,Sion,\n")
    doc = _doc(inbox, lake, primary_key=["id"], max_rejected_fraction=0.5)
    t = run_pipeline(parse_config(doc), engine=DuckDBEngine()).tables[0]
    assert t.error is None, t.error
    assert (t.rows_read, t.rows_landed, t.rows_rejected) == (5, 3, 2)
    files = sorted((lake / "landing" / "drops" / "t").glob("**/*.parquet"))
    table = pq.read_table(files).sort_by("id")
    assert "note" not in table.column_names
    assert table.column("id").to_pylist() == [1, 3, 5]
    assert table.column("city").to_pylist() == ["Bern", "Chur", "Sion"]
    assert _rejected_lines(lake) == [(3, "invalid_encoding"), (5, "null_key")]


def test_a_wide_file_types_its_columns_without_the_rows_its_read_rejected(tmp_path):
    """Over 64 columns the full type counts are a pass of their own, 64 columns at a time: a row rejected
    for bytes in column 70 must not type column 1 (its `x` there would make the column a string)."""
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    header = ",".join(["id", "n"] + [f"c{k}" for k in range(2, 70)]).encode()
    rows = [",".join([str(i), str(i * 2)] + ["v"] * 68).encode() for i in range(12_000)]
    rows[11_000] = b",".join([b"11000", b"x"] + [b"v"] * 67 + [b"\xff"])
    rows[11_500] = b",".join([b"", b"1"] + [b"v"] * 68)  # a null key after it: its own row, line 11,502
    (inbox / "t_1.csv").write_bytes(b"\n".join([header, *rows]) + b"\n")
    t = run_pipeline(parse_config(_doc(inbox, lake, primary_key=["id"])), engine=DuckDBEngine()).tables[0]
    assert t.error is None, t.error
    assert (t.rows_read, t.rows_landed, t.rows_rejected) == (12_000, 11_998, 2)
    assert _types(lake)["n"] == "int64"
    assert _rejected_lines(lake) == [(11_002, "invalid_encoding"), (11_502, "null_key")]


def test_a_header_line_repeated_past_the_sample_types_nothing_and_keeps_the_lines_after_it(tmp_path):
    """The type counts are made in the pass that finds the rejects, over every row: a repeated header line
    found there (past the sample) is taken out and the counts made again (`n` stays a bigint), and the
    rows after it keep their identity (the null-key row is the one left out, at its own line)."""
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    lines = [b"id,n"] + [b"%d,%d" % (i, i * 2) for i in range(12_000)]
    lines.insert(11_001, b"id,n")  # line 11,002
    lines[11_501] = b",1"  # line 11,502: a null key
    (inbox / "t_1.csv").write_bytes(b"\n".join(lines) + b"\n")
    t = run_pipeline(parse_config(_doc(inbox, lake, primary_key=["id"])), engine=DuckDBEngine()).tables[0]
    assert t.error is None, t.error
    assert (t.rows_read, t.rows_landed, t.rows_rejected) == (12_001, 11_999, 2)
    assert _types(lake)["n"] == "int64"
    assert _rejected_lines(lake) == [(11_002, "repeated_header"), (11_502, "null_key")]


def test_with_archiving_off_a_refused_file_is_said_to_stay_in_the_inbox(tmp_path):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    doc = _doc(inbox, lake)
    doc["sources"][0]["archive"] = {"enabled": False}
    t = run_pipeline(parse_config(doc), engine=DuckDBEngine()).tables[0]
    assert "not_text" in t.files_refused["t_1.csv"]
    assert t.refused_to.startswith("left in the inbox") and (inbox / "t_1.csv").exists()
    doc["sources"][0]["archive"] = {"enabled": True}
    (inbox / "t_1.csv").unlink()
    (inbox / "t_2.csv").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip archive
    t = run_pipeline(parse_config(doc), engine=DuckDBEngine()).tables[0]
    assert "not_text: a zip archive with 0 files" in t.files_refused["t_2.csv"]
    assert t.refused_to == "moved to unprocessed/" and not (inbox / "t_2.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_line_over_the_limit_is_rejected_as_line_too_long_and_the_rest_lands_on_both_engines(
    tmp_path, request, engine_name
):
    """A 70 MB line is one `line_too_long` reject (its start kept in `_raw`, its line number right), the
    file's other rows land; a long line inside a quoted field can't be told apart and refuses its file."""
    import duckdb

    from ingestion.plan.rejects import MAX_LINE_BYTES, RAW_LIMIT

    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    with open(inbox / "t_1.csv", "w", newline="") as f:
        f.write("id,note\r\n" + "".join(f"{i},n\r\n" for i in range(1, 20)))
        f.write(
            "20,"
            + "x" * (MAX_LINE_BYTES + 6 * 1024 * 1024)
            + '\r\n21,c\r\n22,"two\r\nlines"\r\n23,oops,x\r\n'
        )
    with open(inbox / "t_2.csv", "w") as f:
        f.write('id,note\n30,"a quoted field\n' + "y" * (MAX_LINE_BYTES + 1024) + '"\n31,d\n')
    (inbox / "t_3.csv").write_text("id,note\n40,e\n")
    report = run_pipeline(
        parse_config(_doc(inbox, lake, max_rejected_fraction=0.5)), engine=_engine(engine_name, request)
    )
    t = report.tables[0]
    assert t.status == "landed" and t.rows_landed == 19 + 2 + 1 and t.rows_rejected == 2
    assert set(t.files_refused) == {"t_2.csv"}
    assert (
        "line 3 is longer than" in t.files_refused["t_2.csv"]
        and "line_too_long" in t.files_refused["t_2.csv"]
    )
    rows = duckdb.sql(
        f"select _source_file, _line, _reason_code, length(_raw), left(_raw, 5) "
        f"from read_parquet('{lake}/_rejected/**/*.parquet') order by all"
    ).fetchall()
    assert rows == [
        ("t_1.csv", 21, "line_too_long", RAW_LIMIT, "20,xx"),
        ("t_1.csv", 25, "extra_columns", 9, "23,oo"),
    ]
    landed = duckdb.sql(
        f"select id, note from read_parquet('{lake}/landing/drops/t/**/*.parquet') where id >= 19 order by id"
    ).fetchall()
    assert landed == [(19, "n"), (21, "c"), (22, "two\r\nlines"), (40, "e")]
    # Nothing lost: the file with the long line is archived whole, the refused one kept in unprocessed/.
    archived = list((inbox / "archive").rglob("t_1.csv"))
    assert archived and archived[0].stat().st_size > MAX_LINE_BYTES
    assert list((inbox / "unprocessed").rglob("t_2.csv"))
