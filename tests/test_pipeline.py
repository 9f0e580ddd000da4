"""A run end to end on the DuckDB engine: land, skip what is landed, land changes, isolate failures."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from ingestion.demo.billing import truth, write_day
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

from .conftest import DEMO_TABLES, demo_config_doc


def landed(lake: Path, table: str) -> list[dict]:
    con = duckdb.connect()
    rel = con.sql(
        f"select * from read_parquet('{lake}/landing/billing/{table}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def test_demo_days_land_incrementally(tmp_path, demo_inbox, write_config):
    lake = tmp_path / "lake"
    cfg = write_config(demo_config_doc(demo_inbox, lake))

    first = run_pipeline(cfg)
    assert first.ok
    assert {t.table: t.rows_landed for t in first.tables} == {t: len(rows) for t, rows in truth(1).items()}
    accounts = landed(lake, "accounts")
    assert {r["_op"] for r in accounts} == {"u"}
    assert {r["_run_id"] for r in accounts} == {first.run_id}
    assert {r["_source_file"] for r in accounts} == {"accounts_2026-01-01.csv"}
    files = list((lake / "landing/billing/accounts").glob("_ingest_date=*/part-*.parquet"))
    assert files and all(p.name.startswith(f"part-{first.run_id}-") for p in files)

    state = StateStore(str(lake), "billing_demo").read("billing", "accounts")
    assert state is not None and state.lease is None
    assert state.committed_runs == (first.run_id,)
    assert (state.watermark.type, state.watermark.timezone) == ("timestamp", "UTC")
    assert (
        state.watermark.value
        == max(str(r["updated_at"]) for r in truth(1)["accounts"].values()).replace(" ", "T")
        + ".000000+00:00"
    )
    assert set(state.files) == {"accounts_2026-01-01.csv"}

    again = run_pipeline(cfg)
    assert [t.status for t in again.tables] == ["up_to_date"] * 4
    assert len(landed(lake, "accounts")) == len(accounts)

    list(write_day(2, demo_inbox))
    second = run_pipeline(cfg)
    by_table = {t.table: t for t in second.tables}
    assert all(t.status == "landed" and t.files == 1 for t in second.tables)
    # day 2 holds one customer twice: the batch keeps the later version only
    assert by_table["customers"].rows_deduplicated == 1
    twice = [r for r in landed(lake, "customers") if r["last_name"] == "Twice-Updated"]
    assert len(twice) == 1 and twice[0]["_run_id"] == second.run_id
    # the new column lands; older files simply lack it
    segments = {
        r["account_id"]: r["segment"] for r in landed(lake, "accounts") if r["_run_id"] == second.run_id
    }
    assert segments and all(segments.values())
    # every key of the source is in the lake
    for table, key in DEMO_TABLES.items():
        assert {r[key] for r in landed(lake, table)} == set(truth(2)[table])


def test_types_are_inferred_from_all_rows(tmp_path, write_config):
    inbox = tmp_path / "in"
    inbox.mkdir()
    rows = ["id,amount,flag,day,at,label"] + [
        f"{i},{i},true,2026-01-0{1 + i % 9},2026-01-01 10:00:0{i % 10},x" for i in range(30000)
    ]
    rows.append("30000,1.5,false,2026-02-30,2026-01-01T10:00:00,y")  # past any sniffer's sample
    (inbox / "t_1.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(
        {
            "pipeline": "p",
            "lake": {"root": str(tmp_path / "lake")},
            "sources": [
                {
                    "name": "s",
                    "kind": "csv",
                    "path": str(inbox),
                    "tables": [{"name": "t", "primary_key": "id", "cursor": "at", "cursor_timezone": "UTC"}],
                }
            ],
        }
    )
    report = run_pipeline(cfg)
    assert report.ok, report.tables[0].error
    state = StateStore(str(tmp_path / "lake"), "p").read("s", "t")
    assert state.columns == {
        "id": "bigint",
        "amount": "decimal",  # issue 4: doubles land as decimal(38,18)
        "flag": "boolean",
        "day": "string",
        "at": "timestamp",
        "label": "string",
    }


def test_a_failing_table_does_not_stop_the_others(tmp_path, demo_inbox, write_config):
    doc = demo_config_doc(demo_inbox, tmp_path / "lake")
    doc["sources"][0]["tables"][0]["primary_key"] = ["no_such_column"]
    cfg = write_config(doc)
    report = run_pipeline(cfg)
    assert not report.ok
    failed, *others = report.tables
    assert failed.status == "failed" and "no_such_column" in failed.error
    assert [t.status for t in others] == ["landed"] * 3
    # nothing of the failed table is left in the lake, and its state was not written
    assert not list((tmp_path / "lake/landing/billing/accounts").glob("**/*.parquet"))
    state = StateStore(str(tmp_path / "lake"), "billing_demo").read("billing", "accounts")
    assert state is not None and not state.has_data and state.lease is None


def test_missing_inbox_is_a_clear_table_failure(tmp_path, write_config):
    doc = demo_config_doc(tmp_path / "nowhere", tmp_path / "lake")
    report = run_pipeline(write_config(doc))
    assert all(t.status == "failed" for t in report.tables)
    assert "does not exist" in report.tables[0].error


def test_dry_run_writes_nothing(tmp_path, demo_inbox, write_config):
    cfg = write_config(demo_config_doc(demo_inbox, tmp_path / "lake"))
    report = run_pipeline(cfg, dry_run=True)
    assert [(t.status, t.files) for t in report.tables] == [("planned", 1)] * 4
    assert not (tmp_path / "lake/landing").exists()


def test_table_selection(tmp_path, demo_inbox, write_config):
    cfg = write_config(demo_config_doc(demo_inbox, tmp_path / "lake"))
    report = run_pipeline(cfg, tables=["billing.accounts", "invoices"])
    assert [t.table for t in report.tables] == ["accounts", "invoices"]
    from ingestion.errors import ConfigError

    with pytest.raises(ConfigError, match="no table named nope"):
        run_pipeline(cfg, tables=["nope"])


def test_run_log_is_json_lines(tmp_path, demo_inbox, write_config):
    from ingestion.observe.logs import setup_logging

    cfg = write_config(demo_config_doc(demo_inbox, tmp_path / "lake"))
    path = setup_logging("r-test", cfg.lake_root)
    run_pipeline(cfg, run_id="r-test")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events[0]["event"] == "run started" and events[-1]["event"] == "run finished"
    tables = [e for e in events if e["event"] == "table landed"]
    assert len(tables) == 4 and all(e["run_id"] == "r-test" and e["rows_landed"] > 0 for e in tables)
