"""Run by tests/test_spark_cluster.py as its own process (one SparkContext per JVM, one cluster for the
module's runs): prove the executors cannot see the driver's temp folder, then run the pipeline on the Spark
engine once per request and print each outcome.

    python -m tests.cluster_driver <hidden folder>

Each stdin line is a request, `{"config": "<config.yml>", "env": {...}}` (the environment the run reads:
S3 endpoint and keys, the PostgreSQL password); each answer is one `REPORT=<json>` line on stdout. The
session is created from the first request's `spark` settings and stopped at the end of stdin.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ingestion.config import load_config
from ingestion.engines.spark.engine import SparkEngine, get_spark
from ingestion.run.pipeline import run_pipeline


def check_hidden(spark: Any, hidden: str) -> None:
    """Fail unless the executors cannot read a file in the driver's temp folder."""
    marker = Path(hidden, "driver-only.txt")
    marker.write_text("the driver's disk\n")
    try:
        seen = spark.read.text("file://" + str(marker)).collect()
    except Exception:
        seen = None
    if seen is not None:
        raise SystemExit(f"executors can read {marker}: the cluster does not hide the driver's disk")


def run(spark: Any, config: str) -> dict[str, Any]:
    cfg = load_config(config)
    report = run_pipeline(cfg, engine=SparkEngine(cfg.spark, spark))
    return {
        "master": spark.sparkContext.master,
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


def main(hidden: str) -> None:
    spark = None
    for line in sys.stdin:
        request = json.loads(line)
        os.environ.update(request.get("env", {}))
        if spark is None:
            spark = get_spark(load_config(request["config"]).spark)
            check_hidden(spark, hidden)
        print("REPORT=" + json.dumps(run(spark, request["config"])), flush=True)
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
