"""dbt curation end to end, on DuckDB and on PostgreSQL: several ingestion rounds (updates, inserts,
deletes, a new column, older versions arriving late, a revived key); after each `dbt build` every CDC
table equals the source's truth and every snapshot holds the true history."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import parse_config
from ingestion.demo.billing import COLUMNS, KEYS, TABLES, truth, write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import demo_config_doc
from .dbt_support import FastDbt, land_rows, pg_database, postgres_env, read_duckdb, read_postgres, tombstones
from .helpers import DBT, LANDED_NAME, as_source_text

pytestmark = pytest.mark.slow
__all__ = ["pg_database"]  # the fixture, imported for the PostgreSQL run

PIPELINE, SOURCE = "billing_demo", "billing"
DELETES_DAY2 = {"accounts": [5, 6, 7], "customers": [3], "invoices": [10, 11]}
ROUND3_ACCOUNTS = (
    "account_id,account_name,plan_tier,country,created_at,updated_at,segment\n"
    # 5 was deleted on day 2 and comes back with a newer version: revived.
    "5,Revived 5,team,DE,2025-06-01 00:00:00,2026-01-03 10:00:00,smb\n"
    # 1 and 6 arrive as they were long ago: 1 keeps its newer row, 6 stays deleted.
    "1,Stale Name,free,US,2020-01-01 00:00:00,2020-01-01 00:00:00,\n"
    "6,Stale Six,free,US,2020-01-01 00:00:00,2020-01-01 00:00:00,\n"
    "999,New Account,business,FR,2026-01-03 00:00:00,2026-01-03 11:00:00,enterprise\n"
)


class Oracle:
    """The source's true current state, deleted keys, and the state seen after each round."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, str]]] = {t: {} for t in TABLES}
        self.deleted: dict[str, set[int]] = {t: set() for t in TABLES}
        self.rounds: list[dict[str, dict[int, tuple[str, ...]]]] = []

        self.added: dict[str, list[str]] = {t: [] for t in TABLES}  # columns new at the source

    def columns(self, table: str) -> list[str]:
        return COLUMNS[table] + (["segment"] if table == "accounts" else []) + self.added[table]

    def set_day(self, day: int) -> None:
        for table, rows in truth(day).items():
            for key, row in rows.items():
                old = self.rows[table].get(key)
                if old is None or str(row["updated_at"]) >= old["updated_at"]:
                    self.rows[table][key] = {
                        c: "" if row.get(c) is None else str(row[c]) for c in self.columns(table)
                    }

    def upsert(self, table: str, row: dict[str, str]) -> None:
        key = int(row[KEYS[table]])
        old = self.rows[table].get(key)
        if old is None or row["updated_at"] > old["updated_at"]:
            self.rows[table][key] = row
            self.deleted[table].discard(key)

    def delete(self, table: str, keys: list[int]) -> None:
        self.deleted[table] |= set(keys)

    def end_round(self) -> None:
        self.rounds.append(
            {
                t: {
                    k: ("d",) if k in self.deleted[t] else ("v", r["updated_at"])
                    for k, r in self.rows[t].items()
                }
                for t in TABLES
            }
        )


class Backend:
    """Where dbt builds: the embedded DuckDB warehouse, or a PostgreSQL database fed by load-warehouse."""

    def __init__(self, kind: str, tmp: Path, lake: Path, dbname: str | None) -> None:
        self.kind, self.lake, self.dbname = kind, lake, dbname
        self.warehouse = tmp / "wh.duckdb"
        # In-process dbt with one parsed manifest: no interpreter start-up or re-parse per call.
        self.dbt = FastDbt(
            tmp, lake, self.warehouse, postgres_env(dbname or "") if kind == "postgres" else None
        )
        self.schema = "tidemark" if kind == "postgres" else "main"

    def load(self, cfg) -> None:  # type: ignore[no-untyped-def]
        if self.kind != "postgres":
            return  # DuckDB reads the lake directly
        from ingestion.warehouse.loader import PostgresLoader, load_warehouse

        loader = PostgresLoader(f"host=127.0.0.1 user=postgres dbname={self.dbname}")
        try:
            load_warehouse(cfg, loader)
            # Idempotent per run id: a second load finds nothing new.
            assert not any(r.runs for r in load_warehouse(cfg, loader))
        finally:
            loader.close()

    def rows(self, relation: str) -> list[dict[str, Any]]:
        rel = f"{self.schema}.{relation}"
        return (
            read_postgres(self.dbname, rel) if self.kind == "postgres" else read_duckdb(self.warehouse, rel)
        )


def assert_cdc_matches(backend: Backend, oracle: Oracle) -> None:
    for table in TABLES:
        key = KEYS[table]
        got = {r[key]: r for r in backend.rows(table)}
        assert set(got) == set(oracle.rows[table]), f"{table}: keys differ"
        deleted = {k for k, r in got.items() if r["_is_deleted"]}
        assert deleted == oracle.deleted[table], f"{table}: deleted keys"
        assert all((r["_deleted_at"] is not None) == r["_is_deleted"] for r in got.values()), table
        for k, want in oracle.rows[table].items():
            have = {c: as_source_text(got[k][LANDED_NAME.get(c, c)]) for c in oracle.columns(table)}
            assert have == want, (table, k)
        live = {r[key] for r in backend.rows(f"vw_{table}")}
        assert live == set(oracle.rows[table]) - oracle.deleted[table], f"vw_{table} shows deleted rows"


def assert_snapshots_match(backend: Backend, oracle: Oracle) -> None:
    """Each key's snapshot rows are the distinct versions and deletes seen at the end of each round."""
    for table in TABLES:
        key = KEYS[table]
        history: dict[int, list[tuple[str, ...]]] = {}
        for seen in oracle.rounds:
            for k, state in seen[table].items():
                states = history.setdefault(k, [])
                if not states or states[-1] != state:
                    states.append(state)
        snap = backend.rows(f"{table}_snapshot")
        got: dict[int, Counter] = {}
        current: dict[int, tuple[str, ...]] = {}
        for r in snap:
            state = ("d",) if str(r["dbt_is_deleted"]) == "True" else ("v", as_source_text(r["updated_at"]))
            got.setdefault(r[key], Counter())[state] += 1
            if r["dbt_valid_to"] is None:
                assert r[key] not in current, f"{table} {r[key]}: two current snapshot rows"
                current[r[key]] = state
        assert {k: Counter(v) for k, v in history.items()} == got, f"{table}_snapshot history"
        assert current == {k: v[-1] for k, v in history.items()}, f"{table}_snapshot current rows"


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, tmp_path: Path, monkeypatch) -> Backend:
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    dbname = request.getfixturevalue("pg_database") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, tmp_path / "lake", dbname)


def test_cdc_tables_and_snapshots_follow_the_source(backend: Backend, tmp_path: Path, caplog) -> None:
    inbox, lake = tmp_path / "inbox", backend.lake
    oracle = Oracle()
    doc = demo_config_doc(inbox, lake)

    def ingest(**options: Any) -> None:
        d = demo_config_doc(inbox, lake)
        for t in d["sources"][0]["tables"]:
            t.update(options)
        report = run_pipeline(parse_config(d))
        assert report.ok, [t.error for t in report.failed]

    def build() -> None:
        backend.load(parse_config(doc))
        backend.dbt("build")  # raises unless every model, snapshot and test succeeded
        oracle.end_round()
        assert_cdc_matches(backend, oracle)
        assert_snapshots_match(backend, oracle)

    # Round 1: the initial extract.
    list(write_day(1, inbox))
    ingest()
    oracle.set_day(1)
    build()

    # Round 2: updates, inserts, a key changed twice, a new column; then delete detection's tombstones.
    list(write_day(2, inbox))
    ingest()
    oracle.set_day(2)
    for table, keys in DELETES_DAY2.items():
        land_rows(lake, PIPELINE, SOURCE, table, tombstones(KEYS[table], keys))
        oracle.delete(table, keys)
    build()

    # Round 3: a revived key, older versions arriving late (one of a deleted key), an insert, a delete.
    (inbox / SOURCE / "accounts_2026-01-03.csv").write_text(ROUND3_ACCOUNTS)
    ingest(lookback="3650d")  # let the stale rows through ingestion: dbt's guard must stop them
    header, *lines = ROUND3_ACCOUNTS.strip().splitlines()
    for line in lines:
        oracle.upsert("accounts", dict(zip(header.split(","), line.split(","), strict=True)))
    land_rows(lake, PIPELINE, SOURCE, "customers", tombstones("customer_id", [4]))
    oracle.delete("customers", [4])
    build()
    assert oracle.rows["accounts"][5]["account_name"] == "Revived 5" and 5 not in oracle.deleted["accounts"]

    # Nothing new: CDC tables and snapshots don't change.
    before = {t: sorted(map(str, backend.rows(f"{t}_snapshot"))) for t in TABLES}
    backend.dbt("build", "--select", "tag:cdc")
    backend.dbt("snapshot")
    assert {t: sorted(map(str, backend.rows(f"{t}_snapshot"))) for t in TABLES} == before
    assert_cdc_matches(backend, oracle)
    if backend.kind == "duckdb":
        assert_docs_describe_every_column(backend)

    # Round 4, no edit of any model: subscriptions gain `channel` and lose `product` at the source. The
    # new column reaches staging, the CDC table, the view and the snapshot; the dropped one stays,
    # empty (NULL) in the versions landed after the drop, its older values kept.
    key = min(oracle.rows["subscriptions"])
    old_row = oracle.rows["subscriptions"][key]
    oracle.added["subscriptions"].append("channel")
    for row in oracle.rows["subscriptions"].values():
        row["channel"] = ""
    header = [c for c in COLUMNS["subscriptions"] if c != "product"] + ["channel"]
    changed = {**old_row, "status": "cancelled", "updated_at": "2026-01-04 09:00:00", "channel": "web"}
    fresh = {**changed, "subscription_id": "99999", "channel": "partner"}
    lines = [",".join(header)] + [",".join(r[c] for c in header) for r in (changed, fresh)]
    (inbox / SOURCE / "subscriptions_2026-01-04.csv").write_text("\n".join(lines) + "\n")
    caplog.clear()
    ingest()
    assert any("columns gone from the source" in r.getMessage() for r in caplog.records), caplog.text
    for row in (changed, fresh):
        oracle.upsert("subscriptions", {**row, "product": ""})
    build()
    snap = {
        r["subscription_id"]: r["channel"]
        for r in backend.rows("subscriptions_snapshot")
        if r["dbt_valid_to"] is None
    }
    assert snap[key] == "web" and snap[99999] == "partner"

    # Round 5: a file brings a time of day in `started_on`: the lake widens date → timestamp, and so do
    # the CDC table, the view and the snapshot (issue 16) — 15:30 is not truncated to the date.
    for row in oracle.rows["subscriptions"].values():
        row["started_on"] = f"{row['started_on']} 00:00:00" if row["started_on"] else ""
    later = {**changed, "updated_at": "2026-01-05 09:00:00", "started_on": "2026-01-05 15:30:00"}
    lines = [",".join(header), ",".join(later[c] for c in header)]
    (inbox / SOURCE / "subscriptions_2026-01-05.csv").write_text("\n".join(lines) + "\n")
    ingest()
    oracle.upsert("subscriptions", {**later, "product": ""})
    build()
    snap_rows = [r for r in backend.rows("subscriptions_snapshot") if r["dbt_valid_to"] is None]
    current = next(r for r in snap_rows if r["subscription_id"] == key)
    assert as_source_text(current["started_on"]) == "2026-01-05 15:30:00"

    # Round 6: a rename at the source is a drop and an add, with no model edit: `channel` becomes
    # `sales_channel`. The old name keeps its history, NULL in versions landed after the rename; the new
    # name arrives with its values in the CDC table, the view and the snapshot.
    oracle.added["subscriptions"].append("sales_channel")
    for row in oracle.rows["subscriptions"].values():
        row["sales_channel"] = ""
    renamed_header = [c for c in header if c != "channel"] + ["sales_channel"]
    renamed = {**later, "updated_at": "2026-01-06 09:00:00", "sales_channel": "web"}
    lines = [",".join(renamed_header), ",".join(renamed[c] for c in renamed_header)]
    (inbox / SOURCE / "subscriptions_2026-01-06.csv").write_text("\n".join(lines) + "\n")
    ingest()
    oracle.upsert("subscriptions", {**renamed, "product": "", "channel": ""})
    build()
    snap_rows = [r for r in backend.rows("subscriptions_snapshot") if r["dbt_valid_to"] is None]
    current = next(r for r in snap_rows if r["subscription_id"] == key)
    assert (current["sales_channel"], current["channel"]) == ("web", None)


def assert_docs_describe_every_column(backend: Backend) -> None:
    """`dbt docs generate` works (no network needed) and every model, snapshot and source column the
    warehouse actually has is described."""
    import json

    backend.dbt("docs", "generate")
    target = backend.dbt.target
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    assert (target / "index.html").exists()
    missing = []
    for kind in ("nodes", "sources"):
        for uid, entry in catalog[kind].items():
            node = manifest[kind][uid]
            if not node.get("description"):
                missing.append(uid)
            described = {n.lower() for n, c in node["columns"].items() if c.get("description")}
            missing += [f"{uid}.{c}" for c in entry["columns"] if c.lower() not in described]
    assert len(catalog["nodes"]) >= 17, sorted(
        catalog["nodes"]
    )  # 4 staging, 4 cdc, 4 views, 1 mart, 4 snapshots
    assert not missing, missing
