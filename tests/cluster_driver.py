"""Run by tests/test_spark_cluster.py as its own process (one SparkContext per JVM): prove the executors
cannot see the driver's temp folder, then run the pipeline on the Spark engine and print its outcome.

    python -m tests.cluster_driver <config.yml> <hidden folder>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ingestion.config import load_config
from ingestion.engines.spark.engine import SparkEngine, get_spark
from ingestion.run.pipeline import run_pipeline


def main(config: str, hidden: str) -> None:
    cfg = load_config(config)
    spark = get_spark(cfg.spark)
    marker = Path(hidden, "driver-only.txt")
    marker.write_text("the driver's disk\n")
    try:
        seen = spark.read.text("file://" + str(marker)).collect()
    except Exception:
        seen = None
    if seen is not None:
        raise SystemExit(f"executors can read {marker}: the cluster does not hide the driver's disk")
    master = spark.sparkContext.master
    report = run_pipeline(cfg, engine=SparkEngine(cfg.spark, spark))
    out = {
        "master": master,
        "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1,
        "ok": report.ok,
        "tables": {
            t.name: {
                "status": t.status,
                "rows_landed": t.rows_landed,
                "rows_rejected": t.rows_rejected,
                "error": t.error,
            }
            for t in report.tables
        },
    }
    print("REPORT=" + json.dumps(out))
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
