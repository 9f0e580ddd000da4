"""Same-day widenings: a run that widens a column on a day whose partition already holds files of the old
type casts those files (same names, same rows), so one `_ingest_date` partition never holds two types."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion.config import parse_config
from ingestion.lake.retype import partition_types, retype_partition, wider
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

DAY = "2026-03-04"
RUN1 = "id,amount,born,updated_at\n1,1,2026-01-01,2026-01-01 10:00:00\n2,20,2026-01-02,2026-01-01 11:00:00\n"
RUN2 = "id,amount,born,updated_at\n3,1.5,2026-01-03 10:30:00,2026-01-02 10:00:00\n"
TRUTH = {
    1: (Decimal("1"), datetime(2026, 1, 1)),
    2: (Decimal("20"), datetime(2026, 1, 2)),
    3: (Decimal("1.5"), datetime(2026, 1, 3, 10, 30)),
}
# Pins the `_ingest_date` every writer and the protocol use (both runs land on the same UTC day).
PIN = (
    "ingestion.lake.layout.partition_value",
    "ingestion.engines.duckdb.common.partition_value",
    "ingestion.run.protocol.partition_value",
)


def config_doc(lake: str, inbox: str, **catalog: str) -> dict:
    return {
        "pipeline": "p",
        "lake": {"root": lake},
        "catalog": catalog,
        "sources": [
            {
                "name": "billing",
                "kind": "csv",
                "path": inbox,
                "tables": [
                    {
                        "name": "accounts",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                ],
            }
        ],
    }


@pytest.fixture
def same_day(monkeypatch):
    for target in PIN:
        monkeypatch.setattr(target, lambda _: DAY)


def footers(folder: Path) -> dict[str, pa.Schema]:
    return {p.name: pq.read_schema(p) for p in sorted(folder.glob("part-*.parquet"))}


def rows(folder: Path) -> dict[int, tuple]:
    out: dict[int, tuple] = {}
    for p in sorted(folder.glob("part-*.parquet")):
        for r in pq.read_table(p).to_pylist():
            assert r["id"] not in out, r  # no row twice
            born = r["born"]
            out[r["id"]] = (r["amount"], born.replace(tzinfo=None) if born else born)
    return out


@pytest.mark.parametrize(
    "engine_name", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_same_day_widening_casts_the_earlier_files(tmp_path, same_day, engine_name, request, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "accounts_1.csv").write_text(RUN1)
    doc = config_doc(str(tmp_path / "lake"), str(inbox))
    engine = None
    if engine_name == "spark":
        from ingestion.engines.spark.engine import SparkEngine

        monkeypatch.setattr("ingestion.engines.spark.csv.partition_value", lambda _: DAY)
        doc["engine"] = "spark"
        doc["spark"] = {"master": "local[2]"}
        engine = SparkEngine(parse_config(doc).spark, spark=request.getfixturevalue("spark"))
    cfg = parse_config(doc)
    first = run_pipeline(cfg, engine=engine)
    assert first.ok and first.tables[0].rows_landed == 2
    folder = tmp_path / "lake/landing/billing/accounts" / f"_ingest_date={DAY}"
    before = footers(folder)
    (old_name,) = before
    assert pa.types.is_integer(before[old_name].field("amount").type)
    assert before[old_name].field("born").type == pa.date32()
    old = pq.read_table(folder / old_name)
    old_rows = pq.ParquetFile(folder / old_name).metadata.num_rows

    (inbox / "accounts_2.csv").write_text(RUN2)
    second = run_pipeline(cfg, engine=engine)
    out = second.tables[0]
    assert second.ok and out.rows_landed == 1 and out.error is None, out.error

    after = footers(folder)
    assert old_name in after and len(after) == 2  # the file keeps its name; nothing added but run 2's
    assert len({s.field("amount").type for s in after.values()}) == 1
    assert len({s.field("born").type for s in after.values()}) == 1
    for name, schema in after.items():
        assert schema.field("amount").type == pa.decimal128(38, 18), name
        assert pa.types.is_timestamp(schema.field("born").type), name
    assert rows(folder) == TRUTH  # 1 → 1 (decimal, exactly), dates → midnight
    new = pq.read_table(folder / old_name)
    assert pq.ParquetFile(folder / old_name).metadata.num_rows == old_rows
    for col in old.column_names:
        if col not in ("amount", "born"):
            assert new.column(col).equals(old.column(col)), col
    state = StateStore(cfg.lake_root, "p").read("billing", "accounts")
    assert state is not None and state.retype == ()  # done: nothing left for the next run

    # a third run on the same day changes no type: nothing is rewritten
    mtime = (folder / old_name).stat().st_mtime_ns
    (inbox / "accounts_3.csv").write_text("id,amount,born,updated_at\n4,7,2026-01-04,2026-01-03 10:00:00\n")
    third = run_pipeline(cfg, engine=engine)
    assert third.ok and third.tables[0].rows_landed == 1
    assert (folder / old_name).stat().st_mtime_ns == mtime
    assert {s.field("amount").type for s in footers(folder).values()} == {pa.decimal128(38, 18)}


def test_retype_is_idempotent_and_refuses_lossy_casts(tmp_path):
    folder = tmp_path / "t" / f"_ingest_date={DAY}"
    folder.mkdir(parents=True)
    big = 2**53 + 1  # no double holds it exactly
    pq.write_table(pa.table({"x": pa.array([1, 2]), "y": pa.array([big, 1])}), folder / "part-r1-0.parquet")
    pq.write_table(pa.table({"x": pa.array([1.5]), "y": pa.array([0.5])}), folder / "part-r2-0.parquet")
    pq.write_table(pa.table({"x": pa.array([9])}), folder / "part-orphan-0.parquet")  # not committed
    done = retype_partition(str(tmp_path / "t"), DAY, {"r1", "r2"})
    assert done.rewritten == [str(folder / "part-r1-0.parquet")]
    assert done.refused == {str(folder / "part-r1-0.parquet"): ["y: int64 → double"]}
    r1 = pq.read_table(folder / "part-r1-0.parquet")
    assert r1.schema.field("x").type == pa.float64() and r1.column("x").to_pylist() == [1.0, 2.0]
    assert r1.schema.field("y").type == pa.int64() and r1.column("y").to_pylist() == [big, 1]  # untouched
    assert pq.read_schema(folder / "part-orphan-0.parquet").field("x").type == pa.int64()
    again = retype_partition(str(tmp_path / "t"), DAY, {"r1", "r2"})
    assert again.rewritten == [] and list(again.refused) == [str(folder / "part-r1-0.parquet")]
    assert not list(folder.glob(".*"))


def test_widening_rules():
    assert wider(pa.int64(), pa.decimal128(38, 18)) == pa.decimal128(38, 18)
    assert wider(pa.decimal128(38, 18), pa.float64()) == pa.float64()
    assert wider(pa.date32(), pa.timestamp("us")) == pa.timestamp("us")
    assert wider(pa.date32(), pa.timestamp("us", tz="UTC")) is None  # not a rule of the lake
    assert wider(pa.string(), pa.int64()) is None
    schemas = [pa.schema([("a", pa.int64())]), pa.schema([("a", pa.float64()), ("b", pa.string())])]
    assert partition_types(schemas) == {"a": pa.float64(), "b": pa.string()}


CRASH_DRIVER = """
import sys
from ingestion.config import parse_config
import ingestion.lake.layout, ingestion.engines.duckdb.common, ingestion.run.protocol
import json
for mod in (ingestion.lake.layout, ingestion.engines.duckdb.common, ingestion.run.protocol):
    mod.partition_value = lambda _: sys.argv[2]
report = __import__("ingestion.run.pipeline", fromlist=["x"]).run_pipeline(parse_config(json.loads(sys.argv[1])))
sys.exit(0 if report.ok else 1)
"""


def test_crash_after_the_commit_is_finished_by_the_next_run(tmp_path, same_day):
    import json

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "accounts_1.csv").write_text(RUN1)
    doc = config_doc(str(tmp_path / "lake"), str(inbox))
    cfg = parse_config(doc)
    assert run_pipeline(cfg).ok
    folder = tmp_path / "lake/landing/billing/accounts" / f"_ingest_date={DAY}"
    (old_name,) = footers(folder)

    (inbox / "accounts_2.csv").write_text(RUN2)
    env = {**os.environ, "TIDEMARK_FAULTS": "partition_retyping@accounts=kill"}
    env.pop("TIDEMARK_LAKE", None)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_DRIVER, json.dumps(doc), DAY], env=env, cwd=tmp_path, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    # killed after the commit, before the earlier file was replaced: two types in the partition, and
    # the state names the partition
    state = StateStore(cfg.lake_root, "p").read("billing", "accounts")
    assert state is not None and state.retype == (DAY,) and len(state.committed_runs) == 2
    types = {s.field("amount").type for s in footers(folder).values()}
    assert types == {pa.int64(), pa.decimal128(38, 18)}
    # the interrupted replacement: a hidden file beside the untouched original, which readers skip
    assert [p.name for p in folder.glob(".*.replacing")] == [f".{old_name}.replacing"]

    # the next run, with nothing new to land, takes the dead run's lease and finishes the rewrite
    rerun = run_pipeline(cfg)
    out = rerun.tables[0]
    assert rerun.ok and out.error is None and out.rows_landed == 0, out
    after = footers(folder)
    assert old_name in after and len(after) == 2
    assert {s.field("amount").type for s in after.values()} == {pa.decimal128(38, 18)}
    assert rows(folder) == TRUTH  # nothing lost, nothing twice
    assert not list(folder.glob(".*.replacing"))
    state = StateStore(cfg.lake_root, "p").read("billing", "accounts")
    assert state is not None and state.retype == () and state.lease is None


def test_s3_lake_and_glue_partition_schemas(s3_bucket, moto_endpoint, monkeypatch, tmp_path):
    import boto3

    from ingestion.lake import fs as lakefs

    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    glue, s3 = boto3.client("glue"), boto3.client("s3")
    day = {"value": "2026-03-03"}
    for target in PIN:
        monkeypatch.setattr(target, lambda _: day["value"])
    cfg = parse_config(
        config_doc(f"s3://{s3_bucket}/lake", f"s3://{s3_bucket}/drops", glue_database="landing_{source}")
    )
    # an earlier day, then day D, both integers; then a widening on day D
    s3.put_object(
        Bucket=s3_bucket,
        Key="drops/accounts_0.csv",
        Body=b"id,amount,born,updated_at\n0,5,2025-12-31,2025-12-31 10:00:00\n",
    )
    assert run_pipeline(cfg).tables[0].error is None
    day["value"] = DAY
    s3.put_object(Bucket=s3_bucket, Key="drops/accounts_1.csv", Body=RUN1.encode())
    assert run_pipeline(cfg).tables[0].error is None
    s3.put_object(Bucket=s3_bucket, Key="drops/accounts_2.csv", Body=RUN2.encode())
    second = run_pipeline(cfg)
    assert second.ok and second.tables[0].error is None, second.tables[0].error

    target = f"s3://{s3_bucket}/lake/landing/billing/accounts"

    def part_columns(value: str) -> dict[str, str]:
        p = glue.get_partition(DatabaseName="landing_billing", TableName="accounts", PartitionValues=[value])
        return {c["Name"]: c["Type"] for c in p["Partition"]["StorageDescriptor"]["Columns"]}

    from ingestion.warehouse.glue_catalog import schema_columns

    files = lakefs.glob(target, f"_ingest_date={DAY}/part-*.parquet")
    assert len(files) == 2
    d = part_columns(DAY)
    for f in files:
        footer = dict(schema_columns(lakefs.read_schema(f)))
        assert footer["amount"] == "decimal(38,18)" and footer["born"] == "timestamp", f
        assert {c: d[c] for c in footer} == footer, f  # the partition's schema is its files' schema
    older = part_columns("2026-03-03")
    assert older["amount"] == "bigint" and older["born"] == "date"  # an earlier day keeps its own types
    (old_file,) = lakefs.glob(target, "_ingest_date=2026-03-03/part-*.parquet")
    assert dict(schema_columns(lakefs.read_schema(old_file)))["amount"] == "bigint"
    table = glue.get_table(DatabaseName="landing_billing", Name="accounts")["Table"]
    types = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert types["amount"] == "decimal(38,18)" and types["born"] == "timestamp"
    got = {}
    for f in files:
        for r in lakefs.read_parquet_columns([f], ["id", "amount", "born"]).to_pylist():
            got[r["id"]] = (r["amount"], r["born"])
    assert got == TRUTH


def test_a_failed_replacement_leaves_the_old_object(s3_bucket, tmp_path):
    import boto3

    from ingestion.lake import fs as lakefs

    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="k/part-r-0.parquet", Body=b"old")
    path = f"s3://{s3_bucket}/k/part-r-0.parquet"
    with pytest.raises(RuntimeError), lakefs.replacing(path) as out:
        out.write(b"new, half written")
        raise RuntimeError("cast failed")
    assert s3.get_object(Bucket=s3_bucket, Key="k/part-r-0.parquet")["Body"].read() == b"old"
    with lakefs.replacing(path) as out:
        out.write(b"new")
    assert s3.get_object(Bucket=s3_bucket, Key="k/part-r-0.parquet")["Body"].read() == b"new"
    local = tmp_path / "local"  # the same on a local path: the old file until the block ends well
    local.mkdir()
    (local / "f.parquet").write_bytes(b"old")
    with pytest.raises(RuntimeError), lakefs.replacing(str(local / "f.parquet")) as out:
        out.write(b"new")
        raise RuntimeError("cast failed")
    assert (local / "f.parquet").read_bytes() == b"old" and [p.name for p in local.iterdir()] == ["f.parquet"]


def test_a_failed_retype_keeps_the_commit_and_the_next_run_finishes_it(tmp_path, same_day, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "accounts_1.csv").write_text(RUN1)
    cfg = parse_config(config_doc(str(tmp_path / "lake"), str(inbox)))
    assert run_pipeline(cfg).ok
    folder = tmp_path / "lake/landing/billing/accounts" / f"_ingest_date={DAY}"
    (inbox / "accounts_2.csv").write_text(RUN2)
    monkeypatch.setenv("TIDEMARK_FAULTS", "partition_retyping@accounts=raise")
    failed = run_pipeline(cfg).tables[0]
    # the commit stands (landed, watermark moved); the error is recorded; the state names the partition
    assert failed.status == "landed" and failed.rows_landed == 1
    assert failed.error_class == "InjectedFault" and "fault injected" in (failed.error or "")
    state = StateStore(cfg.lake_root, "p").read("billing", "accounts")
    assert state is not None and state.retype == (DAY,) and state.lease is None
    assert {s.field("amount").type for s in footers(folder).values()} == {pa.int64(), pa.decimal128(38, 18)}
    monkeypatch.delenv("TIDEMARK_FAULTS")
    again = run_pipeline(cfg).tables[0]  # nothing new to land: the pending retype alone takes the lease
    assert again.status == "up_to_date" and again.error is None, again
    assert {s.field("amount").type for s in footers(folder).values()} == {pa.decimal128(38, 18)}
    assert rows(folder) == TRUTH
    state = StateStore(cfg.lake_root, "p").read("billing", "accounts")
    assert state is not None and state.retype == ()
