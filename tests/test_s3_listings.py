"""Issue 19: a run lists no prefix it does not need, counted at the wire (a proxy in front of moto)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone

import boto3
import pytest

from ingestion.config import parse_config
from ingestion.lake.layout import new_run_id
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

from .helpers import abandon_lease
from .s3_count_proxy import CountingProxy
from .test_s3_lake import GOOD, doc


@pytest.fixture
def proxy(s3_bucket: str, moto_endpoint: str, monkeypatch, tmp_path) -> Iterator[CountingProxy]:
    p = CountingProxy(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    import ingestion.engines.duckdb.common as duckdb_common
    from ingestion.lake import fs as lakefs
    from ingestion.lake import layout
    from ingestion.lake import s3 as lake_s3

    # test_catalog can leave a fake run date bound in the engine module (imported while it was patched).
    monkeypatch.setattr(duckdb_common, "partition_value", layout.partition_value)
    for mod in (lakefs, lake_s3):  # clients cached with the old endpoint
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()
    try:
        yield p
    finally:
        p.close()


def test_a_run_lists_the_inbox_without_its_archive_and_landing_once(proxy, s3_bucket) -> None:
    s3 = boto3.client("s3", endpoint_url=proxy.url)
    # A long-lived inbox: many processed files in archive/ and unprocessed/, two new drops.
    for n in range(30):
        s3.put_object(Bucket=s3_bucket, Key=f"drops/archive/2025/01/t_{n}.csv", Body=GOOD.encode())
        s3.put_object(Bucket=s3_bucket, Key=f"drops/unprocessed/2025/01/t_{n}.csv", Body=b"x")
    s3.put_object(Bucket=s3_bucket, Key="drops/t_1.csv", Body=GOOD.encode())
    s3.put_object(Bucket=s3_bucket, Key="drops/new/t_2.csv", Body=GOOD.replace("1,a", "7,g").encode())
    config = doc(f"s3://{s3_bucket}/drops", f"s3://{s3_bucket}/lake")
    config["sources"][0]["tables"][0]["pattern"] = "**/t_*.csv"
    config["catalog"] = {"glue_database": "landing_{source}"}
    cfg = parse_config(config)
    proxy.requests.clear()
    result = run_pipeline(cfg)
    assert result.ok and all(o.error is None for o in result.tables), [o.error for o in result.tables]
    lists = proxy.lists()
    prefixes = Counter(prefix for _, prefix in lists)
    # The inbox: never a listing of (or under) archive/ or unprocessed/.
    inbox = [p for p in prefixes if p.startswith("drops")]
    assert inbox and not any(p.startswith(("drops/archive", "drops/unprocessed")) for p in inbox), lists
    # Listings that would return archive/ and unprocessed/ keys are delimited, so they don't: at most
    # one listing of the inbox's top level, and one per other top-level folder.
    assert prefixes["drops/"] == 1, lists
    # landing/<table>, _rejected/<table> and _tmp/ are never listed to find orphans (the state names
    # dead runs); only the run's own partition folder is, to record the files it published.
    landing = [p for p in prefixes.elements() if p.startswith("lake/landing/s/t")]
    assert landing and all(p.startswith("lake/landing/s/t/_ingest_date=") for p in landing), lists
    assert len(landing) == 1, lists
    assert not [p for p in prefixes if p.startswith(("lake/_rejected", "lake/_tmp"))], lists
    # The commit recorded the run's files: the catalog registered them without a listing of its own.
    state = StateStore(f"s3://{s3_bucket}/lake", "p").read("s", "t")
    assert state is not None
    (run_id,) = state.committed_runs
    recorded = state.run_files[run_id]
    assert recorded and all(f.startswith("_ingest_date=") and f"part-{run_id}-" in f for f in recorded)
    landed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/landing/s/t/")["Contents"]}
    assert {f"lake/landing/s/t/{f}" for f in recorded} == landed


def test_a_dead_runs_leftovers_are_removed_by_name(proxy, s3_bucket) -> None:
    """A killed run's files, rejects and staging go without a listing of the table's folders."""
    s3 = boto3.client("s3", endpoint_url=proxy.url)
    s3.put_object(Bucket=s3_bucket, Key="drops/t_1.csv", Body=GOOD.encode())
    cfg = parse_config(doc(f"s3://{s3_bucket}/drops", f"s3://{s3_bucket}/lake"))
    assert run_pipeline(cfg).ok
    store = StateStore(f"s3://{s3_bucket}/lake", "p")
    dead = new_run_id(datetime.now(timezone.utc))
    day = f"{dead[:4]}-{dead[4:6]}-{dead[6:8]}"
    left = [
        f"lake/landing/s/t/_ingest_date={day}/part-{dead}-0.parquet",
        f"lake/_rejected/s/t/run_id={dead}/part-0.parquet",
        f"lake/_tmp/{dead}/s/t/part-00000.parquet",
    ]
    for key in left:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"left by a killed run")
    abandon_lease(store, "s", "t", dead)
    proxy.requests.clear()
    out = run_pipeline(cfg).tables[0]  # nothing new: the dead lease alone brings the table into a run
    assert out.error is None and out.orphans_removed == 1, out
    remaining = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/").get("Contents", [])}
    assert not set(left) & remaining
    state = store.read("s", "t")
    assert state is not None and state.abandoned_runs == () and state.lease is None
    prefixes = {prefix for _, prefix in proxy.lists()}
    assert "lake/landing/s/t/" not in prefixes and "lake/_rejected/s/t/" not in prefixes, prefixes
    assert "lake/_tmp/" not in prefixes, prefixes
