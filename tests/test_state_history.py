"""Issue 19: state documents with history parts carry their own format number, and history parts no
committed document names are deleted, never one a writer could still name, whatever crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from ingestion.errors import StateFormatTooNew
from ingestion.lake.layout import new_run_id, run_id_of
from ingestion.lake.model import FORMAT_HISTORY, FORMAT_PLAIN, TableState
from ingestion.lake.state import KEEP_RUNS, Held, StateStore, part_version
from ingestion.run.pipeline import run_pipeline

from .test_protocol import GOOD, REPO, csv_doc

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "lake")
    return f"s3://{request.getfixturevalue('s3_bucket')}/lake"


def fake_runs(n: int, start: int = 0) -> tuple[str, ...]:
    """Committed run ids with no files (older than any real run)."""
    return tuple(new_run_id(T0 + timedelta(seconds=start + i)) for i in range(n))


def add_runs(store: StateStore, held: Held, runs: tuple[str, ...]) -> Held:
    state = held.state
    return store.commit(held, replace(state, committed_runs=(*state.committed_runs, *runs)))


def parts(store: StateStore, source: str, table: str) -> set[str]:
    """Every history part of the table in the store, named or not."""
    return set(store.docs.list(f"_history/{store.pipeline}/{source}/{table}/"))


def chain(store: StateStore, state: TableState) -> set[str]:
    """The parts the state's document names."""
    return set(store._chain_keys(state.history.head))


def raw(store: StateStore, source: str, table: str) -> dict:
    doc = store.docs.get(store.key(source, table))
    assert doc is not None
    return json.loads(doc.body)


def at_the_threshold(store: StateStore, source: str, table: str, start: int = 0) -> Held:
    """A table whose history is one part and whose document is full: its next commit compacts, and the
    new part merges with the old one (so the old part is no longer named)."""
    held = store.acquire(source, table, "setup", T0, HOUR)
    held = add_runs(store, held, fake_runs(3 * KEEP_RUNS, start))  # 2 KEEP to one part, KEEP stay
    assert len(chain(store, held.state)) == 1
    return add_runs(store, held, fake_runs(KEEP_RUNS, start + 3 * KEEP_RUNS))  # 2 KEEP: no compaction yet


# ---------------------------------------------------------------- format numbers


def test_documents_with_history_parts_get_their_own_format_number(root) -> None:
    store = StateStore(root, "pipe")
    held = store.acquire("s", "t", "r", T0, HOUR)
    held = add_runs(store, held, fake_runs(3))
    assert raw(store, "s", "t")["format"] == FORMAT_PLAIN == 2  # no history: older versions read it too
    held = add_runs(store, held, fake_runs(3 * KEEP_RUNS, 10))
    assert held.state.history.head is not None
    assert raw(store, "s", "t")["format"] == FORMAT_HISTORY == 3
    # Readers accept both, and format 2 documents naming parts (written before format 3 existed).
    doc = raw(store, "s", "t")
    for fmt in (2, None):
        if fmt is None:
            doc.pop("format")
        else:
            doc["format"] = fmt
        current = store.docs.get(store.key("s", "t"))
        store.docs.put(store.key("s", "t"), json.dumps(doc).encode(), token=current.token)
        state = StateStore(root, "pipe").read("s", "t")
        assert state is not None and len(state.committed_runs) == 3 + 3 * KEEP_RUNS


def test_a_newer_format_is_refused_with_an_upgrade_hint_and_never_reset(root) -> None:
    store = StateStore(root, "pipe")
    store.release(add_runs(store, store.acquire("s", "t", "r", T0, HOUR), fake_runs(2)))
    store.release(add_runs(store, store.acquire("s", "u", "r", T0, HOUR), fake_runs(2)))
    doc = raw(store, "s", "t")
    doc["format"] = FORMAT_HISTORY + 1
    current = store.docs.get(store.key("s", "t"))
    newer = json.dumps(doc).encode()
    store.docs.put(store.key("s", "t"), newer, token=current.token)

    fresh = StateStore(root, "pipe")
    with pytest.raises(StateFormatTooNew) as err:
        fresh.read("s", "t")
    assert "newer tidemark" in str(err.value) and "format 4" in str(err.value)
    assert "upgrade tidemark" in str(err.value)
    # `status` still sees the other tables; `reset` does not replace what a newer version wrote.
    assert [s.table for s in fresh.tables()] == ["u"] and isinstance(
        fresh.unreadable[("s", "t")], StateFormatTooNew
    )
    with pytest.raises(StateFormatTooNew):
        fresh.reset("s", "t", T0 + HOUR)
    assert store.docs.get(store.key("s", "t")).body == newer
    with pytest.raises(StateFormatTooNew):
        fresh.acquire("s", "t", "r2", T0 + HOUR, HOUR)

    # A history part of a newer format too.
    held = store.acquire("s", "u", "r", T0, HOUR)
    held = add_runs(store, held, fake_runs(3 * KEEP_RUNS, 10))
    (head,) = chain(store, held.state)
    part = json.loads(store.docs.get(head).body)
    part["format"] = 2
    store.docs.put(head, json.dumps(part).encode(), token=store.docs.get(head).token)
    with pytest.raises(StateFormatTooNew, match="history part"):
        StateStore(root, "pipe").read("s", "u")


def test_a_run_fails_only_the_table_of_a_newer_format(tmp_path, write_config) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    for t in ("t", "u"):
        (inbox / f"{t}_1.csv").write_text(GOOD)
    cfg = write_config(csv_doc(inbox, lake, ["t", "u"]))
    assert run_pipeline(cfg).ok
    path = lake / "_state" / "p" / "s" / "t.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "format": 9}))
    (inbox / "t_2.csv").write_text(GOOD.replace("2026-01-02", "2026-01-03"))
    (inbox / "u_2.csv").write_text(GOOD.replace("2026-01-02", "2026-01-03"))
    report = run_pipeline(cfg)
    out = {o.table: o for o in report.tables}
    assert out["u"].status == "landed"
    assert (out["t"].status, out["t"].error_class) == ("failed", "StateFormatTooNew")
    assert "upgrade tidemark" in (out["t"].error or "")
    assert json.loads(path.read_text())["format"] == 9  # untouched


# ---------------------------------------------------------------- deleting unreferenced parts


def test_unreferenced_parts_are_deleted_and_referenced_ones_kept(root) -> None:
    store = StateStore(root, "pipe")
    held = at_the_threshold(store, "s", "t")
    (first,) = parts(store, "s", "t")
    assert chain(store, held.state) == {first}
    v = held.state.version
    folder = "_history/pipe/s/t"
    # A part of a writer that lost its race for an earlier version (never named), and one of a write
    # still in flight (for a version after the next commit): only the first may go.
    lost = f"{folder}/{v:012d}-0badc0de.json"
    in_flight = f"{folder}/{v + 5:012d}-0ddba11.json"
    store.docs.put(lost, b'{"format": 1, "runs": []}', token=None)
    store.docs.put(in_flight, b'{"format": 1, "runs": []}', token=None)

    held = add_runs(store, held, fake_runs(1, 10_000))  # compacts; the new part absorbs the first
    head = held.state.history.head
    assert chain(store, held.state) == {head} and part_version(head) == held.state.version
    assert parts(store, "s", "t") == {head, in_flight}

    # A compaction without a merge: both named parts stay.
    held = add_runs(store, held, fake_runs(KEEP_RUNS + 1, 20_000))
    named = chain(store, held.state)
    assert len(named) == 2 and parts(store, "s", "t") == named | {in_flight}
    state = StateStore(root, "pipe").read("s", "t")
    assert state is not None and len(state.committed_runs) == 4 * KEEP_RUNS + 1 + KEEP_RUNS + 1
    assert len(set(state.committed_runs)) == len(state.committed_runs)


def test_a_reset_deletes_the_parts_it_drops(root) -> None:
    """A reset forgets the file ledger, so the history (which holds some of it) starts over."""
    from ingestion.lake.model import FileEntry

    store = StateStore(root, "pipe")
    held = store.acquire("s", "t", "r", T0, HOUR)
    runs = fake_runs(4 * KEEP_RUNS)
    files = {f"in/{i}.csv": FileEntry(10, 1, run) for i, run in enumerate(runs)}
    store.release(store.commit(held, replace(held.state, committed_runs=runs, files=files)))
    old = parts(store, "s", "t")
    assert old and raw(store, "s", "t")["format"] == FORMAT_HISTORY
    store.reset("s", "t", T0 + HOUR)
    state = StateStore(root, "pipe").read("s", "t")
    assert state is not None and set(state.committed_runs) == set(runs) and state.files == {}
    # The kept run ids compact into a new chain; the parts of the old one are gone.
    assert not old & parts(store, "s", "t") and parts(store, "s", "t") == chain(store, state)


def test_a_reader_of_a_document_whose_part_was_just_deleted_reads_the_newer_document(root) -> None:
    store = StateStore(root, "pipe")
    held = at_the_threshold(store, "s", "t")
    stale = store.docs.get(store.key("s", "t"))
    held = add_runs(store, held, fake_runs(1, 10_000))  # deletes the part `stale` names

    class StaleOnce:
        """Hands out the old document once, as a reader that read it just before the commit saw it."""

        def __init__(self, docs) -> None:
            self.docs, self.location, self.served = docs, docs.location, False

        def get(self, key):
            if key == store.key("s", "t") and not self.served:
                self.served = True
                return stale
            return self.docs.get(key)

        def __getattr__(self, name):
            return getattr(self.docs, name)

    reader = StateStore(root, "pipe", docs=StaleOnce(store.docs))  # type: ignore[arg-type]
    state = reader.read("s", "t")
    assert reader.docs.served and state is not None and state.version == held.state.version
    assert len(state.committed_runs) == 4 * KEEP_RUNS + 1


def test_a_failed_deletion_keeps_the_commit_and_the_next_compaction_finishes_it(root, caplog) -> None:
    store = StateStore(root, "pipe")
    held = at_the_threshold(store, "s", "t")
    held = add_runs(store, held, fake_runs(1, 10_000))
    held = add_runs(store, held, fake_runs(KEEP_RUNS + 1, 20_000))  # a chain of two parts
    assert len(chain(store, held.state)) == 2
    store.release(held)
    real = store.docs

    class Failing:
        def __init__(self) -> None:
            self.location, self.deleted = real.location, 0

        def discard(self, key):
            if self.deleted:
                raise OSError("the disk went away")
            self.deleted += 1
            real.discard(key)

        def __getattr__(self, name):
            return getattr(real, name)

    store.docs = Failing()  # type: ignore[assignment]
    held = store.acquire("s", "t", "r", T0 + HOUR, HOUR)
    before = parts(store, "s", "t")
    for i in range(4 * KEEP_RUNS):  # commit until a compaction merges the named parts away
        held = add_runs(store, held, fake_runs(1, 30_000 + i))
        if before - chain(store, held.state):
            break
    assert store.docs.deleted == 1
    assert "could not delete unreferenced history parts" in caplog.text
    left = parts(store, "s", "t") - chain(store, held.state)
    assert left  # garbage, but harmless: readers never see it
    total = len(held.state.committed_runs)
    assert len(StateStore(root, "pipe").read("s", "t").committed_runs) == total

    store.docs = real
    for i in range(4 * KEEP_RUNS):
        held = add_runs(store, held, fake_runs(1, 40_000 + i))
        if not (parts(store, "s", "t") & left):
            break
    assert parts(store, "s", "t") == chain(store, held.state)
    assert len(StateStore(root, "pipe").read("s", "t").committed_runs) == total + i + 1


# ---------------------------------------------------------------- crashes (TIDEMARK_FAULTS, a real run)


def _run_killed(config: Path, fault: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TIDEMARK_LAKE", "TIDEMARK_FAULTS")}
    proc = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(config)],
        cwd=REPO,
        env={**env, "TIDEMARK_FAULTS": fault},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, f"the fault {fault} was never reached:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("point", ["history_written", "history_pruning"])
def test_a_run_killed_while_compacting_leaves_a_readable_state_and_no_lasting_garbage(
    tmp_path, point
) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(csv_doc(inbox, lake, ["t"])))
    (inbox / "t_1.csv").write_text(GOOD)
    from ingestion.config import load_config

    cfg = load_config(config)
    assert run_pipeline(cfg).ok
    store = StateStore(str(lake), "p")
    store.release(at_the_threshold(store, "s", "t"))  # the run's commit compacts and merges
    before = store.read("s", "t")
    assert before is not None
    old_parts = parts(store, "s", "t")

    (inbox / "t_2.csv").write_text("id,name,updated_at\n3,c,2026-01-03 10:00:00\n")
    _run_killed(config, f"{point}@t=kill")
    after_kill = StateStore(str(lake), "p").read("s", "t")
    assert after_kill is not None
    if point == "history_written":  # died before its commit: nothing counted, the new part is named by none
        assert after_kill.committed_runs == before.committed_runs
        assert len(parts(store, "s", "t")) == len(old_parts) + 1
    else:  # died after its commit, before deleting the part it no longer names
        assert len(after_kill.committed_runs) == len(before.committed_runs) + 1
        assert old_parts <= parts(store, "s", "t") and not old_parts & chain(store, after_kill)

    report = run_pipeline(cfg)
    assert report.ok, [(o.table, o.error) for o in report.tables]
    state = StateStore(str(lake), "p").read("s", "t")
    assert state is not None and state.lease is None and state.watermark is not None
    assert state.watermark.value.startswith("2026-01-03")
    assert set(before.committed_runs) < set(state.committed_runs)
    landed = list((lake / "landing" / "s" / "t").rglob("*.parquet"))
    assert {run_id_of(p) for p in landed} <= set(state.committed_runs)
    # Garbage is gone by the end of the next compaction at the latest.
    held = store.acquire("s", "t", "setup", datetime.now(timezone.utc), HOUR)
    for i in range(4 * KEEP_RUNS):
        if parts(store, "s", "t") == chain(store, held.state):
            break
        held = add_runs(store, held, fake_runs(1, 50_000 + i))
    assert parts(store, "s", "t") == chain(store, held.state)
