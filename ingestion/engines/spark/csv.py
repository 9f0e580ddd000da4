"""The Spark engine's CSV steps: the shared CSV flow's operations on Spark DataFrames."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import reduce
from typing import TYPE_CHECKING, Any

from ingestion.config import CsvOptions
from ingestion.contract import PARTITION_COLUMN, SOURCE_FILE
from ingestion.engines.base import (
    CsvBatch,
    FileRead,
    OnePass,
    Written,
    land_csv_files,
    landed_type,
)
from ingestion.engines.spark.common import (
    SQL_TYPES,
    dedup_window,
    metadata_columns,
    observation_name,
    spark_uri,
    staged_files,
    write_observed,
)
from ingestion.engines.spark.rejects import (
    CODE,
    COLUMN,
    RAW,
    REASON,
    RECORD,
    SAMPLE,
    decode_udf,
    index_col,
    line_bytes,
    record_lines,
    ship_package,
    structural_udf,
    type_udf,
    utf16_lines,
)
from ingestion.errors import EngineError
from ingestion.formats import to_java_pattern
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import lake_scratch, partition_value, publish_staged
from ingestion.lake.rejected import rejected_dir
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.normalize import (
    COLUMN_BATCH,
    DECIMAL,
    SAMPLE_ROWS,
    STRING,
    ColumnStats,
    TypePlan,
    TypeRule,
    ValueCheck,
    accepted_rules,
    candidate_rules,
    column_batches,
    fit_rules,
    unpack_rule_counts,
    with_lower_bounds,
)
from ingestion.plan.rejects import (
    INVALID_ENCODING,
    MAX_LINE_BYTES,
    RAW_LIMIT,
    REPLACEMENT_CHAR,
    UNCLOSED,
    KeptRejects,
    Reject,
    check_order,
)
from ingestion.sources.csv import decodes_cleanly, has_crlf
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Spark's names for the encodings the config allows.
SPARK_CHARSETS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "latin-1": "iso-8859-1", "utf-16": "utf-16"}
CORRUPT = "_tidemark_corrupt"
# Spark's null string, set to one no field holds: unquoted empty fields are null, quoted "" stay "".
NO_NULL = "\x00tidemark-no-null\x00"
SAMPLE_RAW = 200  # characters of a sampled rejected record's text the driver keeps


def parse_col(c: str, rule: TypeRule):
    """Text column `c` as `rule`'s type, or null when it doesn't parse."""
    from pyspark.sql import functions as F

    col = F.col(quote_spark(c))
    if rule.fmt:
        pattern = to_java_pattern(rule.fmt)
        if rule.name == "date":
            return F.to_date(col, pattern)
        if rule.name == "timestamp":
            return F.to_timestamp_ntz(col, F.lit(pattern))
        return F.to_timestamp(col, pattern)
    return F.expr(f"try_cast({quote_spark(c)} AS {SQL_TYPES[rule.name]})")


def rule_ok_col(c: str, rule: TypeRule):
    """True when text column `c` matches `rule`'s pattern and parses as its type.

    Spark's AND stops at the first false side: the length bounds (cheap) spare most values the regex,
    the regex spares most the parse.
    """
    from pyspark.sql import functions as F

    col = F.col(quote_spark(c))
    low, high = rule.lengths
    fits_length = F.length(col).between(low, high) if high else F.length(col) >= low
    return fits_length & col.rlike(f"^(?:{rule.pattern})$") & parse_col(c, rule).isNotNull()


def fits_col(c: str, target: str, rules: dict[str, TypeRule], *, key: bool = False):
    """True when text column `c` is null or a value a `target` column takes (pattern and parse).

    A `key` column must also hold a value: a null or empty key is never landed.
    """
    from pyspark.sql import functions as F

    col = F.col(quote_spark(c))
    present = col.isNotNull() & (col != F.lit(""))
    if target == STRING:
        return present if key else F.lit(True)
    alts = [rule_ok_col(c, rules[n]) for n in accepted_rules(target) if n in rules]
    if key:
        return present & reduce(lambda a, b: a | b, alts)
    # An empty string in a typed column is its null: a number or a time has no empty value.
    return col.isNull() | (col == F.lit("")) | reduce(lambda a, b: a | b, alts)


def cast_col(c: str, target: str, rules: dict[str, TypeRule], zone: str | None):
    """Text column `c` cast to its landed type; naive times read in `zone` land as UTC instants."""
    from pyspark.sql import functions as F

    if target == STRING:
        return F.col(quote_spark(c))
    expr = parse_col(c, rules[target])
    if rules[target].fmt is None and target == "timestamp" and "date" in rules and rules["date"].fmt:
        expr = F.coalesce(expr, parse_col(c, rules["date"]).cast("timestamp_ntz"))
    if target == "timestamp" and zone:
        # the wall clock as if UTC (the session zone), then shifted from `zone` to UTC
        return F.to_utc_timestamp(expr.cast("timestamp"), zone)
    return expr.cast(SQL_TYPES[target])


class _SparkCsv:
    """The CSV steps of one batch: the files of one header layout read together as one DataFrame of text
    columns (the file's relpath a column), cached once while the batch lands."""

    def __init__(self, spark: SparkSession, batch: CsvBatch, *, one_pass: bool = True) -> None:
        self.spark, self.batch, self.one_pass = spark, batch, one_pass
        # The batch's header layouts (files, raw header, names, CRLF records) for the one-pass landing.
        self.layouts: list[tuple[list[FileFacts], list[str], list[str], bool]] = []
        self.frames: dict[str, DataFrame] = {}  # file → its accepted rows (a filter over its group's cache)
        self.cached: list[DataFrame] = []  # one per group of files read together
        self.group_of: dict[str, int] = {}  # file → its group (an index into `cached`)
        self.names: dict[str, list[str]] = {}
        self.accepted: dict[str, int] = {}  # rows read and kept (less type rejects, once checked)
        self.good: list[DataFrame] = []  # per group: its accepted rows
        self.base: dict[str, DataFrame] = {}  # file → its accepted rows as read (`frames` until changed)
        # group → (file, partition) → (index in the file of its first record there, its smallest id)
        self.starts: dict[int, dict[tuple[str, int], tuple[int, int]]] = {}
        self.facts: dict[str, FileFacts] = {}
        # Rejected rows held on the executors until `keep_rejects` writes them: per group a frame, per file
        # counts by (code, column), per group a capped sample the driver has.
        self.kept: list[tuple[int, DataFrame]] = []
        self.kept_totals: dict[str, Counter] = {}  # files with kept rejects → their counts
        self.samples: dict[int, list[Reject]] = {}
        self.persisted: list[DataFrame] = []  # reject frames, unpersisted with the caches

    def close(self) -> None:
        for df in [*self.cached, *self.persisted]:
            df.unpersist()
        lakefs.remove_tree(self.batch.lake_staging)
        lakefs.remove_tree(self.batch.lake_text_copies)

    def record_index(self, relpath: str, mono_id: int) -> int:
        """The 0-based record index in the file of a row's monotonically increasing id."""
        first, low = self._starts(self.group_of[relpath])[(relpath, mono_id >> 33)]
        return first + mono_id - low

    def read_files(self, files: list[tuple[FileFacts, list[str], list[str]]]) -> dict[str, FileRead]:
        """Files of the same header layout (and line ending, when records span lines) in one read."""
        ship_package(self.spark)  # the passes: rejected rows get their reasons on the executors
        out: dict[str, FileRead] = {}
        for members, raw_names, names, crlf in self._layouts(files):
            out.update(self._read_group(members, raw_names, names, crlf=crlf))
        return out

    def _frame(
        self, files: list[FileFacts], raw_names: list[str], names: list[str], *, crlf: bool
    ) -> tuple[DataFrame, list[Any], Any, Any, Any]:
        """The files read as text columns `c0…` (and the corrupt record, the row's file): the named
        columns (null tokens mapped) and three flags: a value with U+FFFD, the header line repeated, a
        record longer than DuckDB takes."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType, StructField, StructType

        o = self.batch.options
        positional = [f"c{k}" for k in range(len(names))]
        schema = StructType([StructField(c, StringType()) for c in [*positional, CORRUPT]])
        uris = [spark_uri(f.path) for f in files]
        df = (
            self.spark.read.schema(schema)
            .option("header", o.header)
            .option("sep", o.delimiter)
            .option("quote", o.quote)
            .option("escape", o.escape)
            .option("encoding", SPARK_CHARSETS.get(o.encoding, o.encoding))
            .option("multiLine", o.multiline)
            .options(**({"lineSep": "\r\n"} if crlf else {}))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .option("unescapedQuoteHandling", "RAISE_ERROR")
            .option("maxCharsPerColumn", -1)
            .option("enforceSchema", True)
            # PostgreSQL COPY: an unquoted empty field is null, a quoted "" the empty string.
            .option("nullValue", NO_NULL)
            .option("emptyValue", "")
            .csv(uris)
        )
        # Each row's file, by the URI Spark opened it through, as the file's relpath.
        df = df.withColumn(SOURCE_FILE, _relpath_col(self.spark, F.input_file_name(), files))
        cols = []
        for k, c in enumerate(names):
            col = F.col(positional[k])
            tokens = [v for v in o.null_values if v]  # other tokens match quoted or not (as on DuckDB)
            if tokens:
                col = F.when(col.isin(tokens), F.lit(None).cast("string")).otherwise(col)
            cols.append(col.alias(c))
        # A value holding U+FFFD came from bytes the decoder couldn't read (DuckDB refuses those rows),
        # unless every byte of the file is valid: then it is a real U+FFFD character, and lands. Which of
        # the two is decided by the caller, only for a file where such a value turns up.
        garbled = (
            F.lit(False)
            if not positional
            else F.array_contains(
                F.transform(
                    F.array(*[F.col(p) for p in positional]),
                    lambda v: F.coalesce(v.contains(REPLACEMENT_CHAR), F.lit(False)),
                ),
                True,
            )
        )
        # The header line again mid-file (concatenated exports): rejected, so it types nothing.
        repeated = (
            F.array(
                # the first field may carry the byte-order mark of a concatenated file's own header
                F.regexp_replace(F.coalesce(F.col(positional[0]), F.lit("")), "^\ufeff", ""),
                *[F.coalesce(F.col(p), F.lit("")) for p in positional[1:]],
            )
            == F.array(*[F.lit(n) for n in raw_names])
            if o.header and positional
            else F.lit(False)
        )
        # DuckDB refuses a record longer than MAX_LINE_BYTES (line_too_long); Spark reads it: flag it.
        record_text = F.coalesce(F.col(CORRUPT), F.concat_ws(o.delimiter, *[F.col(p) for p in positional]))
        too_long = F.octet_length(record_text) > F.lit(MAX_LINE_BYTES)
        return df, cols, garbled, F.coalesce(repeated, F.lit(False)), too_long

    def _read_group(
        self, files: list[FileFacts], raw_names: list[str], names: list[str], *, crlf: bool
    ) -> dict[str, FileRead]:
        from pyspark.sql import functions as F

        o = self.batch.options
        df, cols, garbled, repeated, too_long = self._frame(files, raw_names, names, crlf=crlf)
        # File order survives in the monotonically increasing id: (partition << 33) + row in partition,
        # a file's partitions ordered by its offsets, its rows contiguous within one. Record indexes are
        # worked out from it (and per-(file, partition) counts) only for rejects.
        df = df.withColumn(RECORD, F.monotonically_increasing_id())
        if o.multiline:
            unclosed = unbalanced_quotes(self.spark, files, o)
            if unclosed:
                # Spark reads an unclosed quote to the end of the file without complaint; DuckDB refuses
                # the record that opened it. That record is the file's last one: it swallowed the rest.
                lasts = [
                    int(r[0])
                    for r in df.where(F.col(SOURCE_FILE).isin(unclosed))
                    .groupBy(SOURCE_FILE)
                    .agg(F.max(RECORD))
                    .select(F.col(f"max({RECORD})"))
                    .collect()
                ]
                df = df.withColumn(
                    CORRUPT,
                    F.when(F.col(RECORD).isin(lasts), F.lit(UNCLOSED)).otherwise(F.col(CORRUPT)),
                )
        df = df.select(
            *cols,
            F.col(SOURCE_FILE),
            F.col(RECORD),
            F.col(CORRUPT),
            garbled.alias("_garbled"),
            repeated.alias("_header"),
            too_long.alias("_long"),
        ).persist()
        group = len(self.cached)
        self.cached.append(df)  # unpersisted when the batch is done
        for f in files:
            self.group_of[f.relpath] = group
            self.facts[f.relpath] = f
        ok = F.col(CORRUPT).isNull() & ~F.col("_garbled") & ~F.col("_header") & ~F.col("_long")
        flagged = {
            r[0]: (int(r[1]), int(r[2]), int(r[3]))
            for r in df.groupBy(SOURCE_FILE)
            .agg(
                F.count(F.when(ok, F.lit(1))),
                F.count(F.when(~ok, F.lit(1))),
                F.count(F.when(F.col("_garbled"), F.lit(1))),
            )
            .collect()
        }
        # A file whose every byte is valid: its U+FFFD values are real characters, and their rows are read.
        clean = self._clean_files([f for f in files if flagged.get(f.relpath, (0, 0, 0))[2]])
        if clean:
            df = df.withColumn("_garbled", F.col("_garbled") & ~F.col(SOURCE_FILE).isin(clean))
        counts = {f.relpath: flagged.get(f.relpath, (0, 0, 0))[0] for f in files}
        kept: dict[str, Counter] = {f.relpath: Counter() for f in files}
        good = df.where(ok)
        if any(flagged.get(f.relpath, (0, 0, 0))[1] for f in files):
            # Reasons on the executors, for the flagged rows only (a too-long record's text capped first).
            capped = [
                F.when(F.col("_long"), F.substring(F.col(c), 1, RAW_LIMIT)).otherwise(F.col(c))
                for c in [CORRUPT, *names]
            ]
            why = structural_udf(o, raw_names, len(names))(
                capped[0], "_garbled", "_header", "_long", *capped[1:]
            )
            classified = df.where(~ok).select(SOURCE_FILE, RECORD, why.alias("_why")).persist()
            self.persisted.append(classified)
            read_as_is = 0
            for r in classified.groupBy(SOURCE_FILE, F.col("_why")[CODE]).count().collect():
                if r[1] is None:  # a trailing delimiter: read as it is
                    counts[r[0]] += int(r[2])
                    read_as_is += int(r[2])
                else:
                    kept[r[0]][(r[1], None)] += int(r[2])
            if read_as_is:
                tolerated = classified.where(F.col("_why").isNull()).select(RECORD)
                good = good.unionByName(df.where(~ok).join(tolerated, RECORD, "left_semi"))
            rejected = classified.where(F.col("_why").isNotNull()).select(
                SOURCE_FILE,
                RECORD,
                F.col("_why")[CODE].alias(CODE),
                F.col("_why")[REASON].alias(REASON),
                F.lit(None).cast("string").alias(COLUMN),
                F.col("_why")[RAW].alias(RAW),
            )
            self._keep(group, rejected, kept)
        good = good.drop(CORRUPT, "_garbled", "_header", "_long")
        self.good.append(good)
        out = {}
        for f in files:
            self.frames[f.relpath] = self.base[f.relpath] = good.where(F.col(SOURCE_FILE) == F.lit(f.relpath))
            self.names[f.relpath] = names
            self.accepted[f.relpath] = counts[f.relpath]
            sample = tuple(r for r in self.samples.get(group, ()) if r.file == f.relpath)
            out[f.relpath] = FileRead(self.accepted[f.relpath], KeptRejects(kept[f.relpath], sample))
        return out

    def _clean_files(self, garbled: list[FileFacts]) -> list[str]:
        """Of files with values holding U+FFFD, those whose every byte is valid in their encoding. UTF-8
        files are checked by the executors (a line's bytes against their decoding); others on the driver."""
        from pyspark.sql import functions as F

        o = self.batch.options
        if not garbled:
            return []
        if o.encoding not in ("utf-8", "utf-8-sig"):
            return [f.relpath for f in garbled if decodes_cleanly(f.path, o)]
        text = self.spark.read.text([spark_uri(f.path) for f in garbled])
        relpath = _relpath_col(self.spark, F.input_file_name(), garbled)
        invalid = F.col("value").cast("binary") != F.encode(F.col("value"), "UTF-8")
        bad = {
            r[0]
            for r in text.groupBy(relpath.alias(SOURCE_FILE))
            .agg(F.count(F.when(invalid, F.lit(1))))
            .collect()
            if int(r[1])
        }
        return [f.relpath for f in garbled if f.relpath not in bad]

    def _keep(self, group: int, rejected: DataFrame, counts: dict[str, Counter]) -> None:
        """Hold a group's rejected rows (written by `keep_rejects`) and take a capped sample of them."""
        if not any(counts.values()):
            return
        self.kept.append((group, rejected))
        for f, c in counts.items():
            if c:
                self.kept_counts(f).update(c)
        rows = rejected.orderBy(RECORD).limit(SAMPLE).collect()
        self.samples.setdefault(group, []).extend(
            Reject(
                r[SOURCE_FILE],
                self.record_index(r[SOURCE_FILE], int(r[RECORD])),
                r[CODE],
                r[REASON],
                r[COLUMN],
                (r[RAW] or "")[:SAMPLE_RAW],
            )
            for r in rows
        )

    def stats(self, f: FileFacts, rules: tuple[TypeRule, ...]) -> dict[str, ColumnStats]:
        names, df = self.names[f.relpath], self.frames[f.relpath]
        if not names:
            return {}
        every = dict.fromkeys(names, rules)
        if self.accepted[f.relpath] <= SAMPLE_ROWS:
            return _rule_counts(df, every)
        sample = _rule_counts(df.limit(SAMPLE_ROWS), every)
        exact = [self.batch.cursor] if self.batch.cursor else []
        return with_lower_bounds(_rule_counts(df, candidate_rules(sample, rules, exact)), rules)

    def type_rejects(self, f: FileFacts, plan: TypePlan, rules: tuple[TypeRule, ...]) -> KeptRejects:
        """The rows whose values don't fit the plan, kept on the executors (reasons there too): only their
        counts by (code, column) and a sample reach the driver."""
        from pyspark.sql import functions as F

        names, df = self.names[f.relpath], self.frames[f.relpath]
        keys, cursor = self.batch.primary_key, self.batch.cursor
        fits = {
            c: fits_col(c, plan.types[c], fit_rules(rules, declared=c in self.batch.declared), key=c in keys)
            for c in names
        }
        order = check_order(names, keys, cursor)
        first_bad = F.coalesce(*[F.when(~fits[c], F.lit(c)) for c in order], F.lit(None).cast("string"))
        # A flat coalesce, not a chain of ANDs: expression depth must not grow with the column count.
        marked = df.withColumn("_bad_column", first_bad)
        self.frames[f.relpath] = marked.where(F.col("_bad_column").isNull()).drop("_bad_column")
        value = F.create_map(*[x for c in names for x in (F.lit(c), F.col(quote_spark(c)))])[
            F.col("_bad_column")
        ]
        why = type_udf(plan.types, keys, cursor)(F.col("_bad_column"), value)
        raw = F.concat_ws(
            self.batch.options.delimiter, *[F.coalesce(F.col(quote_spark(c)), F.lit("")) for c in names]
        )
        rejected = (
            marked.where(F.col("_bad_column").isNotNull())
            .select(
                SOURCE_FILE,
                RECORD,
                why[CODE].alias(CODE),
                why[REASON].alias(REASON),
                F.col("_bad_column").alias(COLUMN),
                raw.alias(RAW),
            )
            .persist()
        )
        self.persisted.append(rejected)
        counts: Counter = Counter()
        for r in rejected.groupBy(CODE, COLUMN).count().collect():
            counts[(r[0], r[1])] += int(r[2])
        self.accepted[f.relpath] -= sum(counts.values())
        group = self.group_of[f.relpath]
        before = len(self.samples.get(group, []))
        self._keep(group, rejected, {f.relpath: counts})
        return KeptRejects(counts, tuple(self.samples.get(group, [])[before:]))

    def _layouts(
        self, files: list[tuple[FileFacts, list[str], list[str]]]
    ) -> list[tuple[list[FileFacts], list[str], list[str], bool]]:
        """Files of the same header layout (and line ending, when records span lines): read together."""
        o = self.batch.options
        groups: dict[tuple, list[FileFacts]] = {}
        headers: dict[tuple, tuple[list[str], list[str]]] = {}
        for f, raw_names, names in files:
            # Spark's own line-ending detection rewrites \r\n inside a quoted field of a Windows file to
            # \n; told the file's line ending, it keeps the value as the file has it (so does DuckDB).
            crlf = o.multiline and has_crlf(f.path)
            key = (tuple(raw_names), tuple(names), crlf)
            groups.setdefault(key, []).append(f)
            headers[key] = (raw_names, names)
        return [(members, *headers[key], key[2]) for key, members in groups.items()]

    def sample_stats(
        self, files: list[tuple[FileFacts, list[str], list[str]]]
    ) -> dict[str, dict[str, ColumnStats]] | None:
        """Every rule's statistics over each file's first rows (its first split only), for
        `write_checked`: none cached, nothing else read. Not for UTF-16 files (a text read can't split
        them), a batch of more than `ONE_PASS_FILES` files (one count per file in the write's job), a file
        of more than `COLUMN_BATCH` columns (the passes check them a batch of columns at a time), or
        records spanning lines with a quote left open (the passes reject the record that opened it)."""
        from pyspark.sql import functions as F

        o = self.batch.options
        if not self.one_pass or o.encoding == "utf-16" or not files or len(files) > ONE_PASS_FILES:
            return None
        if any(len(names) > COLUMN_BATCH for _, _, names in files):
            return None  # a wide file: its checks in one job's plan would exhaust the driver's heap
        if self.batch.file_columns:  # a catalog table's partition values: the passes add them
            return None
        if o.multiline and unbalanced_quotes(self.spark, [f for f, _, _ in files], o):
            return None
        self.layouts = self._layouts(files)
        rules = self.batch.rules
        out: dict[str, dict[str, ColumnStats]] = {}
        for members, raw_names, names, crlf in self.layouts:
            for f in members:
                df, cols, garbled, repeated, too_long = self._frame([f], raw_names, names, crlf=crlf)
                ok = F.col(CORRUPT).isNull() & ~garbled & ~repeated & ~too_long
                sample = df.where(ok).select(*cols).limit(SAMPLE_ROWS)
                out[f.relpath] = _rule_counts_long(sample, names, rules) if names else {}
        return out

    def write_checked(
        self,
        files: list[FileFacts],
        columns: list[str],
        plan: TypePlan,
        checks: dict[str, dict[str, ValueCheck]],
    ) -> OnePass | None:
        """`write` in one read of the files (no cache), every value checked on its way: a record Spark
        finds malformed (or too long, or with undecodable bytes, or the header again) or a value its
        file's `checks` refuse fails the job (`raise_error`, nothing published), and the passes run.

        The checks guard the key (or the first column), which every row computes before the dedup's
        shuffle; rows per file (and kept under a lower bound) are counted by an observation of the same
        job. A lower bound is the dedup order's first term, not a filter under the checks.
        """
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        batch, o = self.batch, self.batch.options
        bounded = bool(batch.lower_bound and batch.cursor)
        if bounded and not batch.primary_key:
            return None
        rules = {r.name: r for r in batch.rules}
        zone = o.timezone
        guarded = batch.primary_key[0] if batch.primary_key else columns[0]
        if any(guarded not in names for _, _, names, _ in self.layouts):
            return None  # a file without the key column: the passes decide about its rows
        fail = F.raise_error(F.lit(_CHECK_FAILED))
        frames = []
        for members, raw_names, names, crlf in self.layouts:
            df, cols, garbled, repeated, too_long = self._frame(members, raw_names, names, crlf=crlf)
            named = df.select(
                *cols,
                F.col(SOURCE_FILE),
                # malformed, the header again, longer than DuckDB takes, a value with U+FFFD (an
                # undecodable byte, or a real character the passes decide about)
                (F.col(CORRUPT).isNotNull() | garbled | repeated | too_long).alias("_bad"),
            )

            # Each column's checks in its own expression (a small generated method each); the row's own
            # flag guards the key. Every column is computed for every row before the dedup's shuffle.
            typed = []
            for c in columns:
                if c not in names:
                    continue
                ok = _checks_of(members, checks, [c])
                if c == guarded:  # and the row's own flag, and the columns not written (no value yet)
                    ok = (
                        ~F.col("_bad")
                        & ok
                        & _checks_of(members, checks, [n for n in names if n not in columns])
                    )
                typed.append(F.when(ok, cast_col(c, plan.types[c], rules, zone)).otherwise(fail).alias(c))
            frames.append(named.select(*typed, F.col(SOURCE_FILE)))
        raw = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
        typed_all = raw.select(*[F.col(quote_spark(c)) for c in columns], F.col(SOURCE_FILE))
        ctype = landed_type(plan.types[batch.cursor], zone) if batch.cursor else ""
        keep = F.lit(True)
        if bounded:
            assert batch.lower_bound and batch.cursor
            bound = F.lit(batch.lower_bound.value).cast(SQL_TYPES[ctype])
            keep = F.col(quote_spark(batch.cursor)).isNull() | (F.col(quote_spark(batch.cursor)) >= bound)
            typed_all = typed_all.withColumn(_KEEP, keep)
        observed = Observation(observation_name("read"))
        counts = [
            F.count(F.when(F.col(SOURCE_FILE) == F.lit(f.relpath), F.lit(1))).alias(f"f{k}")
            for k, f in enumerate(files)
        ]
        counts.append(F.count(F.when(keep, F.lit(1))).alias("kept"))
        typed_all = typed_all.observe(observed, *counts)
        if batch.primary_key:
            w = dedup_window(batch.primary_key, batch.cursor, columns, first=_KEEP if bounded else None)
            winners = F.col("_rn") == 1
            if bounded:
                winners = winners & F.col(_KEEP)
            typed_all = typed_all.withColumn("_rn", F.row_number().over(w)).where(winners)
        out = typed_all.select(
            *[F.col(quote_spark(c)) for c in columns],
            *metadata_columns(batch.run_id, batch.ingested_at, source_file=True),
        ).withColumn(PARTITION_COLUMN, F.lit(partition_value(batch.ingested_at)))
        staging = batch.lake_staging
        try:
            rows_landed, max_cursor = write_observed(out, spark_uri(staging), batch.cursor, ctype, "written")
        except Exception as exc:
            if _CHECK_FAILED not in str(exc):
                raise
            lakefs.remove_tree(staging)
            return None
        got = observed.get
        read = {f.relpath: int(got[f"f{k}"]) for k, f in enumerate(files)}
        staged_files(staging, rows_landed, batch.name)
        files_out = publish_staged(staging, batch.target, batch.run_id)
        return OnePass(read, Written(int(got["kept"]), rows_landed, max_cursor, tuple(files_out)))

    def keep_rejects(self) -> None:
        """Write the batch's rejected rows (every read group's and file's) to the run's `_rejected/` folder
        from the executors: record indexes and line numbers worked out there, then one write, published
        like landed files. The rows written must be the rows counted."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        if not self.kept:
            return
        batch, o = self.batch, self.batch.options
        frames = [df.withColumn("_record", index_col(self._starts(group))) for group, df in self.kept]
        rejects = reduce(lambda a, b: a.unionByName(b), frames)
        files = [self.facts[r] for r in sorted(self.kept_totals)]
        lines = self._lines(files, rejects).withColumnRenamed(SOURCE_FILE, "_f")
        joined = rejects.join(
            lines, (F.col(SOURCE_FILE) == F.col("_f")) & (F.col("_record") == F.col("_rec")), "left"
        ).drop("_f", "_rec")
        if any(c == INVALID_ENCODING for f in files for (c, _) in self.kept_counts(f.relpath)):
            # An undecodable record keeps its bytes: the line as read, bad bytes escaped (`caf\xe9`).
            wanted = joined.where(F.col(CODE) == F.lit(INVALID_ENCODING)).select(SOURCE_FILE, "_line")
            readable = [f for f in files if o.encoding != "utf-16"]
            if readable:
                uris = {f.relpath: spark_uri(f.path) for f in readable}
                relpath = _relpath_col(self.spark, F.input_file_name(), readable)
                found = line_bytes(self.spark, uris, relpath, wanted).withColumnRenamed(SOURCE_FILE, "_f")
                joined = (
                    joined.join(
                        found,
                        (F.col(SOURCE_FILE) == F.col("_f")) & (joined["_line"] == found["_line"]),
                        "left",
                    )
                    .drop("_f")
                    .drop(found["_line"])
                )
                decode = decode_udf(o)
                joined = joined.withColumn(
                    RAW,
                    F.when(F.col("_bytes").isNotNull(), decode(F.col("_bytes"))).otherwise(F.col(RAW)),
                ).drop("_bytes")
        at = batch.ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f")
        out = joined.select(
            F.col(SOURCE_FILE).alias("_source_file"),
            (F.col("_line") + F.lit(batch.skip_lines)).cast("bigint").alias("_line"),
            F.col("_record").cast("bigint").alias("_record"),
            F.col(CODE).alias("_reason_code"),
            F.col(REASON).alias("_reason"),
            F.col(COLUMN).alias("_column"),
            F.substring(F.col(RAW), 1, RAW_LIMIT).alias("_raw"),
            F.lit(batch.run_id).alias("_run_id"),
            F.lit(at).cast("timestamp").alias("_rejected_at"),
        ).orderBy("_source_file", "_line", "_record")
        staging = lakefs.join(
            lake_scratch(batch.lake_root, batch.run_id), "_rejected", batch.source, batch.table
        )
        observed = Observation(observation_name("rejected"))
        out.observe(observed, F.count(F.lit(1)).alias("rows")).write.mode("overwrite").parquet(
            spark_uri(staging)
        )
        rows = int(observed.get["rows"])
        expected = sum(sum(self.kept_counts(f.relpath).values()) for f in files)
        if rows != expected:
            raise EngineError(
                f"{batch.name}: {expected} rejected rows counted but {rows} written to _rejected/",
                hint="this is a tidemark bug: please report it with the files",
            )
        staged_files(staging, rows, f"{batch.name} rejected rows")
        publish_staged(
            staging, rejected_dir(batch.lake_root, batch.source, batch.table, batch.run_id), batch.run_id
        )

    def kept_counts(self, relpath: str) -> Counter:
        return self.kept_totals.setdefault(relpath, Counter())

    def _starts(self, group: int) -> dict[tuple[str, int], tuple[int, int]]:
        if group not in self.starts:  # one pass over the group's cache, only for groups with rejects
            self.starts[group] = _partition_starts(self.cached[group])
        return self.starts[group]

    def _lines(self, files: list[FileFacts], rejects: DataFrame) -> DataFrame:
        """(SOURCE_FILE, `_rec`, `_line`) for the records of files with rejects, on the executors: from a
        text read split across tasks, or for UTF-16 files (a text read cannot split their lines) a scan
        of each file's bytes by one task."""
        from pyspark.sql import functions as F

        o = self.batch.options

        def relpath(uri_col: Any) -> Any:
            return _relpath_col(self.spark, uri_col, files)

        if o.encoding == "utf-16":
            wanted = rejects.groupBy(SOURCE_FILE).agg(F.collect_list("_record").alias("_recs"))
            return utf16_lines(self.spark, [spark_uri(f.path) for f in files], relpath, wanted, o)
        uris = {f.relpath: spark_uri(f.path) for f in files}
        numbered, flags = record_lines(self.spark, uris, relpath(F.input_file_name()), o)
        self.persisted.append(flags)
        return numbered

    def write(self, files: list[FileFacts], columns: list[str], plan: TypePlan) -> Written:
        from pyspark.sql import functions as F

        batch = self.batch
        rules = {r.name: r for r in batch.rules}
        zone = batch.options.timezone
        # Files whose rows are their group's accepted rows as read: one filter per group, not one per file.
        plain: dict[int, list[str]] = {}
        frames = []
        for f in files:
            if self.frames[f.relpath] is self.base[f.relpath]:
                plain.setdefault(self.group_of[f.relpath], []).append(f.relpath)
            else:
                frames.append(self.frames[f.relpath].drop(RECORD))
        for group, relpaths in plain.items():
            frames.append(self.good[group].where(F.col(SOURCE_FILE).isin(relpaths)).drop(RECORD))
        raw = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
        typed = raw.select(
            *[cast_col(c, plan.types[c], rules, zone).alias(c) for c in columns],
            *metadata_columns(batch.run_id, batch.ingested_at, source_file=True),
        )
        ctype = landed_type(plan.types[batch.cursor], zone) if batch.cursor else ""
        if batch.lower_bound and batch.cursor:
            bound = F.lit(batch.lower_bound.value).cast(SQL_TYPES[ctype])
            typed = typed.where(F.col(batch.cursor).isNull() | (F.col(batch.cursor) >= bound))
            rows_kept = typed.count()
        else:
            rows_kept = sum(self.accepted[f.relpath] for f in files)  # less type rejects (no job)
        if batch.primary_key:
            w = dedup_window(batch.primary_key, batch.cursor, columns)
            typed = typed.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
        out = typed.withColumn(PARTITION_COLUMN, F.lit(partition_value(batch.ingested_at)))
        # Executors write on the lake's filesystem; the files are then renamed (or copied server-side)
        # into landing/: no byte passes through the driver.
        staging = batch.lake_staging
        rows_landed, max_cursor = write_observed(out, spark_uri(staging), batch.cursor, ctype, "written")
        staged_files(staging, rows_landed, batch.name)
        files_out = publish_staged(staging, batch.target, batch.run_id)
        return Written(rows_kept, rows_landed, max_cursor, tuple(files_out))


# The one-pass landing counts rows per file in its write's job: up to this many files a batch.
ONE_PASS_FILES = 64
_KEEP = "_tidemark_keep"
_CHECK_FAILED = "tidemark: a value the sample did not foresee"


def _checks_of(members: list[FileFacts], checks: dict[str, dict[str, ValueCheck]], cs: list[str]) -> Any:
    """True when a row passes the checks of columns `cs`, each row by its own file's."""
    from pyspark.sql import functions as F

    ok: Any = None
    for f in members:
        fine = reduce(lambda a, b: a & b, [check_col(c, checks[f.relpath][c]) for c in cs], F.lit(True))
        if len(members) == 1:
            return fine
        is_file = F.col(SOURCE_FILE) == F.lit(f.relpath)
        ok = F.when(is_file, fine) if ok is None else ok.when(is_file, fine)
    return ok.otherwise(F.lit(False))


def check_col(c: str, check: ValueCheck):
    """True when text column `c`'s value passes `check` (what its file's sample showed of every value)."""
    from pyspark.sql import functions as F

    col = F.col(quote_spark(c))
    absent = col.isNull() | (col == F.lit(""))
    if not check.values:
        if check.present:
            return F.lit(False)
        return absent if check.empty else col.isNull()
    ok = rules_ok_col(c, check.rules)
    if check.present:
        return ~absent & ok
    return absent | ok


def rules_ok_col(c: str, rules: Sequence[TypeRule]):
    """True when text column `c` satisfies every one of `rules`, in fewer checks: decimal and double take
    every value bigint takes, double every decimal value with a point."""
    from pyspark.sql import functions as F

    by_name = {r.name: r for r in rules}
    terms = []
    if "bigint" in by_name:
        terms.append(rule_ok_col(c, by_name.pop("bigint")))
        by_name.pop(DECIMAL, None)
        by_name.pop("double", None)
    if DECIMAL in by_name and "double" in by_name:
        col = F.col(quote_spark(c))
        terms.append(F.when(col.contains("."), F.lit(True)).otherwise(rule_ok_col(c, by_name.pop("double"))))
    terms += [rule_ok_col(c, rule) for rule in by_name.values()]
    return reduce(lambda a, b: a & b, terms, F.lit(True))


def unbalanced_quotes(spark: SparkSession, files: list[FileFacts], options: CsvOptions) -> list[str]:
    """The files (relpaths) holding an odd number of quote characters (so a quote is never closed).

    Only decidable this cheaply when quotes are escaped by doubling: every well-formed field then adds an
    even number. The executors count them over the files' lines, in one job (line breaks hold no quote;
    the quote is ASCII, so reading Latin-1 text as UTF-8 changes no count); only totals reach the driver.
    """
    from pyspark.sql import functions as F

    if options.escape != options.quote or options.encoding == "utf-16":
        return []
    # Split on the quote, not length arithmetic: Spark measures a string's length by its UTF-8 lead bytes,
    # and an invalid byte before a quote (Latin-1 text) would swallow the quote; splitting decodes first
    # (an invalid byte becomes one U+FFFD, the quote survives).
    quotes = F.size(F.split(F.col("value"), re.escape(options.quote), -1)) - 1
    text = spark.read.text([spark_uri(f.path) for f in files])
    relpath = _relpath_col(spark, F.input_file_name(), files)
    totals = text.groupBy(relpath.alias(SOURCE_FILE)).agg(F.sum(quotes)).collect()
    return [r[0] for r in totals if int(r[1] or 0) % 2 == 1]


def _relpath_col(spark: SparkSession, uri_col, files: list[FileFacts]):
    """A column mapping the URI Spark reports for a row's file (`input_file_name()`) to the file's relpath.

    Spark spells the URI its own way (Hadoop's `Path.toUri`, percent-encoded): each file's URI is put
    through the same Hadoop calls on the driver, so the two spellings match.
    """
    from pyspark.sql import functions as F

    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a live session's gateway
    pairs = []
    for f in files:
        uri = spark_uri(f.path)
        hpath = jvm.org.apache.hadoop.fs.Path(uri)
        # `input_file_name()` gives the percent-encoded URI, the binaryFile source's `path` Path.toString
        spelled = {uri, hpath.toUri().toString(), hpath.toString()}
        for u in spelled:
            pairs += [F.lit(u), F.lit(f.relpath)]
    return F.create_map(*pairs)[uri_col]


def _rule_counts(df: DataFrame, rules: dict[str, tuple[TypeRule, ...]]) -> dict[str, ColumnStats]:
    """Per column, its non-null values and the values satisfying each of its rules: one scan per
    `COLUMN_BATCH` columns, so a wide file's plan stays small (cost linear in the columns)."""
    from pyspark.sql import functions as F

    out: dict[str, ColumnStats] = {}
    for part in column_batches(rules):
        aggs = []
        for c, col_rules in part.items():
            aggs.append(F.count(F.when(F.col(quote_spark(c)) != F.lit(""), F.lit(1))))  # "" is no value
            aggs.append(F.count(F.when(F.col(quote_spark(c)) == F.lit(""), F.lit(1))))
            aggs += [F.count(F.when(rule_ok_col(c, rule), F.lit(1))) for rule in col_rules]
        row = df.agg(*aggs).first()
        assert row is not None
        out.update(unpack_rule_counts(part, row))
    return out


def _rule_counts_long(df: DataFrame, names: list[str], rules: Sequence[TypeRule]) -> dict[str, ColumnStats]:
    """`_rule_counts` with every rule for every column, over the values stacked into one column: a plan of
    one term per rule whatever the width (less to generate and compile; for samples)."""
    from pyspark.sql import functions as F

    pairs = F.array(*[F.struct(F.lit(c).alias("c"), F.col(quote_spark(c)).alias("v")) for c in names])
    values = df.select(F.explode(pairs).alias("p")).select(F.col("p.c").alias("c"), F.col("p.v").alias("v"))
    aggs = [
        F.count(F.when(F.col("v") != F.lit(""), F.lit(1))),
        F.count(F.when(F.col("v") == F.lit(""), F.lit(1))),
    ]
    aggs += [F.count(F.when(rule_ok_col("v", rule), F.lit(1))) for rule in rules]
    out = {c: ColumnStats(0, {r.name: 0 for r in rules}, empty=0) for c in names}
    for row in values.groupBy("c").agg(*aggs).collect():
        out[str(row[0])] = ColumnStats(
            int(row[1]), {r.name: int(k) for r, k in zip(rules, row[3:], strict=True)}, empty=int(row[2])
        )
    return out


def _partition_starts(df: DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
    """Per (file, input partition): the index in the file of its first record there and its smallest id
    (ids carry the partition in their high bits; a file's rows in one partition are contiguous)."""
    from pyspark.sql import functions as F

    part = F.shiftright(F.col(RECORD), 33)
    counts = sorted(
        (str(r[0]), int(r[1]), int(r[2]), int(r[3]))
        for r in df.groupBy(F.col(SOURCE_FILE), part).agg(F.count(F.lit(1)), F.min(RECORD)).collect()
    )
    starts: dict[tuple[str, int], tuple[int, int]] = {}
    totals: dict[str, int] = {}
    for file, p, n, low in counts:
        starts[(file, p)] = (totals.get(file, 0), low)
        totals[file] = totals.get(file, 0) + n
    return starts


def land_csv_ops(batch: CsvBatch, ops: _SparkCsv) -> LandedBatch:
    """The shared CSV flow with Spark operations; a Spark failure becomes an EngineError naming the table."""
    try:
        return land_csv_files(batch, ops, text_dir=batch.lake_text_copies)
    except EngineError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            raise EngineError(f"{batch.name}: Spark failed: {exc}") from exc
        raise
    finally:
        ops.close()
