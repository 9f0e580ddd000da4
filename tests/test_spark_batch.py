"""The Spark engine reads a CSV batch as one DataFrame (issue 17): the files of a header layout in one
`csv()` read, the rows' files from the URI Spark opened, nothing left cached after the batch, and record
indexes (so line numbers) exact for rejects spread over several input partitions shared between files."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import CsvOptions, SparkConfig
from ingestion.engines.base import CsvBatch
from ingestion.engines.spark.rejects import SAMPLE
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.rejects import EXTRA_COLUMNS, INVALID_ENCODING, MISSING_COLUMNS, TYPE_MISMATCH

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def _batch(tmp: Path, files: dict[str, bytes], run: str, options: CsvOptions | None = None) -> CsvBatch:
    inbox = tmp / "inbox"
    facts = []
    for relpath, data in files.items():
        path = inbox / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        facts.append(FileFacts(relpath, str(path), len(data), 1))
    return CsvBatch(
        source="s",
        table="t",
        files=tuple(facts),
        options=options or CsvOptions(),
        primary_key=("id",),
        cursor=None,
        run_id=f"20260101T000000000000Z-{run}",
        ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        target=str(tmp / "lake" / "landing" / "s" / "t"),
        lake_root=str(tmp / "lake"),
    )


def _land(spark: Any, batch: CsvBatch) -> LandedBatch:
    """The batch in passes (every batch here has rejects: a one-pass attempt would stop and read again;
    tests/test_one_pass.py covers that)."""
    from ingestion.engines.spark.engine import SparkEngine

    return SparkEngine(SparkConfig(one_pass=False), spark=spark).land_csv(batch)


def _kept(tmp: Path) -> list[tuple]:
    """The rejected rows the executors wrote to the run's `_rejected/` folder (none went to the driver)."""
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((tmp / "lake" / "_rejected").glob("**/*.parquet")):
        t = pq.read_table(f).to_pylist()
        rows += [(r["_source_file"], r["_record"], r["_line"], r["_reason_code"], r["_raw"]) for r in t]
    return sorted(rows)


def _persisted(spark: Any) -> int:
    return int(spark.sparkContext._jsc.getPersistentRDDs().size())


def test_a_five_file_batch_is_one_read_and_leaves_nothing_cached(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql import DataFrameReader

    files = {
        # relpaths with a space and a non-ASCII letter: Spark reports them percent-encoded
        f"day {k}/ord é{k}.csv": (
            "id,amount\n"
            + "".join(f"{k * 100 + i},{i}.5\n" for i in range(10))
            + ("1,2,3\n" if k == 3 else "")
        ).encode()
        for k in range(5)
    }
    reads: list[Any] = []
    real_csv = DataFrameReader.csv

    def spy(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return real_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(DataFrameReader, "csv", spy)
    before = _persisted(spark)
    out = _land(spark, _batch(tmp_path, files, "aaaaaa"))

    assert len(reads) == 1 and isinstance(reads[0], list) and len(reads[0]) == 5, reads
    assert _persisted(spark) == before  # the group's cache is gone with the batch
    q = out.quarantine
    assert q is not None
    assert {f: (c.read, c.accepted, c.rejected) for f, c in q.files.items()} == {
        f: (11, 10, 1) if "3" in f.split("/")[0] else (10, 10, 0) for f in files
    }
    assert q.rejects == []  # written by the executors: the driver has counts and a sample
    assert _kept(tmp_path) == [("day 3/ord é3.csv", 10, 12, EXTRA_COLUMNS, "1,2,3")]
    assert q.kept == {"day 3/ord é3.csv": {(EXTRA_COLUMNS, None): 1}}
    assert [(r.file, r.record, r.code) for r in q.sample] == [("day 3/ord é3.csv", 10, EXTRA_COLUMNS)]
    assert out.rows_read == 51 and out.rows_landed == 50 and out.rows_rejected == 1


def test_rejects_over_many_partitions_shared_by_files_get_exact_records_and_lines(
    spark: Any, tmp_path: Path
) -> None:
    # ~500 rejects in a file split into many small input partitions, each of which it shares with
    # another file's rows: record indexes come from per-(file, partition) counts.
    big_rows, expected = [], []
    for i in range(20_000):
        if i % 40 == 7:
            big_rows.append(f"{i}")  # one field short
            expected.append(("big.csv", i, i + 2, MISSING_COLUMNS, f"{i}"))
        else:
            big_rows.append(f"{i},{'x' * (i % 13)}")
    small_rows, small_expected = [], []
    for i in range(3_000):
        if i % 97 == 5:
            small_rows.append(f"{100_000 + i},a,b")  # ids apart from big.csv's: nothing deduplicated
            small_expected.append(("small.csv", i, i + 2, EXTRA_COLUMNS, f"{100_000 + i},a,b"))
        else:
            small_rows.append(f"{100_000 + i},s")
    files = {
        "big.csv": ("id,v\n" + "\n".join(big_rows) + "\n").encode(),
        "small.csv": ("id,v\n" + "\n".join(small_rows) + "\n").encode(),
        "tiny.csv": b"id,v\n900000,t\n",
    }
    assert len(expected) == 500
    conf = spark.conf
    saved = {k: conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    conf.set("spark.sql.files.maxPartitionBytes", "20000")
    conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        uris = [str(tmp_path / "inbox" / f) for f in files]
        out = _land(spark, _batch(tmp_path, files, "bbbbbb"))
        # the setting did split the batch into many partitions
        assert spark.read.csv(uris).rdd.getNumPartitions() > 8
    finally:
        for k, v in saved.items():
            conf.set(k, v)
    q = out.quarantine
    assert q is not None
    assert _kept(tmp_path) == sorted(expected + small_expected)
    assert q.kept == {"big.csv": {(MISSING_COLUMNS, None): 500}, "small.csv": {(EXTRA_COLUMNS, None): 31}}
    assert len(q.sample) == SAMPLE  # a capped sample reaches the driver, with exact record indexes
    assert {(r.file, r.record, r.code, r.raw) for r in q.sample} <= {
        (f, rec, code, raw) for f, rec, _, code, raw in expected + small_expected
    }
    assert q.files["big.csv"].accepted == 19_500 and q.files["small.csv"].accepted == 3_000 - 31
    assert out.rows_landed == 19_500 + 3_000 - 31 + 1


def _small_partitions(spark: Any) -> dict[str, str | None]:
    conf = spark.conf
    saved = {k: conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    conf.set("spark.sql.files.maxPartitionBytes", "4000")
    conf.set("spark.sql.files.openCostInBytes", "0")
    return saved


def test_line_numbers_come_from_the_executors_past_multi_line_records_and_blank_lines(
    spark: Any, tmp_path: Path
) -> None:
    """Records spanning lines (a blank line inside a quoted field too), blank lines between records, in a
    file whose text read is split into many partitions: every reject's line is the line its record
    starts on, worked out on the executors (quote parity carried from partition to partition)."""
    lines, expected = ["id,note"], []
    for i in range(3_000):
        kind = i % 10
        if kind == 3:
            lines += [f'{i},"two', 'lines"']
        elif kind == 5:
            lines += ["", f"{i},after a blank line"]
        elif kind == 7:
            expected.append(("m.csv", i, len(lines) + 1, MISSING_COLUMNS, f"{i}"))
            lines.append(f"{i}")
        elif kind == 8:
            lines += [f'{i},"a quoted', "", 'blank line"']
        elif kind == 9 and i % 200 == 9:
            expected.append(("m.csv", i, len(lines) + 1, TYPE_MISMATCH, f"x{i},n"))
            lines.append(f"x{i},n")
        else:
            lines.append(f"{i},x")
    files = {"m.csv": ("\n".join(lines) + "\n").encode()}
    saved = _small_partitions(spark)
    try:
        batch = _batch(tmp_path, files, "cccccc", CsvOptions(multiline=True))
        out = _land(spark, replace(batch, declared={"id": "bigint"}))  # `x9` is a type reject
        text_parts = spark.read.text(str(tmp_path / "inbox" / "m.csv")).rdd.getNumPartitions()
    finally:
        for k, v in saved.items():
            spark.conf.set(k, v)
    assert text_parts > 8
    assert out.quarantine is not None and out.quarantine.rejects == []
    assert _kept(tmp_path) == sorted(expected)
    assert out.rows_rejected == len(expected) and out.rows_landed == 3_000 - len(expected)


def test_an_undecodable_record_keeps_its_bytes_escaped_and_its_line(spark: Any, tmp_path: Path) -> None:
    """The raw text of an undecodable record is its line's bytes, bad ones escaped, as on the DuckDB
    engine: read by the executors from the line the record starts on."""
    rows, expected = [b"id,city"], []
    for i in range(2_000):
        if i % 250 == 17:
            expected.append(("e.csv", i, len(rows) + 1, INVALID_ENCODING, f"{i},Z\\xfcrich"))
            rows.append(f"{i},Z".encode() + b"\xfc" + b"rich")
        elif i % 100 == 50:
            rows.append(b"")  # a blank line before the record: line numbers move, record indexes don't
            rows.append(f"{i},Bern".encode())
        else:
            rows.append(f"{i},Basel".encode())
    files = {"e.csv": b"\n".join(rows) + b"\n"}
    saved = _small_partitions(spark)
    try:
        out = _land(spark, _batch(tmp_path, files, "dddddd"))
    finally:
        for k, v in saved.items():
            spark.conf.set(k, v)
    assert _kept(tmp_path) == sorted(expected)
    assert out.rows_landed == 2_000 - len(expected)


def test_rejects_of_a_utf16_file_get_their_lines_from_a_scan_on_the_executors(
    spark: Any, tmp_path: Path
) -> None:
    """A text read cannot split UTF-16 lines: an executor scans the file's bytes for the rejected
    records' lines (a blank line and a record over two lines before them)."""
    text = 'id,note\n1,a\n\n2\n3,"x\ny"\n4\n5,b\n'
    files = {"u.csv": text.encode("utf-16")}
    out = _land(spark, _batch(tmp_path, files, "eeeeee", CsvOptions(encoding="utf-16")))
    assert out.quarantine is not None and out.quarantine.rejects == []
    assert _kept(tmp_path) == [
        ("u.csv", 1, 4, MISSING_COLUMNS, "2"),
        ("u.csv", 3, 7, MISSING_COLUMNS, "4"),
    ]
    assert out.rows_landed == 3
