"""The Spark engine reads a CSV batch as one DataFrame (issue 17): the files of a header layout in one
`csv()` read, the rows' files from the URI Spark opened, nothing left cached after the batch, and record
indexes (so line numbers) exact for rejects spread over several input partitions shared between files."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import CsvOptions, SparkConfig
from ingestion.engines.base import CsvBatch
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.rejects import EXTRA_COLUMNS, MISSING_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def _batch(tmp: Path, files: dict[str, bytes], run: str) -> CsvBatch:
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
        options=CsvOptions(),
        primary_key=("id",),
        cursor=None,
        run_id=f"20260101T000000000000Z-{run}",
        ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        target=str(tmp / "lake" / "landing" / "s" / "t"),
        lake_root=str(tmp / "lake"),
    )


def _land(spark: Any, batch: CsvBatch) -> LandedBatch:
    from ingestion.engines.spark.engine import SparkEngine

    return SparkEngine(SparkConfig(), spark=spark).land_csv(batch)


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
    assert [(r.file, r.record, r.line, r.code, r.raw) for r in q.rejects] == [
        ("day 3/ord é3.csv", 10, 12, EXTRA_COLUMNS, "1,2,3")
    ]
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
    got = sorted((r.file, r.record, r.line, r.code, r.raw) for r in q.rejects)
    assert got == sorted(expected + small_expected)
    assert q.files["big.csv"].accepted == 19_500 and q.files["small.csv"].accepted == 3_000 - 31
    assert out.rows_landed == 19_500 + 3_000 - 31 + 1
