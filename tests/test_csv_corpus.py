"""The nasty-CSV corpus (tests/corpus/): every file lands or is clearly refused, rows add up, both engines agree.

`tests/corpus/corpus.yml` gives each case's table options and what must happen. Conservation is checked
against what is on disk: for every file, the rows its ledger entry says were read equal the rows found in
`landing/` (plus those dedup dropped) and in `_rejected/` for that file.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from ingestion.config import parse_config
from ingestion.engines.duckdb.engine import DuckDBEngine
from ingestion.lake.state import StateStore
from ingestion.records import RunReport
from ingestion.run.pipeline import run_pipeline

CORPUS = Path(__file__).parent / "corpus"
DROPS = (".csv", ".tsv", ".gz", ".zst", ".zip")  # the corpus's file kinds (compressed drops too)
SPEC: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "corpus.yml").read_text())
PARQUET_TYPES = {
    "bigint": "int64",
    "decimal": "decimal128(38, 18)",
    "double": "double",
    "string": "string",
    "boolean": "bool",
    "date": "date32[day]",
    "timestamp": "timestamp[us]",
    "timestamptz": "timestamp[us, tz=UTC]",
}


# The Spark runs land several of the ~75 tables at once: each is a string of small jobs whose waits
# (the driver, S3 round trips) overlap; the report lists the tables in config order either way.
SPARK_PARALLEL_TABLES = 4


def corpus_doc(inbox: Path, lake: Path, *, archive: bool, parallel: int = 1) -> dict[str, Any]:
    return {
        "pipeline": "corpus",
        "lake": {"root": str(lake)},
        "spark": {"master": "local[2]"},
        "max_parallel_tables": parallel,
        "sources": [
            {
                "name": "corpus",
                "kind": "csv",
                "path": str(inbox),
                "archive": {"enabled": archive},
                "tables": [{"name": name, **case["options"]} for name, case in SPEC.items()],
            }
        ],
    }


def land_corpus(tmp: Path, engine, *, archive: bool, parallel: int = 1) -> tuple[Path, Path, RunReport]:
    inbox, lake = tmp / "inbox", tmp / "lake"
    shutil.copytree(CORPUS, inbox, ignore=shutil.ignore_patterns("*.yml"))
    doc = corpus_doc(inbox, lake, archive=archive, parallel=parallel)
    report = run_pipeline(parse_config(doc), engine=engine)
    return inbox, lake, report


def landed_rows(lake: Path, table: str) -> list[dict[str, Any]]:
    files = sorted((lake / "landing" / "corpus" / table).glob("**/*.parquet"))
    if not files:
        return []
    rel = duckdb.sql(
        f"select * exclude (_run_id, _ingested_at) from read_parquet({[str(f) for f in files]}, "
        "union_by_name = true, hive_partitioning = false)"
    )
    return sorted((dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()), key=repr)


def landed_types(lake: Path, table: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in sorted((lake / "landing" / "corpus" / table).glob("**/*.parquet")):
        for field in pq.read_schema(f):
            out[field.name] = str(field.type)
    return out


def rejected_rows(lake: Path, table: str) -> list[tuple]:
    files = sorted((lake / "_rejected" / "corpus" / table).glob("**/*.parquet"))
    if not files:
        return []
    return duckdb.sql(
        f"select _source_file, _line, _reason_code, _column from read_parquet({[str(f) for f in files]}) "
        "order by all"
    ).fetchall()


@pytest.fixture(scope="module")
def duck_corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus_duckdb")
    return land_corpus(tmp, DuckDBEngine(), archive=True)


def test_the_corpus_is_nasty_enough():
    files = [p for p in CORPUS.iterdir() if p.suffix in DROPS]
    assert len(files) >= 70


@pytest.mark.parametrize("table", list(SPEC))
def test_each_case_lands_or_is_refused_as_expected(duck_corpus, table):
    _, lake, report = duck_corpus
    outcome = next(t for t in report.tables if t.table == table)
    expect = SPEC[table]["expect"]
    assert outcome.status == "landed", outcome.error
    assert outcome.rows_landed == expect["landed"]
    assert len(landed_rows(lake, table)) == expect["landed"]
    rejected = rejected_rows(lake, table)
    assert dict(Counter(r[2] for r in rejected)) == expect.get("rejected", {})
    if "lines" in expect:
        assert [r[1] for r in rejected] == expect["lines"]
    if "refused" in expect:
        assert len(outcome.files_refused) == 1
        assert expect["refused"] in next(iter(outcome.files_refused.values()))
    else:
        assert outcome.files_refused == {}
    rows = landed_rows(lake, table)
    for column, values in expect.get("values", {}).items():
        assert sorted((r[column] for r in rows), key=repr) == sorted(values, key=repr), column
    types = landed_types(lake, table)
    for column in expect.get("absent", []):  # no value yet, so no type yet: not in the lake (issue 15)
        assert column not in types, column
    for column, kind in expect.get("types", {}).items():
        want = PARQUET_TYPES["timestamptz" if kind == "timestamp" and table == "naive_tz" else kind]
        assert types[column] == want, column


def test_rows_add_up_for_every_file(duck_corpus):
    """read = landed + deduplicated + rejected, per file, counted from what is on disk."""
    _, lake, report = duck_corpus
    store = StateStore(str(lake), "corpus")
    checked = 0
    for outcome in report.tables:
        state = store.read("corpus", outcome.table)
        assert state is not None
        landed = Counter(r["_source_file"] for r in landed_rows(lake, outcome.table))
        rejected = Counter(r[0] for r in rejected_rows(lake, outcome.table))
        assert outcome.rows_read == (
            outcome.rows_landed + outcome.rows_deduplicated + outcome.rows_rejected + outcome.rows_filtered
        )
        for name, entry in state.files.items():
            if entry.status == "rejected":
                # refused whole: nothing lands, its rejected rows are kept in _rejected/ (issue 15)
                assert entry.reason and name not in landed and rejected[name] == entry.rows_rejected
                continue
            assert entry.rows_rejected == rejected[name], name
            if not outcome.rows_deduplicated:
                assert entry.rows_read == landed[name] + rejected[name], name
            checked += 1
    assert checked >= 30


def test_processed_files_are_archived_and_refused_ones_kept_whole(duck_corpus):
    inbox, _, report = duck_corpus
    month = report.run_id[:4] + "/" + report.run_id[4:6]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []
    refused = {f for t in report.tables for f in t.files_refused}
    assert refused == {
        "duplicate_headers.csv",
        "colliding_headers.csv",
        "garbage.csv",
        "zip_several.csv",
        "binary_drop_2.csv",
    }
    for name in refused:
        kept = inbox / "unprocessed" / month / name
        assert kept.read_bytes() == (CORPUS / name).read_bytes()
    archived = {p.name for p in (inbox / "archive" / month).iterdir()}
    originals = {p.name for p in CORPUS.iterdir() if p.suffix in DROPS}
    assert archived == originals - refused


def test_a_rerun_lands_nothing_and_redelivered_files_are_not_landed_twice(duck_corpus, tmp_path):
    inbox, lake, _ = duck_corpus
    cfg = parse_config(corpus_doc(inbox, lake, archive=True))
    again = run_pipeline(cfg, engine=DuckDBEngine())
    assert all(t.status == "up_to_date" for t in again.tables)
    # The same bytes dropped again (a new mtime): recognised by checksum, archived, not landed.
    shutil.copy(CORPUS / "clean.csv", inbox / "clean.csv")
    redelivered = run_pipeline(cfg, engine=DuckDBEngine(), tables=["clean"])
    assert redelivered.tables[0].rows_landed == 0 and redelivered.ok
    assert not (inbox / "clean.csv").exists()
    assert len(landed_rows(lake, "clean")) == 3


@pytest.mark.slow
@pytest.mark.spark
def test_both_engines_land_and_reject_the_same_rows(tmp_path, spark, duck_corpus):
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    _, duck_lake, duck_report = duck_corpus
    _, spark_lake, spark_report = land_corpus(
        tmp_path, SparkEngine(SparkConfig(), spark=spark), archive=False, parallel=SPARK_PARALLEL_TABLES
    )
    for d, s in zip(duck_report.tables, spark_report.tables, strict=True):
        assert (d.table, d.status, d.rows_landed, d.rows_rejected, sorted(d.files_refused)) == (
            s.table,
            s.status,
            s.rows_landed,
            s.rows_rejected,
            sorted(s.files_refused),
        )
        assert landed_types(duck_lake, d.table) == landed_types(spark_lake, d.table), d.table
        assert landed_rows(duck_lake, d.table) == landed_rows(spark_lake, d.table), d.table
        assert rejected_rows(duck_lake, d.table) == rejected_rows(spark_lake, d.table), d.table


@pytest.mark.slow
@pytest.mark.spark
def test_reject_lines_are_right_when_spark_splits_a_file_into_partitions(tmp_path, spark):
    """Record numbers survive Spark's split of a big file: structural and type rejects far into it."""
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = ["id,amount,note"]
    for i in range(1, 30001):
        if i == 21000:
            lines.append(f"{i},12.5")  # ragged: a column short
        elif i == 27000:
            lines.append(f"{i},not-a-number,x")  # type mismatch in a decimal column
        else:
            lines.append(f"{i},{i}.25,row {i} of the file")
    (inbox / "big.csv").write_text("\n".join(lines) + "\n")
    doc = {
        "pipeline": "split",
        "lake": {"root": str(tmp_path / "lake")},
        "sources": [
            {
                "name": "corpus",
                "kind": "csv",
                "path": str(inbox),
                "archive": {"enabled": False},
                "tables": [
                    {
                        "name": "big",
                        "pattern": "big.csv",
                        "primary_key": ["id"],
                        "columns": {"amount": "decimal"},
                        "csv": {"multiline": False},  # splittable: Spark reads it in partitions
                    }
                ],
            }
        ],
    }
    expected = [("big.csv", 21001, "missing_columns", None), ("big.csv", 27001, "type_mismatch", "amount")]
    duck = run_pipeline(parse_config(doc), engine=DuckDBEngine())
    assert duck.tables[0].rows_landed == 29998
    assert rejected_rows(tmp_path / "lake", "big") == expected
    shutil.rmtree(tmp_path / "lake")
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "64k")  # about a dozen partitions
    try:
        report = run_pipeline(parse_config(doc), engine=SparkEngine(SparkConfig(), spark=spark))
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", before)
    assert report.tables[0].rows_landed == 29998
    assert rejected_rows(tmp_path / "lake", "big") == expected


def _late_surprises(inbox: Path, rows: int) -> None:
    """A file whose first 10,000 rows (the inference sample) hide what comes later."""
    lines = ["id,qty,code,day,flag,price"]
    for i in range(1, rows + 1):
        qty = "3.5" if i == rows - 5 else str(i)  # ints, then one decimal: decimal
        code = "X-1" if i == rows - 3 else str(i)  # ints, then text: string
        day = "2025-01-02 10:00:00" if i == rows - 2 else "2025-01-02"  # dates, one timestamp: string
        flag = "" if i <= 10_000 else "true"  # null in the sample, then booleans: boolean
        price = "oops" if i == rows - 1 else f"{i}.5"  # declared decimal: one type reject
        lines.append(f"{i},{qty},{code},{day},{flag},{price}")
    (inbox / "late.csv").write_text("\n".join(lines) + "\n")


def _late_doc(inbox: Path, lake: Path) -> dict[str, Any]:
    table = {"name": "late", "pattern": "late.csv", "primary_key": ["id"], "columns": {"price": "decimal"}}
    return {
        "pipeline": "late",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "corpus",
                "kind": "csv",
                "path": str(inbox),
                "archive": {"enabled": False},
                "tables": [table],
            }
        ],
    }


@pytest.mark.parametrize(
    "engine_name", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_inference_from_a_sample_still_decides_on_every_value(tmp_path, monkeypatch, request, engine_name):
    """Rules are tested on a sample first, then only the survivors on every row: same result as all rules
    on every row, whatever the sample hides."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _late_surprises(inbox, 12_000)
    if engine_name == "spark":
        from ingestion.config import SparkConfig
        from ingestion.engines.spark.engine import SparkEngine

        spark = request.getfixturevalue("spark")

        def engine():
            return SparkEngine(SparkConfig(), spark=spark)
    else:
        engine = DuckDBEngine
    # The module holding the engine's CSV steps (Spark's live in engines/spark/csv.py).
    module = f"ingestion.engines.{engine_name}.{'csv' if engine_name == 'spark' else 'engine'}"
    outcomes = {}
    for mode, sample in (("sampled", 10_000), ("every rule on every row", 10**9)):
        monkeypatch.setattr(f"{module}.SAMPLE_ROWS", sample)
        lake = tmp_path / mode
        report = run_pipeline(parse_config(_late_doc(inbox, lake)), engine=engine())
        t = report.tables[0]
        outcomes[mode] = (
            t.rows_landed,
            t.rows_rejected,
            landed_types(lake, "late"),
            rejected_rows(lake, "late"),
        )
    assert outcomes["sampled"] == outcomes["every rule on every row"]
    landed, rejected, types, rejects = outcomes["sampled"]
    assert (landed, rejected) == (11_999, 1)
    assert {c: types[c] for c in ("id", "qty", "code", "day", "flag", "price")} == {
        "id": "int64",
        "qty": PARQUET_TYPES["decimal"],
        "code": "string",
        "day": "string",
        "flag": "bool",
        "price": PARQUET_TYPES["decimal"],
    }
    assert rejects == [("late.csv", 11_999 + 1, "type_mismatch", "price")]


@pytest.mark.slow
@pytest.mark.spark
def test_the_corpus_on_an_s3_inbox_and_lake_lands_as_on_a_local_disk(
    tmp_path, s3_bucket, s3a_spark, duck_corpus
):
    """The Spark engine reading the corpus from an S3 inbox and writing an S3 lake (S3A on moto): the same
    statuses, rows, types and rejects as the DuckDB engine on local folders."""
    import boto3

    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    s3 = boto3.client("s3")
    for f in sorted(CORPUS.iterdir()):
        if f.is_file() and f.suffix != ".yml":
            s3.put_object(Bucket=s3_bucket, Key=f"inbox/{f.name}", Body=f.read_bytes())
    doc = corpus_doc(tmp_path / "unused", tmp_path / "unused", archive=False, parallel=SPARK_PARALLEL_TABLES)
    doc["lake"]["root"] = f"s3://{s3_bucket}/lake"
    doc["sources"][0]["path"] = f"s3://{s3_bucket}/inbox"
    report = run_pipeline(parse_config(doc), engine=SparkEngine(SparkConfig(), spark=s3a_spark))
    mirror = tmp_path / "mirror"  # the S3 lake copied down, for the same readers as the local lakes
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="lake/"):
        for obj in page.get("Contents", []):
            local = mirror / obj["Key"].removeprefix("lake/")
            local.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(s3_bucket, obj["Key"], str(local))
    assert not (mirror / "_tmp").exists() or not list((mirror / "_tmp").rglob("*.*")), "staging left behind"
    _, duck_lake, duck_report = duck_corpus
    for d, s in zip(duck_report.tables, report.tables, strict=True):
        assert (d.table, d.status, d.rows_landed, d.rows_rejected, sorted(d.files_refused)) == (
            s.table,
            s.status,
            s.rows_landed,
            s.rows_rejected,
            sorted(s.files_refused),
        )
        assert landed_types(duck_lake, d.table) == landed_types(mirror, d.table), d.table
        assert landed_rows(duck_lake, d.table) == landed_rows(mirror, d.table), d.table
        assert rejected_rows(duck_lake, d.table) == rejected_rows(mirror, d.table), d.table
