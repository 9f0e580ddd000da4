"""dbt on the local DuckDB target over a freshly landed lake: CDC tables equal the source's truth."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from ingestion.config import parse_config
from ingestion.demo import COLUMNS, KEYS, truth, write_day
from ingestion.pipeline import run_pipeline

from .conftest import REPO, demo_config_doc

pytestmark = pytest.mark.slow
DBT = Path(sys.executable).parent / "dbt"
# The demo source's column names as they land (customers' headers are cleaned).
LANDED_NAME = {"email": "e_mail"}


@pytest.fixture
def project(tmp_path: Path, demo_inbox: Path, monkeypatch):
    """Lake, warehouse, profiles and dbt output all under tmp_path; the dbt project is the repository's."""
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    lake = tmp_path / "lake"
    (tmp_path / "profiles").mkdir()
    shutil.copy(REPO / "profiles.yml.example", tmp_path / "profiles" / "profiles.yml")
    env = {
        **os.environ,
        "TIDEMARK_LAKE": str(lake),
        "DBT_DUCKDB_PATH": str(tmp_path / "wh.duckdb"),
        "DBT_TARGET": "local",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }

    class Project:
        warehouse = tmp_path / "wh.duckdb"
        inbox = demo_inbox

        def ingest(self) -> None:
            report = run_pipeline(parse_config(demo_config_doc(demo_inbox, lake)))
            assert report.ok, [t.error for t in report.failed]

        def dbt(self, *args: str) -> str:
            proc = subprocess.run(
                [
                    str(DBT),
                    *args,
                    "--project-dir",
                    str(REPO),
                    "--profiles-dir",
                    str(tmp_path / "profiles"),
                    "--target-path",
                    str(tmp_path / "target"),
                    "--log-path",
                    str(tmp_path / "logs"),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp_path,
            )
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
            return proc.stdout

        def table(self, name: str) -> dict[int, dict]:
            con = duckdb.connect(str(self.warehouse), read_only=True)
            try:
                rel = con.sql(f"select * from main.{name}")
                key = KEYS[name]
                return {
                    r[rel.columns.index(key)]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()
                }
            finally:
                con.close()

    return Project()


def as_source_text(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)


def assert_matches_truth(project, day: int) -> None:
    for table, expected in truth(day).items():
        got = project.table(table)
        assert set(got) == set(expected), table
        for key, row in expected.items():
            for col in COLUMNS[table]:
                want = "" if row.get(col) is None else str(row[col])
                assert as_source_text(got[key][LANDED_NAME.get(col, col)]) == want, (table, key, col)


def test_cdc_models_track_the_source(project):
    project.ingest()
    out = project.dbt("build")
    assert "ERROR=0" in out and "PASS=28" in out
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
    project.ingest()
    project.dbt("build", "--select", "tag:cdc")
    assert project.table("accounts")[1] == current
