"""CSV inboxes on a local folder and on S3 (moto): file ledger, archive/unprocessed moves, crash recovery."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest

from ingestion.config import parse_config
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

GOOD = "id,name,updated_at\n1,a,2026-01-01 10:00:00\n2,b,2026-01-02 10:00:00\n"
BAD = "id,name,updated_at\nnot,a,csv,at all\n<html>\n"


def doc(path: str, lake: Path, *, archive: bool = True) -> dict:
    return {
        "pipeline": "p",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": path,
                "archive": {"enabled": archive},
                "tables": [
                    {
                        "name": "t",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                ],
            }
        ],
    }


def month_of(run_id: str) -> str:
    return f"{run_id[:4]}/{run_id[4:6]}"


# --- local folder -----------------------------------------------------------------------------------


def test_local_inbox_archives_landed_files_and_moves_refused_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "t_2.csv").write_text(BAD)
    report = run_pipeline(parse_config(doc(str(inbox), tmp_path / "lake")))
    out = report.tables[0]
    assert out.rows_landed == 2 and list(out.files_refused) == ["t_2.csv"]
    assert not report.ok  # a refused file needs a human: the run says so in its exit code
    month = month_of(report.run_id)
    assert (inbox / "archive" / month / "t_1.csv").read_text() == GOOD
    assert (inbox / "unprocessed" / month / "t_2.csv").read_text() == BAD
    assert sorted(p.name for p in inbox.iterdir()) == ["archive", "unprocessed"]
    again = run_pipeline(parse_config(doc(str(inbox), tmp_path / "lake")))
    assert again.ok and again.tables[0].status == "up_to_date"


def test_crash_between_commit_and_archive_does_not_land_twice(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    cfg = parse_config(doc(str(inbox), tmp_path / "lake"))
    monkeypatch.setenv("TIDEMARK_FAULTS", "state_committed=raise")
    crashed = run_pipeline(cfg)
    assert crashed.tables[0].status == "failed" and (inbox / "t_1.csv").exists()
    monkeypatch.delenv("TIDEMARK_FAULTS")
    rerun = run_pipeline(cfg)
    assert rerun.ok and rerun.tables[0].rows_landed == 0 and rerun.tables[0].files == 0
    assert not (inbox / "t_1.csv").exists()
    assert (inbox / "archive" / month_of(rerun.run_id) / "t_1.csv").exists()
    state = StateStore(str(tmp_path / "lake"), "p").read("s", "t")
    assert state.files["t_1.csv"].run_id == crashed.run_id
    landed = list((tmp_path / "lake" / "landing" / "s" / "t").glob("**/*.parquet"))
    assert {p.name.split("-")[1] for p in landed} == {crashed.run_id.split("-")[0]}


def test_changed_file_is_landed_again_and_flagged_touched_one_is_not(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox = tmp_path / "in"
    inbox.mkdir()
    cfg = parse_config(doc(str(inbox), tmp_path / "lake", archive=False))
    f = inbox / "t_1.csv"
    f.write_text(GOOD)
    first = run_pipeline(cfg)
    assert first.tables[0].rows_landed == 2
    f.write_text(GOOD)  # same bytes, new mtime: recognised by checksum
    touched = run_pipeline(cfg)
    assert touched.tables[0].rows_landed == 0
    (inbox / "t_copy.csv").write_text(GOOD)  # the same bytes under another name
    dup = run_pipeline(cfg)
    assert dup.tables[0].rows_landed == 0
    f.write_text(GOOD + "3,c,2026-01-03 10:00:00\n")  # changed: landed again, with a warning
    with caplog.at_level("WARNING", logger="tidemark"):
        changed = run_pipeline(cfg)
    # read again whole; the row below the watermark is filtered (the CDC lower bound), the rest lands
    assert (changed.tables[0].rows_read, changed.tables[0].rows_filtered) == (3, 1)
    assert changed.tables[0].rows_landed == 2
    assert any("changed since they were landed" in r.getMessage() for r in caplog.records)
    state = StateStore(str(tmp_path / "lake"), "p").read("s", "t")
    assert state.files["t_1.csv"].run_id == changed.run_id
    # the copy is recorded as the landed bytes it duplicates (never landed itself)
    assert state.files["t_copy.csv"].checksum == hashlib.sha256(GOOD.encode()).hexdigest()
    assert state.files["t_copy.csv"].run_id == first.run_id


# --- S3 (moto server) -----------------------------------------------------------------------------


def test_s3_inbox_lands_archives_and_recovers_from_a_crash(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="drops/t_1.csv", Body=GOOD.encode())
    s3.put_object(Bucket=s3_bucket, Key="drops/t_2.csv", Body=BAD.encode())
    s3.put_object(Bucket=s3_bucket, Key="drops/other.txt", Body=b"not a table file")
    cfg = parse_config(doc(f"s3://{s3_bucket}/drops", tmp_path / "lake"))

    monkeypatch.setenv("TIDEMARK_FAULTS", "state_committed=raise")
    crashed = run_pipeline(cfg)
    assert crashed.tables[0].status == "failed"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert {"drops/t_1.csv", "drops/t_2.csv"} <= keys  # committed, not yet moved
    monkeypatch.delenv("TIDEMARK_FAULTS")

    rerun = run_pipeline(cfg)
    assert rerun.tables[0].rows_landed == 0  # nothing landed twice
    month = month_of(rerun.run_id)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {
        "drops/other.txt",
        f"drops/archive/{month}/t_1.csv",
        f"drops/unprocessed/{month}/t_2.csv",
    }
    body = s3.get_object(Bucket=s3_bucket, Key=f"drops/archive/{month}/t_1.csv")["Body"].read()
    assert body == GOOD.encode()
    state = StateStore(str(tmp_path / "lake"), "p").read("s", "t")
    entry = state.files["t_1.csv"]
    assert entry.etag and entry.checksum and entry.rows_read == 2 and entry.status == "landed"
    assert state.files["t_2.csv"].status == "rejected"
    landed = list((tmp_path / "lake" / "landing" / "s" / "t").glob("**/*.parquet"))
    assert landed and all(crashed.run_id in p.name for p in landed)


def test_s3_read_only_inbox_keeps_files_and_lands_once(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="ro/t_1.csv", Body=GOOD.encode())
    cfg = parse_config(doc(f"s3://{s3_bucket}/ro", tmp_path / "lake", archive=False))
    first = run_pipeline(cfg)
    assert first.ok and first.tables[0].rows_landed == 2
    second = run_pipeline(cfg)
    assert second.tables[0].status == "up_to_date"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {"ro/t_1.csv"}


@pytest.mark.parametrize("path", ["s3://", "gs://bucket/x"])
def test_bad_inbox_urls_are_clear_errors(tmp_path, path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    report = run_pipeline(parse_config(doc(path, tmp_path / "lake")))
    assert report.tables[0].status == "failed"
    assert "s3://" in report.tables[0].error


def test_compressed_and_binary_drops_are_told_by_their_bytes_not_their_name(tmp_path):
    import gzip

    from ingestion.config import CsvOptions
    from ingestion.plan.csv import FileFacts
    from ingestion.sources.csv import NotText, as_text_file, decodes_cleanly, lines_at_offsets

    def facts(name: str, data: bytes) -> FileFacts:
        (tmp_path / name).write_bytes(data)
        return FileFacts(name, str(tmp_path / name), len(data), 0)

    opts = CsvOptions()
    plain = facts("a.csv", b"id\n1\n")
    assert as_text_file(plain, str(tmp_path / "x"), opts) == plain  # text is read in place
    copy = as_text_file(facts("b.csv", gzip.compress(b"id\n2\n")), str(tmp_path / "x"), opts)
    assert copy.relpath == "b.csv" and Path(copy.path).read_bytes() == b"id\n2\n"
    assert not copy.path.endswith((".gz", ".csv"))  # no reader decompresses it again
    with pytest.raises(NotText, match="not_text: a damaged gzip"):
        as_text_file(facts("c.csv.gz", b"\x1f\x8b\x08\x00garbage"), str(tmp_path / "x"), opts)
    with pytest.raises(NotText, match="not_text: binary data"):
        as_text_file(facts("d.csv", b"PAR1\x00\x00\x15\x04"), str(tmp_path / "x"), opts)
    assert decodes_cleanly(str(tmp_path / "a.csv"), opts)
    assert not decodes_cleanly(str(facts("e.csv", b"id\nZ\xfcrich\n").path), opts)
    # DuckDB may give a record's offset on the CR/LF ending the line before it
    (tmp_path / "f.csv").write_bytes(b"h\r\n1\r\n2")
    assert lines_at_offsets(str(tmp_path / "f.csv"), [5, 6, 3]) == {3: 2, 5: 3, 6: 3}


def test_long_lines_are_blanked_in_a_copy_and_rejected_with_their_numbers(tmp_path):
    """`blank_long_lines` with a small limit: line numbers kept, the line's ending kept, the record index
    counts records (a quoted line break is one record), a long line inside quotes or as header refuses."""
    from ingestion.config import CsvOptions
    from ingestion.errors import SourceError
    from ingestion.plan.csv import FileFacts
    from ingestion.sources.csv import blank_long_lines

    def facts(name: str, data: bytes) -> FileFacts:
        (tmp_path / name).write_bytes(data)
        return FileFacts(name, str(tmp_path / name), len(data), 0)

    opts = CsvOptions()
    data = b'id,v\r\n1,"a\r\nb"\r\n2,' + b"x" * 40 + b"\r\n\r\n3,c\r\n4," + b"y" * 30
    copy, rejects = blank_long_lines(facts("a.csv", data), str(tmp_path / "s"), opts, limit=20)
    assert Path(copy.path).read_bytes() == b'id,v\r\n1,"a\r\nb"\r\n\r\n\r\n3,c\r\n\r\n'
    assert copy.source_path == str(tmp_path / "a.csv")
    assert [(r.line, r.record, r.code, r.raw[:4]) for r in rejects] == [
        (4, 1, "line_too_long", "2,xx"),
        (7, 3, "line_too_long", "4,yy"),
    ]
    short = facts("b.csv", b"id,v\n1,a\n")
    assert blank_long_lines(short, str(tmp_path / "s"), opts, limit=20) == (short, [])
    with pytest.raises(SourceError, match=r"line 3 is longer than 20 bytes.*inside a quoted field"):
        blank_long_lines(
            facts("c.csv", b'id,v\n1,"a\n' + b"z" * 30 + b'"\n'), str(tmp_path / "s"), opts, limit=20
        )
    with pytest.raises(SourceError, match=r"line 1 is longer than 20 bytes.*header"):
        blank_long_lines(facts("d.csv", b"id," + b"h" * 30 + b"\n1,2\n"), str(tmp_path / "s"), opts, limit=20)


def test_the_long_line_precheck_never_passes_a_file_with_a_long_line(tmp_path):
    """The seek-based precheck of `blank_long_lines` (files larger than the limit): every file it lets
    through has no line of `limit` bytes or more, and a file of short lines is let through unread."""
    import random

    from ingestion.config import CsvOptions
    from ingestion.plan.csv import FileFacts
    from ingestion.sources.csv import _lines_shorter_than, blank_long_lines

    rnd, limit = random.Random(20), 40
    for case in range(300):
        lines = [b"x" * rnd.choice([0, 3, 19, 20, 21, 38, 39, 40, 41, 60]) for _ in range(rnd.randint(2, 12))]
        data = b"\n".join(lines) + (b"\n" if rnd.random() < 0.5 else b"")
        if len(data) <= limit:
            continue
        longest = max(len(line) for line in lines)
        path = tmp_path / f"f{case}.csv"
        path.write_bytes(data)
        if _lines_shorter_than(str(path), len(data), limit):
            assert longest < limit, (case, data)
    short = tmp_path / "short.csv"
    short.write_bytes(b"id,v\n" + b"1,abc\n" * 50)
    f = FileFacts("short.csv", str(short), short.stat().st_size, 0)
    assert _lines_shorter_than(f.path, short.stat().st_size, limit)
    assert blank_long_lines(f, str(tmp_path / "s"), CsvOptions(), limit=limit) == (f, [])
