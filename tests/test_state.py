"""The state store suite, run against both backends: a local folder and S3 (moto server on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ingestion.errors import LeaseHeld, StateConflict
from ingestion.lake.docstore import LocalDocStore, PreconditionFailed, S3DocStore
from ingestion.lake.model import Lease, TableState, Watermark
from ingestion.lake.state import StateStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A lake root on each backend."""
    if request.param == "local":
        return str(tmp_path / "lake")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/lake"


@pytest.fixture
def store(root) -> StateStore:
    return StateStore(root, "pipe")


def landed(held_state: TableState, run_id: str) -> TableState:
    return replace(held_state, watermark=Watermark("5", "bigint"), committed_runs=(run_id,))


def test_backend_matches_the_root(store, root):
    assert isinstance(store.docs, S3DocStore if root.startswith("s3://") else LocalDocStore)


def test_conditional_writes(store):
    docs = store.docs
    assert docs.get("x/doc.json") is None
    t1 = docs.put("x/doc.json", b"1", token=None)
    with pytest.raises(PreconditionFailed):
        docs.put("x/doc.json", b"2", token=None)  # exists already
    with pytest.raises(PreconditionFailed):
        docs.put("x/doc.json", b"2", token="stale")
    t2 = docs.put("x/doc.json", b"2", token=t1)
    assert docs.get("x/doc.json").body == b"2"
    with pytest.raises(PreconditionFailed):
        docs.delete("x/doc.json", token=t1)
    docs.delete("x/doc.json", token=t2)
    assert docs.get("x/doc.json") is None


def test_lease_commit_release(store):
    assert store.read("s", "t") is None
    held = store.acquire("s", "t", "run-a", T0, HOUR)
    assert held.state.lease.run_id == "run-a"
    held = store.commit(held, landed(held.state, "run-a"))
    store.release(held)
    state = store.read("s", "t")
    assert state.lease is None
    assert state.watermark == Watermark("5", "bigint")
    assert state.committed_runs == ("run-a",)
    assert [s.name for s in store.tables()] == ["s.t"]


def test_a_second_run_is_told_who_holds_the_lease(store):
    store.acquire("s", "t", "run-a", T0, HOUR)
    with pytest.raises(LeaseHeld) as e:
        store.acquire("s", "t", "run-b", T0 + timedelta(minutes=5), HOUR)
    assert "locked by run run-a since 2026-01-01T00:00:00+00:00" in e.value.message
    assert "--force-unlock s.t" in e.value.hint


def test_a_stale_holder_cannot_commit_after_takeover(store):
    a = store.acquire("s", "t", "run-a", T0, HOUR)
    b = store.acquire("s", "t", "run-b", T0 + 2 * HOUR, HOUR)  # a's lease expired
    with pytest.raises(StateConflict, match="nothing was committed"):
        store.commit(a, landed(a.state, "run-a"))
    b = store.commit(b, landed(b.state, "run-b"))
    store.release(a)  # harmless: logs and leaves b's lease alone
    assert store.read("s", "t").lease.run_id == "run-b"
    assert store.read("s", "t").committed_runs == ("run-b",)


def test_renewal_keeps_others_out_and_force_unlock_fences_the_holder(store):
    a = store.acquire("s", "t", "run-a", T0, HOUR)
    a = store.renew(a, T0 + 50 * timedelta(minutes=1), HOUR)
    with pytest.raises(LeaseHeld):
        store.acquire("s", "t", "run-b", T0 + 90 * timedelta(minutes=1), HOUR)
    removed = store.force_unlock("s", "t")
    assert removed.run_id == "run-a"
    assert store.force_unlock("s", "t") is None
    with pytest.raises(StateConflict):
        store.commit(a, landed(a.state, "run-a"))


def test_a_lease_that_ends_without_a_release_names_its_run_for_cleanup(store):
    # Taken over after it lapsed, force-unlocked, or released by a run that could not remove its files:
    # each leaves the run's id in the state (a committed one too: its staging may be left).
    store.acquire("s", "t", "run-a", T0, HOUR)
    b = store.acquire("s", "t", "run-b", T0 + 2 * HOUR, HOUR)
    assert b.state.abandoned_runs == ("run-a",)
    store.force_unlock("s", "t")
    assert store.read("s", "t").abandoned_runs == ("run-a", "run-b")
    c = store.acquire("s", "t", "run-c", T0 + 3 * HOUR, HOUR)
    c = store.forget_abandoned(c, {"run-a", "run-b"})
    assert c.state.abandoned_runs == ()
    store.release(c, abandon=True)
    assert store.read("s", "t").abandoned_runs == ("run-c",)
    d = store.acquire("s", "t", "run-d", T0 + 4 * HOUR, HOUR)
    store.release(store.commit(d, landed(d.state, "run-d")), abandon=True)
    state = store.read("s", "t")
    assert state.abandoned_runs == ("run-c", "run-d") and state.lease is None
    assert b"abandoned_runs" in state.to_json()
    clean = store.forget_abandoned(store.acquire("s", "t", "run-e", T0 + 5 * HOUR, HOUR), {"run-c", "run-d"})
    assert b"abandoned_runs" not in clean.state.to_json()  # the usual document has no such key


def test_reset_forgets_progress_but_keeps_committed_runs(store):
    held = store.acquire("s", "t", "run-a", T0, HOUR)
    with pytest.raises(LeaseHeld):
        store.reset("s", "t", T0)
    store.release(store.commit(held, landed(held.state, "run-a")))
    old = store.reset("s", "t", T0)
    assert old.watermark is not None
    state = store.read("s", "t")
    assert state.watermark is None and state.files == {} and state.committed_runs == ("run-a",)
    assert store.reset("s", "other", T0) is None


def test_exactly_one_of_many_concurrent_acquirers_wins(store):
    winners, losers, errors = [], [], []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            store.acquire("s", "t", f"run-{i}", T0, HOUR)
            winners.append(i)
        except LeaseHeld:
            losers.append(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(winners) == 1 and len(losers) == 5
    assert store.read("s", "t").lease.run_id == f"run-{winners[0]}"


def test_a_dead_local_holder_is_taken_over_at_once(store):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    held = store.acquire("s", "t", "run-dead", T0, HOUR)
    dead = replace(held.state.lease, pid=int(gone.stdout))
    store.commit(held, replace(held.state, lease=None))  # commit keeps the held lease…
    # …so plant the dead process's lease directly, as a killed run leaves it
    doc = store.docs.get(store.key("s", "t"))
    store.docs.put(
        store.key("s", "t"), replace(TableState.from_json(doc.body), lease=dead).to_json(), token=doc.token
    )
    assert (
        store.acquire("s", "t", "run-next", T0 + timedelta(minutes=1), HOUR).state.lease.run_id == "run-next"
    )


def test_lease_expiry():
    lease = Lease("r", T0.isoformat(), (T0 + HOUR).isoformat(), "h", 1)
    assert not lease.expired(T0 + timedelta(minutes=59))
    assert lease.expired(T0 + HOUR)


def test_transient_s3_errors_are_retried_and_permanent_ones_are_not():
    from botocore.exceptions import ClientError

    class Flaky:
        class exceptions:
            NoSuchKey = KeyError

        def __init__(self, failures: list[str]) -> None:
            self.failures, self.calls = failures, 0

        def put_object(self, **kw):
            self.calls += 1
            if self.failures:
                code = self.failures.pop(0)
                raise ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")
            return {"ETag": '"e"'}

    flaky = Flaky(["SlowDown", "ConditionalRequestConflict"])
    store = S3DocStore("s3://bucket/prefix", client=flaky)
    assert store.put("k.json", b"{}", token=None) == '"e"'
    assert flaky.calls == 3
    denied = Flaky(["AccessDenied"])
    with pytest.raises(ClientError):
        S3DocStore("s3://bucket/prefix", client=denied).put("k.json", b"{}", token=None)
    assert denied.calls == 1
    conflict = Flaky(["PreconditionFailed"])
    with pytest.raises(PreconditionFailed):
        S3DocStore("s3://bucket/prefix", client=conflict).put("k.json", b"{}", token="old")
    assert conflict.calls == 1


def test_the_keeper_renews_the_lease_while_the_table_lands(store):
    import time

    from ingestion.lake.state import LeaseKeeper

    def now() -> datetime:
        return datetime.now(timezone.utc)

    ttl = timedelta(seconds=1.2)  # renewed every 0.4 s
    keeper = LeaseKeeper(store, store.acquire("s", "t", "run-a", now(), ttl), ttl, now)
    time.sleep(3)  # well past the first expiry: only renewals keep the lease alive
    with pytest.raises(LeaseHeld):
        store.acquire("s", "t", "run-b", now(), ttl)
    keeper.commit(landed(keeper.held.state, "run-a"))
    keeper.release()
    assert store.read("s", "t").lease is None
    assert store.read("s", "t").committed_runs == ("run-a",)
    assert store.acquire("s", "t", "run-b", now(), ttl).state.lease.run_id == "run-b"


class RecordingDocs:
    """A DocStore wrapper that records the size of every document it writes, by key."""

    def __init__(self, docs) -> None:
        self.docs, self.puts = docs, []
        self.location = docs.location

    def get(self, key):
        return self.docs.get(key)

    def put(self, key, body, *, token):
        self.puts.append((key, len(body)))
        return self.docs.put(key, body, token=token)

    def delete(self, key, *, token):
        return self.docs.delete(key, token=token)

    def discard(self, key):
        return self.docs.discard(key)

    def list(self, prefix):
        return self.docs.list(prefix)


def test_state_documents_stay_the_same_size_with_10000_committed_runs(root) -> None:
    """Issue 19: committed runs and the file ledger compact into history parts; readers see them all."""
    from ingestion.lake.model import FileEntry

    def table_with(n: int, name: str) -> tuple[StateStore, RecordingDocs, TableState]:
        store = StateStore(root, "pipe")
        docs = store.docs = RecordingDocs(store.docs)  # type: ignore[assignment]
        held = store.acquire("src", name, "setup", T0, HOUR)
        runs = tuple(f"2026{i:010d}-run" for i in range(n))
        files = {f"in/{i}.csv": FileEntry(10, 1, runs[i]) for i in range(n)}
        held = store.commit(held, replace(held.state, committed_runs=runs, files=files))
        return store, docs, held.state

    sizes = {}
    for n in (10, 10_000):
        store, docs, _ = table_with(n, f"t{n}")
        held = store.acquire("src", f"t{n}", "setup", T0, HOUR)  # renewing our own lease
        docs.puts.clear()
        for k in range(3):  # three more runs, each committing one run and one file
            run_id = f"2027{k:010d}-run"
            state = held.state
            new = replace(
                state,
                committed_runs=(*state.committed_runs, run_id),
                files={**state.files, f"in/new{k}.csv": FileEntry(10, 1, run_id)},
            )
            held = store.commit(held, new)
        state_docs = [size for key, size in docs.puts if key == store.key("src", f"t{n}")]
        sizes[n] = max(state_docs)
        # Everything is still there for readers (orphan cleanup relies on every committed run).
        fresh = StateStore(root, "pipe").read("src", f"t{n}")
        assert fresh is not None and len(fresh.committed_runs) == n + 3 and len(fresh.files) == n + 3
        assert set(fresh.committed_runs) >= {"20260000000000-run", "20270000000002-run"}
        assert fresh.history.parts <= 14  # O(log n) parts, not one per compaction
    assert sizes[10_000] < sizes[10] + 16_000, sizes  # at most 2 * KEEP entries more, whatever n
    # The document itself is bounded (about KEEP entries), whatever the history.
    assert sizes[10_000] < 100_000


def test_reset_forgets_compacted_files_but_keeps_compacted_runs(root) -> None:
    from ingestion.lake.model import FileEntry

    store = StateStore(root, "pipe")
    held = store.acquire("src", "t", "r", T0, HOUR)
    runs = tuple(f"2026{i:010d}-run" for i in range(1000))
    files = {f"in/{i}.csv": FileEntry(10, 1, runs[i]) for i in range(1000)}
    store.release(store.commit(held, replace(held.state, committed_runs=runs, files=files)))
    assert store.read("src", "t").history.head is not None
    store.reset("src", "t", T0 + 2 * HOUR)
    after = StateStore(root, "pipe").read("src", "t")
    assert after is not None and after.files == {} and set(after.committed_runs) == set(runs)
