"""Rejected CSV rows on the Spark engine's executors: reasons, record indexes, line numbers, the write.

The driver only learns how many rows were rejected (by file, reason and column) and a capped sample: the
rows themselves are classified, numbered and written to the run's `_rejected/` folder by the executors.

- Reasons come from the same engine-neutral functions as on the driver (`ingestion.plan.rejects`), run
  as Python UDFs over the rejected rows only; the `ingestion` package is shipped to the executors
  (`ship_package`).
- A rejected row's record index in its file comes from its monotonically increasing id and a small map
  of per-(file, input partition) starts (`index_col`).
- Its physical line number comes from a read of the files with rejects as text lines: a line starts a
  record unless it is blank or inside a quoted field (quotes counted per line, escapes first removed);
  prefix counts within a partition come from a window, across partitions from a map the driver builds
  from per-partition totals (`record_lines`). UTF-16 files, whose lines a text read cannot split, are
  scanned whole by one task each with Python's csv module (`utf16_lines`).
- The functions the executors run (`plan.rejects`) need only the standard library there.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingestion.config import CsvOptions
from ingestion.contract import SOURCE_FILE
from ingestion.plan.rejects import (
    Dialect,
    content_start_lines,
    decode_line,
    structural_reject,
    type_reject,
)
from ingestion.sources.csv import decode_check

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RECORD = "_tidemark_record"
# Columns of a kept reject before it is numbered: file, monotonically increasing id, reason, column, raw.
CODE, REASON, COLUMN, RAW = "_reason_code", "_reason", "_column", "_raw"
SAMPLE = 20  # rejected rows per read group (structural) or file (type) that reach the driver as a sample

_shipped: set[str] = set()


def ship_package(spark: SparkSession) -> None:
    """Put the `ingestion` package on the executors' Python path (`SparkContext.addPyFile`), once per Spark
    application: the reasons of rejected rows are worked out there. A cluster that already has tidemark
    installed (Glue's `--additional-python-modules`) loses nothing; one that doesn't needs nothing more."""
    sc = spark.sparkContext
    app = sc.applicationId
    if app not in _shipped:
        sc.addPyFile(_package_zip())
        _shipped.add(app)


@functools.cache
def _package_zip() -> str:
    import ingestion

    root = Path(ingestion.__file__).parent
    folder = tempfile.mkdtemp(prefix="tidemark-pyfiles-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "tidemark_ingestion.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(root.rglob("*.py")):
            z.write(p, p.relative_to(root.parent).as_posix())
    return path


def reason_struct():
    from pyspark.sql.types import StringType, StructField, StructType

    return StructType([StructField(n, StringType()) for n in (CODE, REASON, RAW)])


def structural_udf(options: CsvOptions, raw_names: Sequence[str], width: int):
    """`plan.rejects.structural_reject` as a UDF over (corrupt, garbled, header, long, c0…): a struct of
    code, reason and raw text, null for a record read as it is."""
    from pyspark.sql import functions as F

    bound = functools.partial(structural_reject, Dialect.of(options), tuple(raw_names), width)
    return F.udf(bound, reason_struct())


def type_udf(types: dict[str, str], keys: Sequence[str], cursor: str | None):
    """`plan.rejects.type_reject` as a UDF over (column, value): a struct of code and reason."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    bound = functools.partial(type_reject, dict(types), tuple(keys), cursor)
    return F.udf(bound, StructType([StructField(CODE, StringType()), StructField(REASON, StringType())]))


def decode_udf(options: CsvOptions):
    """`plan.rejects.decode_line` in the file's encoding as a UDF over a line's bytes."""
    from pyspark.sql import functions as F

    return F.udf(functools.partial(decode_line, decode_check(options)), "string")


def index_col(starts: dict[tuple[str, int], tuple[int, int]]):
    """A row's 0-based record index in its file, from its id (`RECORD`) and the per-(file, partition)
    starts (`csv._partition_starts`): the first record's index there, plus the row's distance from the
    partition's smallest id."""
    from pyspark.sql import functions as F

    if not starts:
        return F.lit(None).cast("bigint")
    pairs: list[Any] = []
    for (file, part), (first, low) in starts.items():
        pairs += [F.lit(f"{part}\x00{file}"), F.lit(first - low)]
    key = F.concat_ws("\x00", F.shiftright(F.col(RECORD), 33).cast("string"), F.col(SOURCE_FILE))
    return F.create_map(*pairs)[key] + F.col(RECORD)


def _text_lines(spark: SparkSession, uris: dict[str, str], relpath: Any) -> DataFrame:
    """The files' physical lines: (SOURCE_FILE, `_id`, `_part`, value); ids in file order within a partition."""
    from pyspark.sql import functions as F

    text = spark.read.text(list(uris.values()))
    text = text.select(relpath.alias(SOURCE_FILE), F.monotonically_increasing_id().alias("_id"), "value")
    return text.withColumn("_part", F.shiftright(F.col("_id"), 33))


def _partition_key():
    from pyspark.sql import functions as F

    return F.concat_ws("\x00", F.col("_part").cast("string"), F.col(SOURCE_FILE))


def record_lines(
    spark: SparkSession, uris: dict[str, str], relpath: Any, options: CsvOptions
) -> tuple[DataFrame, DataFrame]:
    """(SOURCE_FILE, `_rec`, `_line`) per data record of the files (relpath → URI): the physical 1-based
    line it starts on, worked out on the executors; and the persisted per-line frame it comes from (for
    the caller to unpersist once the rejects are written).

    A line starts a record unless it is blank (no record for either engine) or starts inside a quoted
    field (multi-line records only: an odd count of quotes before it, escape sequences removed first).
    `relpath` maps `input_file_name()` to the file's relpath (`csv._relpath_col`).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    text = _text_lines(spark, uris, relpath)
    if options.multiline:
        body = F.col("value")
        if options.escape != options.quote:
            body = F.regexp_replace(body, re.escape(options.escape) + "(?s:.)", "")
        odd = (F.size(F.split(body, re.escape(options.quote), -1)) - 1) % 2
    else:
        odd = F.lit(0)
    flags = text.select(
        SOURCE_FILE,
        "_id",
        "_part",
        odd.cast("int").alias("_odd"),
        (F.col("value") == F.lit("")).cast("int").alias("_blank"),
    )
    before = (
        Window.partitionBy(SOURCE_FILE, "_part").orderBy("_id").rowsBetween(Window.unboundedPreceding, -1)
    )
    # Within the line's partition: the parity of the quotes before it, and the record starts before it
    # if the partition begins outside (_s0) or inside (_s1) a quoted field.
    flags = flags.withColumn("_par", F.coalesce(F.sum("_odd").over(before), F.lit(0)) % 2)
    starts_outside = (1 - F.col("_blank")) * (1 - F.col("_par"))
    starts_inside = (1 - F.col("_blank")) * F.col("_par")
    flags = (
        flags.withColumn("_s0", F.coalesce(F.sum(starts_outside).over(before), F.lit(0)))
        .withColumn("_s1", F.coalesce(F.sum(starts_inside).over(before), F.lit(0)))
        .persist()
    )
    totals = sorted(
        (str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]))
        for r in flags.groupBy(SOURCE_FILE, "_part")
        .agg(F.min("_id"), F.count(F.lit(1)), F.sum("_odd"), F.sum(starts_outside), F.sum(starts_inside))
        .collect()
    )
    # Per (file, partition), in file order: [parity entering it, lines before it less its smallest id,
    # records started before it].
    pairs: list[Any] = []
    state: dict[str, tuple[int, int, int]] = {}
    for file, p, low, n, odd_n, s0, s1 in totals:
        entering, lines, records = state.get(file, (0, 0, 0))
        pairs += [F.lit(f"{p}\x00{file}"), F.array(F.lit(entering), F.lit(lines - low), F.lit(records))]
        state[file] = ((entering + odd_n) % 2, lines + n, records + (s1 if entering else s0))
    info = F.create_map(*pairs)[_partition_key()]
    inside = (info[0] + F.col("_par")) % 2
    rec = info[2] + F.when(info[0] == 1, F.col("_s1")).otherwise(F.col("_s0")) - F.lit(int(options.header))
    numbered = flags.where((F.col("_blank") == 0) & (inside == 0)).select(
        SOURCE_FILE, rec.alias("_rec"), (info[1] + F.col("_id") + 1).alias("_line")
    )
    return numbered.where(F.col("_rec") >= 0), flags


def line_bytes(spark: SparkSession, uris: dict[str, str], relpath: Any, wanted: DataFrame) -> DataFrame:
    """(SOURCE_FILE, `_line`, `_bytes`): the raw bytes of the `wanted` (SOURCE_FILE, `_line`) lines (a few:
    undecodable records), from a text read whose line numbers come from its own per-partition counts."""
    from pyspark.sql import functions as F

    text = _text_lines(spark, uris, relpath)
    counts = sorted(
        (str(r[0]), int(r[1]), int(r[2]), int(r[3]))
        for r in text.groupBy(SOURCE_FILE, "_part").agg(F.min("_id"), F.count(F.lit(1))).collect()
    )
    pairs: list[Any] = []
    before: dict[str, int] = {}
    for file, p, low, n in counts:
        pairs += [F.lit(f"{p}\x00{file}"), F.lit(before.get(file, 0) - low)]
        before[file] = before.get(file, 0) + n
    line = F.create_map(*pairs)[_partition_key()] + F.col("_id") + 1
    lines = text.select(SOURCE_FILE, line.alias("_line"), F.col("value").cast("binary").alias("_bytes"))
    return lines.join(F.broadcast(wanted), [SOURCE_FILE, "_line"], "left_semi")


def utf16_lines(
    spark: SparkSession, uris: list[str], relpath: Any, wanted: DataFrame, options: CsvOptions
) -> DataFrame:
    """(SOURCE_FILE, `_rec`, `_line`) for the `wanted` (SOURCE_FILE, `_recs`) records of UTF-16 files,
    whose lines a text read cannot split: each file's bytes read whole by an executor (the binaryFile
    source, under 2 GiB) and scanned there with Python's csv module (`plan.rejects.content_start_lines`)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, LongType, StructField, StructType

    pairs = ArrayType(StructType([StructField("_rec", LongType()), StructField("_line", LongType())]))
    scan = F.udf(functools.partial(content_start_lines, Dialect.of(options)), pairs)
    content = (
        spark.read.format("binaryFile")
        .load(uris)
        .select(relpath(F.col("path")).alias(SOURCE_FILE), "content")
    )
    found = content.join(wanted, SOURCE_FILE).select(
        SOURCE_FILE, F.explode(scan("content", "_recs")).alias("_p")
    )
    return found.select(SOURCE_FILE, F.col("_p._rec").alias("_rec"), F.col("_p._line").alias("_line"))
