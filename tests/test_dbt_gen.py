"""The generated dbt sources stay in step with ingestion.yml; regeneration keeps descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingestion.config import load_config, parse_config
from ingestion.dbt_gen import (
    Existing,
    generate_source_files,
    generate_sources,
    render,
    sources_doc,
    sources_file,
    table_specs,
)
from ingestion.demo.billing import write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import demo_config_doc
from .helpers import REPO


def test_the_checked_in_sources_match_the_config() -> None:
    """Fails when ingestion.yml changes without `python -m ingestion dbt-sources`."""
    cfg = load_config(REPO / "ingestion.yml")
    path, text, _ = generate_sources(cfg, REPO, use_state=False)
    assert path.read_text(encoding="utf-8") == text, "run: python -m ingestion dbt-sources"


def test_the_checked_in_sources_list_the_landed_columns(tmp_path: Path, monkeypatch) -> None:
    """Landing the demo (both days) and regenerating from its committed state changes nothing."""
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    list(write_day(1, inbox))
    list(write_day(2, inbox))
    assert run_pipeline(parse_config(demo_config_doc(inbox, lake))).ok
    monkeypatch.setenv("TIDEMARK_LAKE", str(lake))
    cfg = load_config(REPO / "ingestion.yml")
    _, text, specs = generate_sources(cfg, REPO)
    assert (REPO / sources_file("billing")).read_text(encoding="utf-8") == text
    assert "segment" in next(s for s in specs if s.table == "accounts").columns


def test_regeneration_keeps_edits_and_adds_new_tables_and_columns() -> None:
    doc = demo_config_doc(Path("/inbox"), Path("/lake"))
    doc["sources"][0]["tables"].append({"name": "usage", "primary_key": ["account_id", "metric"]})
    cfg = parse_config(doc)
    old = Existing.parse(
        yaml.safe_dump(
            {
                "sources": [
                    {
                        "name": "billing",
                        "description": "Hand-written.",
                        "tables": [
                            {
                                "name": "accounts",
                                "description": "Accounts, by hand.",
                                "loaded_at_field": "_ingested_at",
                                "columns": [
                                    {
                                        "name": "account_id",
                                        "description": "The key.",
                                        "data_tests": ["not_null"],
                                    },
                                    {"name": "gone_column", "description": "Dropped from the source."},
                                ],
                            }
                        ],
                    }
                ]
            }
        )
    )
    landed = {("billing", "accounts"): ["account_id", "account_name", "updated_at"]}
    specs = table_specs(cfg, lambda s, t: landed.get((s, t)), old)
    out = yaml.safe_load(render(sources_doc(specs, old)))
    src = out["sources"][0]
    assert src["description"] == "Hand-written."
    assert "{{ env_var('TIDEMARK_SOURCE_SCHEMA_BILLING'" in src["schema"]
    assert "landing/billing/{name}/**/*.parquet" in src["meta"]["external_location"]
    accounts = next(t for t in src["tables"] if t["name"] == "accounts")
    assert accounts["description"] == "Accounts, by hand." and accounts["loaded_at_field"] == "_ingested_at"
    cols = {c["name"]: c for c in accounts["columns"]}
    assert cols["account_id"] == {"name": "account_id", "description": "The key.", "data_tests": ["not_null"]}
    assert "gone_column" not in cols  # the committed state is the truth about columns
    assert list(cols)[:3] == ["account_id", "account_name", "updated_at"] and "_ingested_at" in cols
    assert all(c["description"] for c in accounts["columns"])
    # A table that never landed: its key and cursor from the config.
    usage = next(t for t in src["tables"] if t["name"] == "usage")
    assert [c["name"] for c in usage["columns"]][:2] == ["account_id", "metric"]
    assert usage["meta"]["primary_key"] == ["account_id", "metric"]
    assert [t["name"] for t in src["tables"]] == [
        "accounts",
        "customers",
        "subscriptions",
        "invoices",
        "usage",
    ]


def test_cli_checks_the_sources_and_explains_a_warehouse_it_cannot_reach(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ingestion.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["dbt-sources", "--check", "--no-state", "--config", str(REPO / "ingestion.yml")]
    )
    assert res.exit_code == 0, res.output
    assert "up to date" in res.output
    # A project whose sources file is missing: --check fails, a plain run writes it.
    project = tmp_path / "project"
    args = [
        "dbt-sources",
        "--no-state",
        "--config",
        str(REPO / "ingestion.yml"),
        "--project-dir",
        str(project),
    ]
    assert runner.invoke(app, [*args, "--check"]).exit_code == 1
    assert runner.invoke(app, args).exit_code == 0
    written = yaml.safe_load((project / sources_file("billing")).read_text())["sources"][0]["tables"]
    # Without state or an earlier file, a table's columns are its key and cursor (and the metadata).
    assert [(t["name"], [c["name"] for c in t["columns"]][:2]) for t in written] == [
        ("accounts", ["account_id", "updated_at"]),
        ("customers", ["customer_id", "updated_at"]),
        ("subscriptions", ["subscription_id", "updated_at"]),
        ("invoices", ["invoice_id", "updated_at"]),
    ]
    res = runner.invoke(
        app,
        [
            "load-warehouse",
            "--config",
            str(REPO / "ingestion.yml"),
            "--dsn",
            "host=127.0.0.1 port=1 connect_timeout=2",
        ],
    )
    assert res.exit_code == 2
    assert "cannot connect to PostgreSQL" in res.output and "hint" in res.output


def test_each_source_has_its_sources_file_next_to_its_staging_models(tmp_path: Path) -> None:
    """Two CSV sources: one `_<source>__sources.yml` each, under models/staging/<source>/, edits kept."""
    doc = demo_config_doc(tmp_path / "inbox", tmp_path / "lake")
    doc["sources"].append(
        {
            "name": "crm",
            "kind": "csv",
            "path": str(tmp_path / "inbox" / "crm"),
            "tables": [{"name": "contacts", "primary_key": ["contact_id"], "cursor": "updated_at"}],
        }
    )
    cfg = parse_config(doc)
    project = tmp_path / "project"
    crm = project / "models/staging/crm/_crm__sources.yml"
    crm.parent.mkdir(parents=True)
    crm.write_text("sources:\n  - name: crm\n    description: The CRM, by hand.\n")
    files, specs = generate_source_files(cfg, project, use_state=False)
    assert [f.path for f in files] == [project / sources_file("billing"), crm]
    assert sources_file("billing").as_posix() == "models/staging/billing/_billing__sources.yml"
    billing, crm_doc = (yaml.safe_load(f.text)["sources"] for f in files)
    assert [s["name"] for s in billing] == ["billing"] and len(billing[0]["tables"]) == 4
    assert [(s["name"], s["description"]) for s in crm_doc] == [("crm", "The CRM, by hand.")]
    assert [t["name"] for t in crm_doc[0]["tables"]] == ["contacts"]
    assert {s.source for s in specs} == {"billing", "crm"}
    # Metadata columns are described by the shared docs blocks (models/docs.md).
    contacts = {c["name"]: c["description"] for c in crm_doc[0]["tables"][0]["columns"]}
    assert contacts["_run_id"] == "{{ doc('_run_id') }}"


def test_hand_written_entries_are_kept_and_are_not_drift(tmp_path: Path) -> None:
    """A user's own table and source entries (not in the config) survive regeneration, in the file's
    order, with their tests and meta; `--check` then finds nothing to report."""
    from typer.testing import CliRunner

    from ingestion.cli import app

    project = tmp_path / "project"
    args = [
        "dbt-sources",
        "--no-state",
        "--config",
        str(REPO / "ingestion.yml"),
        "--project-dir",
        str(project),
    ]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    path = project / sources_file("billing")
    doc = yaml.safe_load(path.read_text())
    tables = doc["sources"][0]["tables"]
    legacy = {
        "name": "legacy_refunds",
        "description": "Loaded by the old Glue job, by hand.",
        "meta": {"owner": "finance"},
        "columns": [{"name": "refund_id", "description": "The key.", "data_tests": ["unique"]}],
    }
    tables.insert(1, legacy)
    tables[0]["columns"][0]["description"] = "Edited by hand."
    other = {"name": "erp", "schema": "erp_raw", "tables": [{"name": "ledger", "description": "By hand."}]}
    doc["sources"].append(other)
    path.write_text(render(doc))
    res = runner.invoke(app, [*args, "--check"])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, args).exit_code == 0
    kept = yaml.safe_load(path.read_text())
    assert kept["sources"][1] == other
    names = [t["name"] for t in kept["sources"][0]["tables"]]
    assert names == ["accounts", "legacy_refunds", "customers", "subscriptions", "invoices"]
    assert kept["sources"][0]["tables"][1] == legacy
    assert kept["sources"][0]["tables"][0]["columns"][0]["description"] == "Edited by hand."


def _copy_project(dest: Path) -> Path:
    import shutil

    dest.mkdir(parents=True)
    for name in ("dbt_project.yml", "models", "snapshots"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


@pytest.mark.parametrize("command", ["dbt-sources", "dbt-scaffold"])
def test_a_new_column_is_described_in_the_model_and_snapshot_yaml_too(tmp_path: Path, command: str) -> None:
    """Issue 21: a landed column gets its generated description in the sources YAML and in the YAML of the
    table's staging model, CDC model, consumer view and snapshot; what a user wrote there is kept."""
    import pyarrow as pa
    from typer.testing import CliRunner

    from ingestion.cli import app

    from .dbt_support import land_rows

    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    list(write_day(1, inbox))
    list(write_day(2, inbox))
    doc = demo_config_doc(inbox, lake)
    assert run_pipeline(parse_config(doc)).ok
    data = pa.table(
        {
            "account_id": pa.array([1], pa.int64()),
            "region": pa.array(["emea"], pa.string()),
            "_op": pa.array(["u"], pa.string()),
            "_source_file": pa.array([None], pa.string()),
        }
    )
    land_rows(lake, "billing_demo", "billing", "accounts", data, columns={"region": "string"})
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(doc))
    project = _copy_project(tmp_path / "project")
    staging = project / "models/staging/billing/_billing__models.yml"
    cdc = project / "models/cdc/billing/_billing__models.yml"
    views = project / "models/views/billing/_billing__models.yml"
    snapshots = project / "snapshots/billing.yml"
    # A user's own words in the model YAML, which regeneration must keep.
    cdc.write_text(cdc.read_text().replace("Account's display name.", "Display name, edited by hand.", 1))
    before = {p: p.read_text() for p in (staging, cdc, views, snapshots)}

    args = ["--config", str(config), "--project-dir", str(project)]
    res = CliRunner().invoke(app, [command, *args])
    assert res.exit_code == 0, res.output
    src = yaml.safe_load((project / sources_file("billing")).read_text())
    accounts = next(t for t in src["sources"][0]["tables"] if t["name"] == "accounts")
    described = {c["name"]: c["description"] for c in accounts["columns"]}["region"]
    assert "region as landed from billing.accounts" in described

    for path, key, name in (
        (staging, "models", "stg_billing__accounts"),
        (cdc, "models", "accounts"),
        (views, "models", "vw_accounts"),
        (snapshots, "snapshots", "accounts_snapshot"),
    ):
        text = path.read_text()
        entries = {e["name"]: e for e in yaml.safe_load(text)[key]}
        cols = [c["name"] for c in entries[name]["columns"]]
        assert cols.index("segment") + 1 == cols.index("region") == cols.index("_op") - 1, (path, cols)
        assert {c["name"]: c for c in entries[name]["columns"]}["region"] == {
            "name": "region",
            "description": described,
        }
        # Only the new entry was added: comments, quoting and every other entry as written.
        old = yaml.safe_load(before[path])[key]
        assert [e for e in yaml.safe_load(text)[key] if e["name"] != name] == [
            e for e in old if e["name"] != name
        ]
        added = [line for line in text.splitlines() if line not in before[path].splitlines()]
        assert len(added) == 2 and "- name: region" in added[0], added
        assert text.replace("".join(f"{line}\n" for line in added), "") == before[path]
    assert "Display name, edited by hand." in cdc.read_text()

    # A description the user then writes for the new column stays; nothing is drift any more.
    views.write_text(views.read_text().replace(described, "Sales region, by hand.", 1))
    edited = {p: p.read_text() for p in (staging, cdc, views, snapshots)}
    assert CliRunner().invoke(app, ["dbt-sources", "--check", *args]).exit_code == 0
    assert CliRunner().invoke(app, [command, *args]).exit_code == 0
    assert {p: p.read_text() for p in edited} == edited


def test_check_reports_a_model_yaml_missing_a_landed_column(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ingestion.cli import app

    project = _copy_project(tmp_path / "project")
    views = project / "models/views/billing/_billing__models.yml"
    lines = views.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "- name: segment" in line)
    views.write_text("".join(lines[:at] + lines[at + 2 :]))  # segment's entry gone from vw_accounts
    args = [
        "dbt-sources",
        "--no-state",
        "--config",
        str(REPO / "ingestion.yml"),
        "--project-dir",
        str(project),
    ]
    res = CliRunner().invoke(app, [*args, "--check"])
    assert res.exit_code == 1 and "_billing__models.yml is out of date" in res.output
    assert CliRunner().invoke(app, args).exit_code == 0
    cols = {m["name"]: m for m in yaml.safe_load(views.read_text())["models"]}["vw_accounts"]["columns"]
    assert "segment" in [c["name"] for c in cols]
