"""The command line: help for every option, exit codes, no heavy imports for --help."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO, demo_config_doc


def cli(*args: str, cwd=REPO, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestion", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def test_help_lists_commands_and_every_run_option():
    top = cli("--help")
    assert top.returncode == 0
    for command in ("run", "demo-data", "demo-check"):
        assert command in top.stdout
    run = cli("run", "--help")
    assert run.returncode == 0
    for option in ("--config", "--env", "--engine", "--table", "--dry-run", "--verbose", "--help"):
        assert option in run.stdout
    assert "duckdb" in run.stdout and "spark" in run.stdout


def test_help_needs_neither_duckdb_nor_spark():
    probe = (
        "import sys, ingestion.cli; "
        "print(sorted(m for m in ('duckdb', 'pyspark', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exit_codes(tmp_path):
    import yaml

    from ingestion.demo.billing import write_day

    missing = cli("run", "--config", str(tmp_path / "none.yml"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad_engine = cli("run", "--engine", "flink")
    assert bad_engine.returncode == 2 and "unknown engine" in bad_engine.stderr

    inbox = tmp_path / "inbox"
    list(write_day(1, inbox))
    doc = demo_config_doc(inbox, tmp_path / "lake")
    (tmp_path / "ok.yml").write_text(yaml.safe_dump(doc))
    ok = cli("run", "--config", str(tmp_path / "ok.yml"))
    assert ok.returncode == 0, ok.stderr
    assert "billing.accounts" in ok.stdout and "landed" in ok.stdout
    doc["sources"][0]["tables"][1]["cursor"] = "nope"
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "lake2").mkdir()
    list(write_day(1, inbox))  # the first run archived the drop: deliver it again
    failed = cli("run", "--config", str(tmp_path / "bad.yml"), env={"TIDEMARK_LAKE": str(tmp_path / "lake2")})
    assert failed.returncode == 1
    assert "billing.customers failed" in failed.stderr and "nope" in failed.stderr


def test_demo_data_is_deterministic_and_idempotent(tmp_path):
    first = cli("demo-data", "--day", "1", "--out", str(tmp_path))
    assert first.returncode == 0 and first.stdout.count("written") == 4
    content = (tmp_path / "billing/accounts_2026-01-01.csv").read_bytes()
    again = cli("demo-data", "--day", "1", "--out", str(tmp_path))
    assert again.stdout.count("unchanged") == 4
    assert (tmp_path / "billing/accounts_2026-01-01.csv").read_bytes() == content


def test_reset_force_unlock_and_load_type(tmp_path):
    from datetime import datetime, timedelta, timezone

    import yaml

    from ingestion.demo.billing import write_day
    from ingestion.lake.state import StateStore

    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    list(write_day(1, inbox))
    cfg = tmp_path / "ingestion.yml"
    cfg.write_text(yaml.safe_dump(demo_config_doc(inbox, lake)))
    assert cli("run", "--config", str(cfg)).returncode == 0

    bad = cli("run", "--config", str(cfg), "--load-type", "sometimes")
    assert bad.returncode == 2 and "unknown load type" in bad.stderr

    # A live run (this test process) holds accounts: the CLI run reports it and exits 1.
    store = StateStore(str(lake), "billing_demo")
    held = store.acquire(
        "billing", "accounts", "run-elsewhere", datetime.now(timezone.utc), timedelta(hours=1)
    )
    (inbox / "billing" / "accounts_2026-01-01.csv").touch()  # changed mtime: there is work to do
    locked = cli("run", "--config", str(cfg))
    assert locked.returncode == 3  # locked by another run, nothing else wrong
    assert "billing.accounts locked" in locked.stderr and "run-elsewhere" in locked.stderr
    unlocked = cli("run", "--config", str(cfg), "--force-unlock", "billing.accounts")
    assert unlocked.returncode == 0, unlocked.stderr
    assert "unlocked billing.accounts: was held by run run-elsewhere" in " ".join(unlocked.stdout.split())
    assert store.read("billing", "accounts").version > held.state.version

    refused = cli("reset", "customers", "--config", str(cfg))  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert store.read("billing", "customers").watermark is not None
    done = cli("reset", "customers", "--config", str(cfg), "--yes")
    assert done.returncode == 0 and "reset billing.customers" in done.stdout
    assert store.read("billing", "customers").watermark is None
    incremental = cli("run", "--config", str(cfg), "--table", "customers", "--load-type", "incremental")
    assert incremental.returncode == 1 and "no committed state" in incremental.stderr
    again = cli("run", "--config", str(cfg), "--table", "customers")
    assert again.returncode == 0 and "full" in again.stdout
