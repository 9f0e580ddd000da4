"""`status` (table, JSON, exit codes), the HTML run report (rendered in headless Chromium), progress bars."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from ingestion.cli.progress import TableProgress
from ingestion.config import load_config
from ingestion.demo.billing import write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import DEMO_TABLES, demo_config_doc
from .test_cli import cli

PASSWORD = "Tr0ub4dor-and-3"
CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).exists()
    ),
    None,
)


def _write(tmp_path: Path, *, broken: bool) -> Path:
    """A demo config; `broken` adds a table whose folder is missing (and whose path holds a password)."""
    doc = demo_config_doc(tmp_path / "inbox", tmp_path / "lake")
    if broken:
        doc["sources"].append(
            {
                "name": "partner",
                "kind": "csv",
                "path": str(tmp_path / f"partner/password={PASSWORD}"),
                "tables": [
                    {
                        "name": "orders",
                        "pattern": "*.csv",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                ],
            }
        )
    path = tmp_path / "ingestion.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _status(cfg: Path) -> tuple[int, dict]:
    proc = cli("status", "--config", str(cfg), "--json")
    return proc.returncode, json.loads(proc.stdout)


def test_status_reports_last_runs_and_exit_codes(tmp_path):
    list(write_day(1, tmp_path / "inbox"))
    cfg = _write(tmp_path, broken=True)

    # Nothing ran yet: every table "never_run", exit 0.
    code, doc = _status(cfg)
    assert code == 0 and doc["ok"] is True
    assert {t["name"]: t["last_status"] for t in doc["tables"]} == {
        **{f"billing.{t}": "never_run" for t in DEMO_TABLES},
        "partner.orders": "never_run",
    }

    # A partly failed run: exit 1, the failing table named with its (redacted) error.
    report = run_pipeline(load_config(cfg))
    assert [t.name for t in report.failed] == ["partner.orders"]
    code, doc = _status(cfg)
    assert code == 1 and doc["ok"] is False
    tables = {t["name"]: t for t in doc["tables"]}
    orders = tables["partner.orders"]
    assert orders["last_status"] == "failed" and orders["failing"] is True
    assert orders["last_error"].startswith("SourceError: ") and "does not exist" in orders["last_error"]
    assert orders["last_run_id"] == report.run_id == orders["last_error_run_id"]
    accounts = tables["billing.accounts"]
    landed = {t.table: t for t in report.tables}["accounts"]
    assert (accounts["last_status"], accounts["rows_landed"], accounts["watermark"]) == (
        "landed",
        landed.rows_landed,
        landed.watermark.value,
    )
    assert accounts["lag_seconds"] > 0 and accounts["last_error"] is None
    human = cli("status", "--config", str(cfg))
    assert human.returncode == 1
    assert (
        "partner.orders" in human.stdout and "failed" in human.stdout and "billing.invoices" in human.stdout
    )
    assert "partner.orders failed" in human.stderr
    assert PASSWORD not in human.stdout + human.stderr + json.dumps(doc)

    # The folder appears and the next run works: exit 0 again; the old error is still shown as history.
    folder = tmp_path / f"partner/password={PASSWORD}"
    folder.mkdir(parents=True)
    (folder / "orders_1.csv").write_text("id,updated_at\n1,2026-01-01 10:00:00\n")
    assert run_pipeline(load_config(cfg)).ok
    code, doc = _status(cfg)
    orders = {t["name"]: t for t in doc["tables"]}["partner.orders"]
    assert code == 0 and doc["ok"] is True
    assert orders["last_status"] == "landed" and orders["failing"] is False
    assert orders["last_error_run_id"] == report.run_id

    # Usage errors are exit 2.
    assert cli("status", "--config", str(cfg), "--table", "nope").returncode == 2


def _png_pixels_vary(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the decompressed image data."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_report_renders_charts_and_failures(tmp_path):
    list(write_day(1, tmp_path / "inbox"))
    cfg = _write(tmp_path, broken=True)
    run_pipeline(load_config(cfg))
    list(write_day(2, tmp_path / "inbox"))
    run_pipeline(load_config(cfg))
    out = tmp_path / "report" / "index.html"
    proc = cli("report", "--config", str(cfg), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert page.count("<svg") == 3
    for title in ("Rows landed per run", "Duration per table", "Watermark lag"):
        assert title in page
    # Every table has a series; the failure is listed, redacted; nothing is fetched at view time.
    for table in DEMO_TABLES:
        assert f"billing.{table}" in page
    assert page.count(">partner.orders<") >= 2 + 1  # status table, two failure rows
    assert "SourceError" in page and PASSWORD not in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page

    # Default location: next to the ledger.
    assert cli("report", "--config", str(cfg)).returncode == 0
    assert (tmp_path / "lake" / "_audit" / "report.html").exists()

    if CHROMIUM is None:
        pytest.skip("no chromium installed: the report was built but not rendered")
    png = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    width, height, distinct = _png_pixels_vary(png.read_bytes())
    assert (width, height) == (1200, 1600)
    assert distinct > 64, "the screenshot is (nearly) blank"


def test_progress_bars_follow_each_table(tmp_path, write_config):
    list(write_day(1, tmp_path / "inbox"))
    cfg = write_config(demo_config_doc(tmp_path / "inbox", tmp_path / "lake"))
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    names = [f"billing.{t}" for t in DEMO_TABLES]
    seen: list[tuple[str, str]] = []
    with TableProgress(names, console) as progress:

        def step(table: str, point: str) -> None:
            seen.append((table, point))
            progress.step(table, point)

        report = run_pipeline(cfg, on_step=step)
    assert report.ok
    for name in names:
        points = [p for t, p in seen if t == name]
        assert points[0] == "started" and points[-1] == "done:landed"
        assert "batch_written" in points and "state_committed" in points
        task = progress.progress.tasks[progress.tasks[name]]
        assert task.finished
    text = buf.getvalue()
    assert all(name in text for name in names) and "landed" in text
