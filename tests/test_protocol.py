"""One run protocol for every source kind: the drifts the two copies had, each shown on both kinds.

A failed PostgreSQL table records its error class, start time and failed step like a CSV table; `status`
lists PostgreSQL tables from the lake's state (no database connection) and exits non-zero after a
failure; refused files and dead runs show in `status`, `status --json` and the report; expected errors
(a corrupted state document, a lake that can't be written) end in a message, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ingestion.lake.layout import new_run_id
from ingestion.observe.audit import Ledger, latest, running_row
from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc

REPO = Path(__file__).resolve().parent.parent
GOOD = "id,name,updated_at\n1,a,2026-01-01 10:00:00\n2,b,2026-01-02 10:00:00\n"
BAD = "id,name,updated_at\nnot,a,csv,at all\n<html>\n"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestion", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def csv_doc(inbox: Path, lake: Path, tables: list[str]) -> dict[str, Any]:
    return {
        "pipeline": "p",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": str(inbox),
                "tables": [
                    {
                        "name": t,
                        "pattern": f"{t}_*.csv",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                    for t in tables
                ],
            }
        ],
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def seed_pg(db: PgDb) -> None:
    db.con.execute("create table orders (id int primary key, note text, updated_at timestamptz not null)")
    db.con.execute(
        "insert into orders values (1, 'a', '2026-01-01 10:00+00'), (2, 'b', '2026-01-02 10:00+00')"
    )
    db.con.execute("create table items (id int primary key, updated_at timestamptz not null)")
    db.con.execute("insert into items values (1, '2026-01-01 10:00+00')")


# --- a failed PostgreSQL table is recorded like a failed CSV table -------------------------------------


def test_a_failed_postgres_table_has_its_error_class_start_and_step_in_the_ledger(
    pg_db: PgDb, tmp_path: Path, write_config, monkeypatch
) -> None:
    seed_pg(pg_db)
    cfg = write_config(pipeline_doc(tmp_path / "lake", jdbc_source(pg_db, cursor="updated_at")))
    steps: list[tuple[str, str]] = []
    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written@orders=raise")
    report = run_pipeline(cfg, on_step=lambda name, step: steps.append((name, step)))
    failed = {o.table: o for o in report.failed}
    assert list(failed) == ["orders"], [(o.name, o.status, o.error) for o in report.tables]
    assert failed["orders"].error_class == "InjectedFault" and failed["orders"].failed_step == "extract"
    row = {r.table: r for r in latest(Ledger(cfg.lake_root).read())}["orders"]
    assert (row.status, row.error_class, row.failed_step) == ("failed", "InjectedFault", "extract")
    assert row.started_at is not None and row.started_at <= row.ended_at
    assert "fault injected" in row.error_message
    # The progress observer saw the PostgreSQL tables start and end (it never did before).
    assert ("pg.orders", "started") in steps and ("pg.orders", "done:failed") in steps
    assert ("pg.items", "lease_acquired") in steps and ("pg.items", "done:landed") in steps
    # The failed table's files were removed at once; its watermark did not move.
    assert not list((tmp_path / "lake" / "landing" / "pg" / "orders").rglob("*.parquet"))


def test_a_failing_table_masks_secrets_whatever_its_source_kind(tmp_path: Path, write_config) -> None:
    secret = "Sup3r-Secret-Pw"
    doc = csv_doc(tmp_path / f"in/password={secret}", tmp_path / "lake", ["t"])
    report = run_pipeline(write_config(doc))
    (out,) = report.tables
    assert out.status == "failed" and out.error_class == "SourceError" and out.failed_step == "look"
    assert secret not in (out.error or "") and "password=***" in (out.error or "")


# --- status on a PostgreSQL-only config --------------------------------------------------------------------


def test_status_lists_postgres_tables_without_a_connection_and_fails_after_a_failure(
    pg_db: PgDb, tmp_path: Path
) -> None:
    seed_pg(pg_db)
    lake = tmp_path / "lake"
    config = write(tmp_path / "pg.yml", pipeline_doc(lake, jdbc_source(pg_db, cursor="updated_at")))
    first = cli("run", "--config", str(config))
    assert first.returncode == 0, first.stderr
    failing = cli("run", "--config", str(config), env={"TIDEMARK_FAULTS": "orphans_removed@items=raise"})
    assert failing.returncode == 1 and "pg.items failed (step orphans)" in failing.stderr

    # The server is now unreachable: status reads only the lake.
    doc = pipeline_doc(lake, jdbc_source(pg_db, cursor="updated_at"))
    doc["sources"][0]["url"] = "jdbc:postgresql://127.0.0.1:9/nowhere"
    offline = write(tmp_path / "offline.yml", doc)
    status = cli("status", "--config", str(offline), "--json")
    assert status.returncode == 1, status.stderr
    tables = {t["name"]: t for t in json.loads(status.stdout)["tables"]}
    assert set(tables) == {"pg.items", "pg.orders"}
    assert tables["pg.orders"]["last_status"] == "landed" and not tables["pg.orders"]["failing"]
    assert tables["pg.items"]["last_status"] == "failed" and tables["pg.items"]["failing"]
    human = cli("status", "--config", str(offline))
    assert human.returncode == 1 and "pg.items" in human.stdout and "pg.orders" in human.stdout

    # The same inventory gives dbt its sources, with keys and cursor from the committed state.
    project = tmp_path / "project"
    made = cli("dbt-sources", "--config", str(offline), "--project-dir", str(project))
    assert made.returncode == 0, made.stderr
    doc = yaml.safe_load((project / "models/staging/pg/_pg__sources.yml").read_text())
    (source,) = doc["sources"]
    by_name = {t["name"]: t for t in source["tables"]}
    assert set(by_name) == {"items", "orders"}
    assert [c["name"] for c in by_name["orders"]["columns"]][:3] == ["id", "note", "updated_at"]


# --- refused files and dead runs are visible ----------------------------------------------------------------


def test_refused_files_show_in_status_json_ledger_and_report(tmp_path: Path) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "t_2.csv").write_text(BAD)
    (inbox / "u_1.csv").write_text(GOOD)
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, lake, ["t", "u"]))
    run = cli("run", "--config", str(config))
    assert run.returncode == 1 and "refused t_2.csv" in run.stderr
    status = cli("status", "--config", str(config), "--json")
    assert status.returncode == 1
    doc = json.loads(status.stdout)
    tables = {t["name"]: t for t in doc["tables"]}
    assert doc["ok"] is False
    assert (tables["s.t"]["last_status"], tables["s.t"]["files_refused"], tables["s.t"]["failing"]) == (
        "refused",
        1,
        True,
    )
    assert "t_2.csv" in tables["s.t"]["last_error"] and tables["s.u"]["last_status"] == "landed"
    row = {r.table: r for r in latest(Ledger(str(lake)).read())}["t"]
    assert (row.status, row.files_refused, row.error_class) == ("refused", 1, "FilesRefused")
    page = tmp_path / "report.html"
    assert cli("report", "--config", str(config), "--output", str(page)).returncode == 0
    html = page.read_text()
    assert "refused" in html and "t_2.csv" in html and "no failed runs" not in html.lower()


def test_a_killed_run_shows_as_abandoned_in_status_at_once(tmp_path: Path) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, lake, ["t"]))
    assert cli("run", "--config", str(config)).returncode == 0
    # A later run on this host opened its row and died (its pid is gone) before closing it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = datetime.now(timezone.utc)
    row = running_row(new_run_id(started), "p", "dev", "duckdb", "s", "t", started)
    from dataclasses import replace

    Ledger(str(lake)).append(row.run_id, [replace(row, pid=dead.pid, host=socket.gethostname())])
    status = cli("status", "--config", str(config), "--json")
    assert status.returncode == 1
    (t,) = json.loads(status.stdout)["tables"]
    assert (t["last_status"], t["last_run_id"], t["failing"]) == ("abandoned", row.run_id, True)


# --- expected errors end in a message, not a traceback ---------------------------------------------------------


def test_a_corrupted_state_document_fails_its_table_and_reset_recovers_it(tmp_path: Path) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "u_1.csv").write_text(GOOD)
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, lake, ["t", "u"]))
    assert cli("run", "--config", str(config)).returncode == 0
    doc = lake / "_state" / "p" / "s" / "t.json"
    doc.write_text(doc.read_text()[:40])  # truncated mid-write by a full disk, say
    (inbox / "u_2.csv").write_text("id,name,updated_at\n3,c,2026-01-03 10:00:00\n")

    run = cli("run", "--config", str(config))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert str(doc) in run.stderr and "reset s.t --yes" in run.stderr
    status = cli("status", "--config", str(config), "--json")
    assert status.returncode == 1 and "Traceback" not in status.stderr
    tables = {t["name"]: t for t in json.loads(status.stdout)["tables"]}
    assert tables["s.t"]["failing"] and "cannot be read" in tables["s.t"]["state_error"]
    assert tables["s.u"]["last_status"] == "landed" and tables["s.u"]["rows_landed"] == 1

    landed = sorted(p.name for p in (lake / "landing" / "s" / "t").rglob("*.parquet"))
    reset = cli("reset", "s.t", "--yes", "--config", str(config))
    assert reset.returncode == 0, reset.stderr
    again = cli("run", "--config", str(config))
    assert again.returncode == 0, again.stderr
    # The landed files of the forgotten runs were kept (the reset vouched for them): nothing lost.
    assert set(landed) <= {p.name for p in (lake / "landing" / "s" / "t").rglob("*.parquet")}


def test_a_lake_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake's parent folder should be")
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, blocker / "lake", ["t"]))
    for args in (("run",), ("status",), ("report",)):
        proc = cli(*args, "--config", str(config))
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr and str(blocker) in proc.stderr


def test_an_unreachable_s3_lake_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, tmp_path / "unused", ["t"]))
    env = {
        "TIDEMARK_LAKE": "s3://no-such-bucket/lake",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    proc = cli("run", "--config", str(config), env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr and "s3://no-such-bucket" in proc.stderr


def test_help_shows_flags_as_flags_and_documents_exit_codes() -> None:
    proc = cli("run", "--help")
    assert proc.returncode == 0
    assert "--dry-run" in proc.stdout and "<bool>" not in proc.stdout
    assert "3 tables locked by another run" in " ".join(proc.stdout.split())
    top = " ".join(cli("--help").stdout.split())
    assert "Exit codes: 0 ok; 1 a table failed or refused a file; 2 usage, config or lake error; 3" in top


def test_a_read_only_lake_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    import shutil

    import pytest

    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    config = write(tmp_path / "ingestion.yml", csv_doc(inbox, lake, ["t"]))
    assert cli("run", "--config", str(config)).returncode == 0
    (inbox / "t_2.csv").write_text("id,name,updated_at\n3,c,2026-01-03 10:00:00\n")
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount the lake read-only (root writes through chmod)")
    # The lake as a read-only mount, in a mount namespace of the command's own: what a read-only
    # volume or a mistaken permission looks like, even to root.
    script = (
        f'mount --bind "{lake}" "{lake}" && mount -o remount,ro,bind "{lake}" && '
        f'exec "{sys.executable}" -m ingestion "$@"'
    )
    for args in (("run",), ("status",)):
        proc = subprocess.run(
            [unshare, "-m", "sh", "-c", script, "sh", *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=300,
        )
        if "mount" in proc.stderr and "permission denied" in proc.stderr.lower():
            pytest.skip(f"this machine refuses mount namespaces: {proc.stderr.strip()}")
        if args == ("run",):
            assert proc.returncode == 2, (proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr and "read-only" in proc.stderr and str(lake) in proc.stderr
        else:  # status only reads: it still works on a read-only lake
            assert proc.returncode == 0, (proc.stdout, proc.stderr)
            assert "s.t" in proc.stdout and "landed" in proc.stdout
    assert (inbox / "t_2.csv").exists()  # nothing was moved or lost


def test_a_column_gone_from_the_source_is_a_warning_in_the_ledger(tmp_path: Path, write_config) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    cfg = write_config(csv_doc(inbox, lake, ["t"]))
    first = run_pipeline(cfg)
    assert first.ok and first.tables[0].warnings == []
    (inbox / "t_2.csv").write_text("id,updated_at\n3,2026-01-03 10:00:00\n")  # `name` is gone
    second = run_pipeline(cfg)
    assert second.ok and second.tables[0].rows_landed == 1
    rows = {r.run_id: r for r in latest(Ledger(str(lake)).read())}
    assert rows[first.run_id].warnings is None
    assert (
        "columns gone from the source" in rows[second.run_id].warnings
        and "name" in rows[second.run_id].warnings
    )
