"""The comparison tools, one whole process per call: `python bench/tasks.py <task> …`.

    duckdb-copy  CSV OUT        DuckDB's own CSV → Parquet (types auto-detected): the near-floor
    duckdb-dedup CSV OUT        the same plus latest-row-per-key (QUALIFY row_number())
    spark-copy   CSV OUT        plain Spark CSV → Parquet (inferSchema), no CDC logic
    spark-dedup  CSV OUT        the same plus a row_number() window per key
    dlt-csv      CSV OUT        dlt, fastest path: pyarrow tables yielded from a resource → Parquet files
    dlt-merge    CSV DB         dlt, the same resource merged by key into a DuckDB file
    dlt-sql      URL OUT STATE  dlt sql_table (connectorx, 4 partitions) → Parquet; incremental on
                                updated_at, state kept in STATE (the first call is the full extract)

Each prints one line `rows=<n>` so the harness can check that the tool did the work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

KEY, CURSOR = "order_id", "updated_at"
# BENCH_SPARK_MASTER=local-cluster[2,1,1024]: scenario 6, two executor JVMs
SPARK_MASTER = os.environ.get("BENCH_SPARK_MASTER", "local[2]")


def duckdb_copy(csv: str, out: str, *, dedup: bool) -> int:
    import duckdb

    con = duckdb.connect()
    query = f"SELECT * FROM read_csv('{csv}')"
    if dedup:
        query += f" QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {CURSOR} DESC) = 1"
    Path(out).mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({query}) TO '{out}/part-0.parquet' (FORMAT parquet)")
    return int(con.execute(f"SELECT count(*) FROM '{out}/*.parquet'").fetchone()[0])  # type: ignore[index]


def spark_copy(csv: str, out: str, *, dedup: bool) -> int:
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    spark = (
        SparkSession.builder.master(SPARK_MASTER)
        .appName("bench-raw-spark")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    df = spark.read.option("header", True).option("inferSchema", True).csv(csv)
    if dedup:
        w = Window.partitionBy(KEY).orderBy(F.col(CURSOR).desc())
        df = df.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
    df.write.mode("overwrite").parquet(out)
    rows = spark.read.parquet(out).count()
    spark.stop()
    return rows


def _csv_resource(csv: str):  # type: ignore[no-untyped-def]
    import dlt
    import pyarrow.csv as pv

    @dlt.resource(name="orders", primary_key=KEY)
    def orders():  # type: ignore[no-untyped-def]
        reader = pv.open_csv(csv, read_options=pv.ReadOptions(block_size=64 << 20))
        yield from reader

    return orders


def dlt_csv(csv: str, out: str) -> int:
    import dlt
    from dlt.destinations import filesystem

    pipeline = dlt.pipeline(
        pipeline_name="bench_csv",
        pipelines_dir=str(Path(out) / "_pipelines"),
        destination=filesystem(bucket_url=str(Path(out) / "data")),
        dataset_name="bench",
    )
    info = pipeline.run(_csv_resource(csv), loader_file_format="parquet")
    info.raise_on_failed_jobs()
    return _parquet_rows(Path(out) / "data" / "bench" / "orders")


def dlt_merge(csv: str, db: str) -> int:
    import dlt
    import duckdb

    pipeline = dlt.pipeline(
        pipeline_name="bench_merge",
        pipelines_dir=str(Path(db).parent / "_pipelines"),
        destination=dlt.destinations.duckdb(db),
        dataset_name="bench",
    )
    resource = _csv_resource(csv)
    # dedup_sort: the latest updated_at wins among rows of one key in the same load, as in tidemark
    resource.apply_hints(
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns={CURSOR: {"dedup_sort": "desc"}},
    )
    info = pipeline.run(resource)
    info.raise_on_failed_jobs()
    con = duckdb.connect(db, read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM bench.orders").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def dlt_sql(url: str, out: str, state: str) -> int:
    import dlt
    from dlt.destinations import filesystem
    from dlt.sources.sql_database import sql_table

    table = sql_table(
        credentials=url,
        table="orders",
        backend="connectorx",
        backend_kwargs={"partition_on": KEY, "partition_num": 4},
        incremental=dlt.sources.incremental(CURSOR),
        reflection_level="full_with_precision",
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_sql",
        pipelines_dir=state,
        destination=filesystem(bucket_url=out),
        dataset_name="bench",
    )
    info = pipeline.run(table, loader_file_format="parquet")
    info.raise_on_failed_jobs()
    trace = pipeline.last_trace
    counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    return int(counts.get("orders", 0))


def _parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("*.parquet"))


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    task, args = argv[0], argv[1:]
    runners = {
        "duckdb-copy": lambda: duckdb_copy(*args, dedup=False),
        "duckdb-dedup": lambda: duckdb_copy(*args, dedup=True),
        "spark-copy": lambda: spark_copy(*args, dedup=False),
        "spark-dedup": lambda: spark_copy(*args, dedup=True),
        "dlt-csv": lambda: dlt_csv(*args),
        "dlt-merge": lambda: dlt_merge(*args),
        "dlt-sql": lambda: dlt_sql(*args),
    }
    if task not in runners:
        sys.exit(f"unknown task {task!r}; one of: {', '.join(runners)}")
    print(f"rows={runners[task]()}")


if __name__ == "__main__":
    main(sys.argv[1:])
