"""A table added to ingestion.yml and scaffolded builds and tests with no hand edits, on DuckDB and
PostgreSQL; its composite key merges, its columns widen (varchar, integers, decimals, dates, times) and new
columns flow through with no model edit; a change no ALTER can make fails the model with what to run."""

from __future__ import annotations

import shutil
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingestion.config import parse_config
from ingestion.dbt_gen import generate_sources, scaffold
from ingestion.errors import SchemaError

from .conftest import demo_config_doc
from .dbt_support import (
    FastDbt,
    column_types_postgres,
    land_rows,
    pg_database,
    postgres_env,
    read_duckdb,
    read_postgres,
)
from .helpers import DBT, REPO

pytestmark = pytest.mark.slow
__all__ = ["pg_database"]

KEY = ("account_id", "metric")


def usage(rows: list[tuple[int, str, int, str, str]], qty: pa.DataType, op: str = "u") -> pa.Table:
    """Rows of the new `usage` table (key: account_id + metric) with `quantity` of the given width."""
    return pa.table(
        {
            "account_id": pa.array([r[0] for r in rows], pa.int64()),
            "metric": pa.array([r[1] for r in rows], pa.string()),
            "quantity": pa.array([r[2] for r in rows], qty),
            "note": pa.array([r[3] for r in rows], pa.string()),
            "updated_at": pa.array([datetime.fromisoformat(r[4]) for r in rows], pa.timestamp("us")),
            "_op": pa.array([op] * len(rows), pa.string()),
            "_source_file": pa.array([None] * len(rows), pa.string()),
        }
    )


def copy_project(dest: Path) -> Path:
    """The repository's dbt project (not its data) in a scratch folder."""
    dest.mkdir(parents=True)
    for name in ("dbt_project.yml", "macros", "models", "snapshots", "analyses"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    (dest / "tests" / "dbt").mkdir(parents=True)
    return dest


@pytest.fixture(params=["duckdb", "postgres"])
def target(request) -> tuple[str, str | None]:
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    return request.param, request.getfixturevalue("pg_database") if request.param == "postgres" else None


def test_a_scaffolded_table_builds_merges_and_widens(tmp_path: Path, target, monkeypatch) -> None:
    kind, dbname = target
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    project = copy_project(tmp_path / "project")
    lake = tmp_path / "lake"
    doc = demo_config_doc(tmp_path / "inbox", lake)
    doc["sources"][0]["tables"].append(
        {"name": "usage", "primary_key": list(KEY), "cursor": "updated_at", "cursor_timezone": "UTC"}
    )
    cfg = parse_config(doc)
    schema = "tidemark" if kind == "postgres" else "main"
    dbt = None
    types = {"account_id": "bigint", "metric": "string", "quantity": "smallint", "note": "string"}
    types["updated_at"] = "timestamp"

    def build() -> dict[tuple[int, str], dict[str, Any]]:
        if kind == "postgres":
            from ingestion.warehouse.loader import PostgresLoader, load_warehouse

            loader = PostgresLoader(f"host=127.0.0.1 user=postgres dbname={dbname}")
            try:
                load_warehouse(cfg, loader, [("billing", "usage")])
            finally:
                loader.close()
        dbt("build", "--select", "stg_billing__usage+")  # raises unless models and tests succeeded
        return {(r["account_id"], r["metric"]): r for r in rows("usage")}

    def rows(relation: str) -> list[dict[str, Any]]:
        if kind == "postgres":
            return read_postgres(dbname, f"{schema}.{relation}")
        return read_duckdb(tmp_path / "wh.duckdb", f"{schema}.{relation}")

    # Round 1: the table lands, is scaffolded, builds.
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        usage(
            [
                (1, "api_calls", 10, "short", "2026-01-01 10:00:00"),
                (1, "storage_gb", 3, "s", "2026-01-01 10:00:00"),
                (2, "api_calls", 7, "x", "2026-01-01 11:00:00"),
            ],
            pa.int16(),
        ),
        columns=types,
    )
    sources_path, sources_text, specs = generate_sources(cfg, project)
    sources_path.write_text(sources_text)
    written = scaffold(specs, sources_text, project)
    # New SQL files, and entries added to each folder's existing _billing__models.yml.
    assert {(str(p.relative_to(project)), s) for t, p, s in written if t == "billing.usage"} == {
        ("models/staging/billing/stg_billing__usage.sql", "written"),
        ("models/cdc/billing/usage.sql", "written"),
        ("models/views/billing/vw_usage.sql", "written"),
        ("models/staging/billing/_billing__models.yml", "added"),
        ("models/cdc/billing/_billing__models.yml", "added"),
        ("models/views/billing/_billing__models.yml", "added"),
    }
    assert {s for t, p, s in written if t != "billing.usage"} == {"has models"}
    # Scaffolding again never overwrites an edited file.
    edited = project / "models/cdc/billing/_billing__models.yml"
    edited.write_text(edited.read_text().replace("Current state of billing usage", "Edited: current state"))
    shutil.move(project / "models/cdc/billing/usage.sql", tmp_path / "usage.sql")
    again = scaffold(specs, sources_text, project, ["usage"])
    assert again == [("billing.usage", project / "models", "has models")]
    shutil.move(tmp_path / "usage.sql", project / "models/cdc/billing/usage.sql")
    assert "Edited: current state" in edited.read_text()

    # dbt parses the project once, now that the scaffolded files exist.
    env = postgres_env(dbname) if kind == "postgres" else None
    dbt = FastDbt(tmp_path, lake, tmp_path / "wh.duckdb", env, project=project)
    got = build()
    assert {k: r["quantity"] for k, r in got.items()} == {
        (1, "api_calls"): 10,
        (1, "storage_gb"): 3,
        (2, "api_calls"): 7,
    }

    # Round 2: quantity arrives as INTEGER with a value beyond SMALLINT, notes get longer.
    long_note = "a note well beyond thirty-two bytes, so varchar widens"
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        usage([(1, "api_calls", 40_000, long_note, "2026-01-02 10:00:00")], pa.int32()),
        columns={"quantity": "integer"},
    )
    got = build()
    assert got[(1, "api_calls")]["quantity"] == 40_000 and got[(1, "api_calls")]["note"] == long_note

    # Round 3: BIGINT; an older version of one key arrives late; a tombstone on the composite key.
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        usage(
            [
                (2, "api_calls", 5_000_000_000, "big", "2026-01-03 10:00:00"),
                (1, "api_calls", 1, "stale", "2025-12-01 00:00:00"),
            ],
            pa.int64(),
        ),
        columns={"quantity": "bigint"},
    )
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        pa.table(
            {
                "account_id": pa.array([1], pa.int64()),
                "metric": ["storage_gb"],
                "_op": ["d"],
                "_source_file": pa.array([None], pa.string()),
            }
        ),
    )
    got = build()
    assert got[(2, "api_calls")]["quantity"] == 5_000_000_000
    assert got[(1, "api_calls")]["quantity"] == 40_000  # the stale version didn't win
    assert {k for k, r in got.items() if r["_is_deleted"]} == {(1, "storage_gb")}
    # The scaffolded consumer view: the current rows without the deleted key.
    live = {(r["account_id"], r["metric"]): r["quantity"] for r in rows("vw_usage")}
    assert live == {(1, "api_calls"): 40_000, (2, "api_calls"): 5_000_000_000}
    if kind == "postgres":
        cdc = column_types_postgres(dbname, schema, "usage")
        assert cdc["quantity"] == "bigint" and cdc["note"] == "character varying(64)"
    else:
        import duckdb

        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        try:
            col_types = dict(
                con.sql(
                    f"select column_name, data_type from information_schema.columns "
                    f"where table_schema = '{schema}' and table_name = 'usage'"
                ).fetchall()
            )
        finally:
            con.close()
        assert col_types["quantity"] == "BIGINT"

    # Round 4, no edit of any model: a new source column (`channel`) and a dropped one (`note`) arrive.
    # The new column flows through staging, the CDC table and the view; the dropped one stays, NULL in
    # the versions landed after the drop.
    newer = usage([(2, "api_calls", 6, "", "2026-01-04 10:00:00")], pa.int64()).drop_columns(["note"])
    newer = newer.add_column(2, "channel", pa.array(["web"], pa.string()))
    land_rows(lake, "billing_demo", "billing", "usage", newer, columns={"channel": "string"})
    got = build()
    assert got[(2, "api_calls")]["channel"] == "web" and got[(2, "api_calls")]["note"] is None
    assert got[(2, "api_calls")]["quantity"] == 6
    assert got[(1, "api_calls")]["channel"] is None and got[(1, "api_calls")]["note"] == long_note
    live = {(r["account_id"], r["metric"]): (r["channel"], r["note"]) for r in rows("vw_usage")}
    assert live == {(1, "api_calls"): (None, long_note), (2, "api_calls"): ("web", None)}
    assert [r["channel"] for r in rows("stg_billing__usage") if r["quantity"] == 6] == ["web"]

    # Rounds 5 and 6: every widening the lake can do reaches the CDC table exactly (issue 16):
    # bigint → decimal(18,4), decimal(12,2) → decimal(18,4), decimal → double, date → timestamp,
    # timestamp → timestamptz. Values compared at full precision (Decimal, microseconds).
    def typed(values: dict[str, tuple[Any, pa.DataType]], when: str) -> pa.Table:
        base = usage([(3, "api_calls", 0, "w", when)], pa.int64()).drop_columns(["quantity", "note"])
        for name, (value, kind) in values.items():
            base = base.append_column(name, pa.array([value], kind))
        return base

    first = {
        "quantity": (Decimal("12.3456"), pa.decimal128(18, 4)),
        "price": (Decimal("1.25"), pa.decimal128(12, 2)),
        "ratio": (Decimal("0.50"), pa.decimal128(12, 2)),
        "day": (date(2026, 1, 1), pa.date32()),
        "seen": (datetime(2026, 1, 1, 10, 0, 0, 123456), pa.timestamp("us")),
    }
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        typed(first, "2026-01-05 10:00:00"),
        columns={
            "quantity": "decimal(18,4)",
            "price": "decimal(12,2)",
            "ratio": "decimal(12,2)",
            "day": "date",
            "seen": "timestamp",
        },
    )
    got = build()
    row = got[(3, "api_calls")]
    assert (row["quantity"], row["price"], row["day"]) == (
        Decimal("12.3456"),
        Decimal("1.25"),
        date(2026, 1, 1),
    )
    assert got[(2, "api_calls")]["quantity"] == 6  # the bigint values kept exactly
    second = {
        "quantity": (Decimal("99999999999999.9999"), pa.decimal128(18, 4)),
        "price": (Decimal("12345678901234.5678"), pa.decimal128(18, 4)),
        "ratio": (1.0e-300, pa.float64()),
        "day": (datetime(2026, 1, 1, 15, 30, 0), pa.timestamp("us")),
        "seen": (datetime(2026, 1, 2, 10, 0, 0, 654321, tzinfo=timezone.utc), pa.timestamp("us", tz="UTC")),
    }
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        typed(second, "2026-01-06 10:00:00"),
        columns={"price": "decimal(18,4)", "ratio": "double", "day": "timestamp", "seen": "timestamptz"},
    )
    got = build()
    row = got[(3, "api_calls")]
    assert row["quantity"] == Decimal("99999999999999.9999")
    assert row["price"] == Decimal("12345678901234.5678")
    assert row["ratio"] == 1.0e-300
    assert row["day"].replace(tzinfo=None) == datetime(2026, 1, 1, 15, 30, 0)
    assert row["seen"].astimezone(timezone.utc) == datetime(2026, 1, 2, 10, 0, 0, 654321, tzinfo=timezone.utc)
    assert got[(2, "api_calls")]["quantity"] == 6 and got[(1, "api_calls")]["quantity"] == 40_000

    # Round 7: text arrives in the decimal column: no ALTER can hold it without failing or changing
    # values, so the CDC model fails and says what to run; the curated rows stay as they were.
    land_rows(
        lake,
        "billing_demo",
        "billing",
        "usage",
        typed({"price": ("n/a", pa.string())}, "2026-01-07 10:00:00"),
        columns={"price": "string"},
    )
    # (On PostgreSQL, load-warehouse refuses the raw table's change first, with its own hint.)
    refused = (
        (SchemaError, "cannot widen")
        if kind == "postgres"
        else (AssertionError, "full-refresh --select usage")
    )
    with pytest.raises(refused[0], match=refused[1]):
        build()
    assert rows("usage") and {(r["account_id"], r["metric"]): r for r in rows("usage")} == got


def test_scaffold_writes_the_consumer_view_and_follows_the_yaml_convention(tmp_path: Path) -> None:
    """The view models/views/<source>/vw_<table>.sql hides deleted rows, like the hand-written ones; each
    model's entry goes into its folder's `_<source>__models.yml` (created or appended to, never rewritten),
    and shared columns are described by the docs blocks of models/docs.md."""
    import yaml

    project = copy_project(tmp_path / "project")
    doc = demo_config_doc(tmp_path / "inbox", tmp_path / "lake")
    doc["sources"][0]["tables"].append({"name": "usage", "primary_key": list(KEY), "cursor": "updated_at"})
    doc["sources"].append(
        {
            "name": "crm",
            "kind": "csv",
            "path": str(tmp_path / "inbox" / "crm"),
            "tables": [{"name": "contacts", "primary_key": ["contact_id"], "cursor": "updated_at"}],
        }
    )
    from ingestion.dbt_gen import generate_source_files

    files, specs = generate_source_files(parse_config(doc), project, use_state=False)
    sources_text = "\n".join(f.text for f in files if f.path.name == "_billing__sources.yml")
    views_yml = project / "models/views/billing/_billing__models.yml"
    before = views_yml.read_text()
    scaffold(specs, sources_text, project, ["usage", "crm.contacts"])

    view_sql = (project / "models/views/billing/vw_usage.sql").read_text()
    assert "ref('usage')" in view_sql and "where not _is_deleted" in view_sql
    assert view_sql.index("'account_id',") < view_sql.index("'metric',") < view_sql.index("exclude=")
    assert view_sql.count("'metric'") == 1  # each column listed once
    # The existing file keeps its text; the new entry follows it.
    after = views_yml.read_text()
    assert after.startswith(before.rstrip("\n")) and len(after) > len(before)
    views = {m["name"]: m for m in yaml.safe_load(after)["models"]}
    assert list(views)[-1] == "vw_usage" and "vw_accounts" in views
    usage_view = views["vw_usage"]
    assert usage_view["data_tests"] == [{"unique_key": {"columns": list(KEY)}}]
    cols = {c["name"]: c["description"] for c in usage_view["columns"]}
    assert cols["_run_id"] == "{{ doc('_run_id_current') }}" and cols["_op"] == "{{ doc('_op') }}"
    cdc = yaml.safe_load((project / "models/cdc/billing/_billing__models.yml").read_text())["models"]
    cdc_cols = {c["name"]: c["description"] for c in cdc[-1]["columns"]}
    assert cdc[-1]["name"] == "usage" and cdc_cols["_is_deleted"] == "{{ doc('_is_deleted') }}"
    stg = yaml.safe_load((project / "models/staging/billing/_billing__models.yml").read_text())["models"]
    assert stg[-1]["name"] == "stg_billing__usage"
    assert {c["name"]: c["description"] for c in stg[-1]["columns"]}["_run_id"] == "{{ doc('_run_id') }}"
    # A source without models yet: its folders' YAML files are created, one per folder.
    for folder, model in (("staging", "stg_crm__contacts"), ("cdc", "contacts"), ("views", "vw_contacts")):
        created = yaml.safe_load((project / f"models/{folder}/crm/_crm__models.yml").read_text())
        assert created["version"] == 2 and [m["name"] for m in created["models"]] == [model]
        assert (project / f"models/{folder}/crm/{model}.sql").exists()
    # No per-model YAML files.
    assert not list((project / "models").rglob("usage.yml")) and not list(
        (project / "models").rglob("vw_*.yml")
    )


def test_a_model_entry_goes_into_the_models_list_whatever_its_indentation() -> None:
    import yaml

    from ingestion.dbt_gen import add_model_entry

    model = {"name": "new_model", "description": "New."}
    indentless = "version: 2\nmodels:\n- name: a  # kept\n  description: A.\n\nunit_tests:\n- name: t\n"
    out = add_model_entry(indentless, model)
    assert out.startswith("version: 2\nmodels:\n- name: a  # kept\n  description: A.\n- name: new_model\n")
    doc = yaml.safe_load(out)
    assert [m["name"] for m in doc["models"]] == ["a", "new_model"] and doc["unit_tests"] == [{"name": "t"}]
    indented = "version: 2\n\nmodels:\n  - name: a\n    description: A."
    assert add_model_entry(indented, model).endswith(
        "    description: A.\n  - name: new_model\n    description: New.\n"
    )
    assert yaml.safe_load(add_model_entry(None, model)) == {"version": 2, "models": [model]}


@pytest.mark.parametrize("first_drop", ["header_only", "zero_bytes"])
def test_a_csv_table_empty_from_the_start_builds_empty_then_takes_its_landed_types(
    tmp_path: Path, target, first_drop: str, monkeypatch
) -> None:
    """Issue 21: a CSV table whose files hold no rows yet builds (an empty curated table and view, not an
    error), and when rows arrive the curated table takes their types and values with no model edit."""
    from ingestion.run.pipeline import run_pipeline

    kind, dbname = target
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    project = copy_project(tmp_path / "project")
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    doc = demo_config_doc(inbox, lake)
    doc["sources"][0]["tables"] = [
        {
            "name": "usage",
            "pattern": "usage_*.csv",
            "primary_key": list(KEY),
            "cursor": "updated_at",
            "cursor_timezone": "UTC",
        }
    ]
    cfg = parse_config(doc)
    (inbox / "billing").mkdir(parents=True)
    header = "account_id,metric,quantity,updated_at\n"
    (inbox / "billing" / "usage_1.csv").write_text(header if first_drop == "header_only" else "")
    report = run_pipeline(cfg)
    assert report.ok and report.tables[0].rows_landed == 0, [(o.name, o.error) for o in report.tables]
    sources_path, sources_text, specs = generate_sources(cfg, project)
    sources_path.write_text(sources_text)
    scaffold(specs, sources_text, project, ["usage"])
    schema = "tidemark" if kind == "postgres" else "main"
    dbt = FastDbt(
        tmp_path,
        lake,
        tmp_path / "wh.duckdb",
        postgres_env(dbname) if kind == "postgres" else None,
        project=project,
    )

    def build() -> None:
        if kind == "postgres":
            from ingestion.warehouse.loader import PostgresLoader, load_warehouse

            loader = PostgresLoader(f"host=127.0.0.1 user=postgres dbname={dbname}")
            try:
                load_warehouse(cfg, loader, [("billing", "usage")])
            finally:
                loader.close()
        dbt("build", "--select", "stg_billing__usage+")  # raises unless models and tests succeeded

    def rows(relation: str) -> list[dict[str, Any]]:
        if kind == "postgres":
            return read_postgres(dbname, f"{schema}.{relation}")
        return read_duckdb(tmp_path / "wh.duckdb", f"{schema}.{relation}")

    build()
    assert rows("usage") == [] and rows("vw_usage") == [] and rows("stg_billing__usage") == []
    build()  # an incremental run over an empty table and an empty lake
    assert rows("usage") == []

    (inbox / "billing" / "usage_2.csv").write_text(
        header + "1,api_calls,10,2026-01-01 10:00:00\n2,storage_gb,3,2026-01-01 11:00:00\n"
    )
    assert run_pipeline(cfg).ok
    build()
    got = {(r["account_id"], r["metric"]): r for r in rows("usage")}
    assert set(got) == {(1, "api_calls"), (2, "storage_gb")}
    assert {k: r["quantity"] for k, r in got.items()} == {(1, "api_calls"): 10, (2, "storage_gb"): 3}
    assert got[(1, "api_calls")]["updated_at"].replace(tzinfo=None) == datetime(2026, 1, 1, 10)
    assert not any(r["_is_deleted"] for r in got.values())
    assert {(r["account_id"], r["metric"]) for r in rows("vw_usage")} == set(got)
    if kind == "postgres":
        types = column_types_postgres(dbname, schema, "usage")
        assert types["account_id"] == "bigint" and types["updated_at"].startswith("timestamp"), types
    else:
        import duckdb

        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        try:
            types = dict(
                con.sql(
                    "select column_name, data_type from information_schema.columns where table_name = 'usage'"
                ).fetchall()
            )
        finally:
            con.close()
        assert types["account_id"] == "BIGINT" and types["updated_at"].startswith("TIMESTAMP"), types
