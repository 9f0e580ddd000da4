"""dbt on the local DuckDB target over a freshly landed lake: CDC tables equal the source's truth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ingestion.config import parse_config
from ingestion.demo.billing import KEYS, render, truth, write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import demo_config_doc
from .helpers import DBT, Dbt, InProcessDbt, assert_curated_matches_truth, curated

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, demo_inbox: Path, monkeypatch):
    """Lake, warehouse, profiles and dbt output all under tmp_path; the dbt project is the repository's."""
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)

    class Project:
        lake = tmp_path / "lake"
        warehouse = tmp_path / "wh.duckdb"
        inbox = demo_inbox
        # The dbt command line (a process of its own), and dbt in this process with one parsed manifest
        # for the many builds after it (no interpreter start-up and no re-parse per call).
        cli = Dbt(tmp_path, tmp_path / "lake", tmp_path / "wh.duckdb")
        _fast: InProcessDbt | None = None

        def dbt(self, *args: str) -> None:
            if self._fast is None:
                self._fast = InProcessDbt(tmp_path, self.lake, self.warehouse)
            self._fast(*args)  # raises unless every node succeeded

        def ingest(self, **table_options) -> None:
            report = run_pipeline(parse_config(_doc(self, **table_options)))
            assert report.ok, [t.error for t in report.failed]

        def table(self, name: str) -> dict[int, dict]:
            return curated(self.warehouse, name)

    return Project()


def _doc(project, **table_options) -> dict:
    doc = demo_config_doc(project.inbox, project.lake)
    for t in doc["sources"][0]["tables"]:
        t.update(table_options)
    return doc


def assert_matches_truth(project, day: int) -> None:
    assert_curated_matches_truth(project.warehouse, day)


def test_cdc_models_track_the_source(project):
    project.ingest()
    out = project.cli("build")
    assert "ERROR=0" in out and "WARN=0" in out and "SKIP=0" in out
    assert_matches_truth(project, 1)
    assert all(r["segment"] is None for r in project.table("accounts").values())

    list(write_day(2, project.inbox))
    project.ingest()
    project.dbt("build")
    assert_matches_truth(project, 2)
    accounts = project.table("accounts")
    assert sum(r["segment"] is not None for r in accounts.values()) == 50  # the new column arrived
    assert (
        project.table("customers")[
            next(k for k, r in truth(2)["customers"].items() if r["last_name"] == "Twice-Updated")
        ]["last_name"]
        == "Twice-Updated"
    )

    # Re-running everything changes nothing.
    before = {t: project.table(t) for t in KEYS}
    project.ingest()
    project.dbt("build")
    assert {t: project.table(t) for t in KEYS} == before
    project.dbt("build", "--select", "tag:cdc")
    project.dbt("test")


def test_an_older_version_never_overwrites_a_newer_one(project):
    list(write_day(2, project.inbox))
    project.ingest()
    project.dbt("build")
    current = project.table("accounts")[1]
    # A late drop carries account 1 as it was long ago.
    (project.inbox / "billing" / "accounts_2026-01-03.csv").write_text(
        "account_id,account_name,plan_tier,country,created_at,updated_at\n"
        "1,Stale Name,free,US,2020-01-01 00:00:00,2020-01-01 00:00:00\n"
    )
    # A lookback reaching back years lets the stale row through ingestion: the dbt guard must stop it.
    project.ingest(lookback="3650d")
    project.dbt("build", "--select", "tag:cdc")
    assert project.table("accounts")[1] == current


def test_rows_relanded_in_the_overlap_window_do_not_duplicate(project):
    list(write_day(2, project.inbox))
    project.ingest(lookback="1d")
    project.dbt("build")
    # The source re-delivers day 2's customers (cursors at and just below the watermark) in a new file;
    # the trailing blank line makes its bytes differ (identical bytes would be skipped by checksum).
    day2 = render(2, "customers")
    (project.inbox / "billing" / "customers_2026-01-03.csv").write_text(day2 + "\n")
    report = run_pipeline(parse_config(_doc(project, lookback="1d")), tables=["customers"])
    assert report.tables[0].rows_landed == 100  # landed again: inside the overlap window
    project.dbt("build", "--select", "tag:cdc")
    assert_matches_truth(project, 2)
