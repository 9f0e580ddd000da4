"""The functions the Spark engine runs on its executors (issue 17: reasons and line numbers of rejected
rows there): they unpickle and run with the standard library alone, and agree with the driver's."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
from pathlib import Path

from ingestion.config import CsvOptions
from ingestion.plan.rejects import (
    BAD_QUOTING,
    EXTRA_COLUMNS,
    INVALID_ENCODING,
    MISSING_COLUMNS,
    NULL_KEY,
    REPEATED_HEADER,
    TYPE_MISMATCH,
    UNCLOSED,
    Dialect,
    content_start_lines,
    decode_line,
    structural_reject,
    type_reject,
)
from ingestion.sources.csv import record_lines

REPO = Path(__file__).resolve().parent.parent
# What an executor may lack: nothing but the standard library is promised there.
THIRD_PARTY = ("pydantic", "yaml", "pyarrow", "duckdb", "boto3", "tenacity", "pyspark")

RUN_BLOCKED = """
import pickle, sys
for name in {blocked!r}:
    sys.modules[name] = None  # any import of it fails, as on a worker without it
with open(sys.argv[1], "rb") as f:
    calls = pickle.load(f)
print(repr([fn(*args) for fn, args in calls]))
"""


def test_the_executor_functions_unpickle_and_run_without_any_third_party_module(tmp_path: Path) -> None:
    """What the UDFs pickle (partials of `plan.rejects` functions with a plain `Dialect`) runs in a Python
    where pydantic, pyarrow, duckdb, boto3, yaml, tenacity and pyspark cannot be imported."""
    dialect = Dialect.of(CsvOptions())
    calls = [
        (
            functools.partial(structural_reject, dialect, ("id", "name"), 2),
            ("1,a,b", False, False, False, "1", "a"),
        ),
        (functools.partial(type_reject, {"id": "bigint"}, ("id",), None), ("id", "x1")),
        (functools.partial(content_start_lines, dialect), (b'id,v\n1,"a\nb"\n\n2\n', [1])),
        (functools.partial(decode_line, "utf-8"), (b"Z\xfcrich\n",)),
    ]
    blob = tmp_path / "calls.pickle"
    blob.write_bytes(pickle.dumps(calls))
    script = RUN_BLOCKED.format(blocked=THIRD_PARTY)
    out = subprocess.run(
        [sys.executable, "-c", script, str(blob)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == repr(
        [
            (EXTRA_COLUMNS, "expected 2 fields, found 3", "1,a,b"),
            (TYPE_MISMATCH, "column id: 'x1' is not a valid bigint"),
            [(1, 5)],
            "Z\\xfcrich",
        ]
    )


def test_structural_reasons_on_the_executors_are_the_driver_rules() -> None:
    d = Dialect.of(CsvOptions())
    names = ("id", "name")
    assert structural_reject(d, names, 2, "1,a,", False, False, False, "1", "a") is None  # trailing delimiter
    assert structural_reject(d, names, 2, "1", False, False, False, "1", None)[:1] == (MISSING_COLUMNS,)
    assert structural_reject(d, names, 2, None, False, True, False, "id", "name") == (
        REPEATED_HEADER,
        "the header line repeated as a data row",
        "id,name",
    )
    assert structural_reject(d, names, 2, UNCLOSED, False, False, False, "1", 'a"b')[0] == BAD_QUOTING
    assert structural_reject(d, names, 2, None, True, False, False, "1", "Z\ufffdrich")[0] == INVALID_ENCODING
    assert type_reject({"id": "bigint"}, ("id",), None, "id", "") == (
        NULL_KEY,
        "primary key column id is empty",
    )


def test_the_executors_utf16_scan_finds_the_lines_the_driver_scan_finds(tmp_path: Path) -> None:
    text = 'id,note\n1,a\n\n2\n3,"x\ny"\n4\n5,"p\n\nq"\n6\n'
    options = CsvOptions(encoding="utf-16")
    path = tmp_path / "u.csv"
    path.write_bytes(text.encode("utf-16"))
    wanted = list(range(6))
    driver = record_lines(str(path), options, wanted)
    assert driver == {0: 2, 1: 4, 2: 5, 3: 7, 4: 8, 5: 11}
    assert content_start_lines(Dialect.of(options), path.read_bytes(), wanted) == sorted(driver.items())
