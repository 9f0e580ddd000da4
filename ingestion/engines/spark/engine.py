"""The Spark engine: AWS Glue 5 (Spark 3.5), EMR, any cluster, or local mode with Java 17/21.

Only Spark 3.5 APIs are used. Regexes go through the Column API (`rlike`), never through SQL text,
because Spark SQL string literals treat backslashes as escapes.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from ingestion.config import SparkConfig
from ingestion.engines.base import (
    CatalogBatch,
    CsvBatch,
    JdbcBatch,
    TombstoneBatch,
)
from ingestion.engines.spark.csv import _SparkCsv, land_csv_ops
from ingestion.engines.spark.jdbc import driver_conf, land_jdbc
from ingestion.errors import EngineError
from ingestion.plan.csv import LandedBatch

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings that make local Spark land exactly what the DuckDB engine lands.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.ansi.enabled": "false",
    # Unparseable dates are null (rejected by tidemark), not an exception about the legacy parser.
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}


def java_available() -> bool:
    """Is there a Java runtime Spark can start (JAVA_HOME or `java` on PATH)?"""
    home = os.environ.get("JAVA_HOME")
    return (
        bool(home and os.path.exists(os.path.join(home, "bin", "java"))) or shutil.which("java") is not None
    )


def master_chosen_by_launcher() -> bool:
    """Did spark-submit (or PYSPARK_SUBMIT_ARGS) choose the master? Then the config's must not replace it.

    spark-submit starts this Python with its JVM already running (PYSPARK_GATEWAY_PORT); a notebook or a
    wrapper passes `--master` in PYSPARK_SUBMIT_ARGS.
    """
    return (
        "PYSPARK_GATEWAY_PORT" in os.environ
        or "--master" in os.environ.get("PYSPARK_SUBMIT_ARGS", "").split()
    )


def get_spark(cfg: SparkConfig) -> SparkSession:
    """The session tidemark is given (Glue, spark-submit, a notebook), else a new one configured for it.

    `spark.master` from the config applies only when nothing else chose a master: under spark-submit
    (or with `spark.master` in spark-defaults.conf) the cluster's master wins, so an EMR or YARN job
    never runs on its driver alone.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError(
            "the spark engine needs pyspark, which is not installed",
            hint="pip install 'tidemark[spark]' (or `make demo ENGINE=spark`), or use --engine duckdb",
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not java_available():
        raise EngineError(
            "the spark engine needs Java 17 or 21, and none was found (JAVA_HOME unset, no `java` on PATH)",
            hint="apt-get install -y openjdk-17-jre-headless (Debian/Ubuntu), brew install openjdk@17 (macOS), "
            "or use --engine duckdb, which needs no Java",
        )
    from ingestion.config import DEFAULT_DRIVER_JAR

    builder = SparkSession.builder.appName(cfg.app_name)
    if not master_chosen_by_launcher():
        builder = builder.master(cfg.master)
    # The PostgreSQL driver is put on the classpath whenever it is installed: jars can't be added later.
    # Jars the config lists are added to it, not put in its place.
    conf = {**BASE_CONF, **cfg.conf}
    for key, value in driver_conf(DEFAULT_DRIVER_JAR).items():
        listed = [j for j in conf.get(key, "").split(",") if j]
        conf[key] = ",".join(listed if value in listed else [*listed, value])
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"


def use_s3a(spark: SparkSession) -> bool:
    """Let `s3://` URIs work where the cluster has no S3 filesystem of its own: through Hadoop's S3A.

    On Glue and EMR `s3://` is EMRFS (`fs.s3.impl` is set by the platform) and nothing is changed. With
    hadoop-aws on the classpath and no `fs.s3.impl`, `s3://` is mapped to S3A; an endpoint override in the
    environment (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`: MinIO, moto) is passed to S3A with path-style
    access and, for such stores, the environment's access keys. Returns whether `s3://` is readable.
    """
    from ingestion.lake.s3 import s3_endpoint

    sc: Any = spark.sparkContext
    hconf = sc._jsc.hadoopConfiguration()
    if hconf.get("fs.s3.impl") is None:
        try:
            sc._jvm.org.apache.spark.util.Utils.classForName(S3A, True, False)
        except Exception:
            return False  # no hadoop-aws: an S3 lake or inbox fails with Spark's own "No FileSystem" error
        hconf.set("fs.s3.impl", S3A)
    endpoint = s3_endpoint()
    chosen = sc.getConf()  # what the job's own settings say wins over the environment
    if endpoint and not chosen.contains("spark.hadoop.fs.s3a.endpoint"):
        hconf.set("fs.s3a.endpoint", endpoint)
        hconf.set("fs.s3a.path.style.access", "true")
        hconf.set("fs.s3a.connection.ssl.enabled", str(endpoint.startswith("https")).lower())
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret and not chosen.contains("spark.hadoop.fs.s3a.access.key"):
            hconf.set("fs.s3a.access.key", key)
            hconf.set("fs.s3a.secret.key", secret)
    return True


class SparkEngine:
    """Lands batches with Spark DataFrames; files are staged, then renamed to the run-id layout."""

    name = "spark"

    def __init__(self, cfg: SparkConfig, spark: SparkSession | None = None) -> None:
        self.spark = spark or get_spark(cfg)
        self.one_pass = cfg.one_pass
        # Whatever session we were handed, timestamps must be read and written in UTC.
        for key in (
            "spark.sql.session.timeZone",
            "spark.sql.parquet.outputTimestampType",
            "spark.sql.legacy.timeParserPolicy",
        ):
            self.spark.conf.set(key, BASE_CONF[key])
        use_s3a(self.spark)

    def close(self) -> None:
        # The session is shared (tests, Glue); stopping it is the caller's business.
        pass

    def land_csv(self, batch: CsvBatch) -> LandedBatch:
        """Land `batch.files` as one deduplicated set of Parquet files under `batch.target`."""
        return land_csv_ops(batch, _SparkCsv(self.spark, batch, one_pass=self.one_pass))

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch:
        """Land a PostgreSQL batch through Spark's JDBC reader; see `engines.spark.jdbc`."""
        return land_jdbc(self.spark, batch)

    def land_catalog(self, batch: CatalogBatch) -> LandedBatch:
        """A Glue catalog table's Parquet/JSON files; see `engines.spark.catalog`."""
        from ingestion.engines.spark.catalog import land_catalog

        return land_catalog(self.spark, batch)

    def land_tombstones(self, batch: TombstoneBatch) -> int:
        """Delete detection with the key anti-join on the executors; see `engines.spark.tombstones`."""
        from ingestion.engines.spark.tombstones import land_tombstones

        return land_tombstones(self.spark, batch)
