"""The Spark engine uses the session and master it is given; JDBC passwords from AWS Secrets Manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.errors import SourceError
from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "from ingestion.config import SparkConfig; from ingestion.engines.spark.engine import get_spark; "
    "print('MASTER=' + get_spark(SparkConfig(master='local[2]')).sparkContext.master)"
)


def _master(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**env, **extra_env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(line for line in proc.stdout.splitlines() if line.startswith("MASTER=")).removeprefix(
        "MASTER="
    )


@pytest.mark.slow
@pytest.mark.spark
def test_the_master_chosen_by_spark_submit_wins_over_the_config() -> None:
    pytest.importorskip("pyspark")
    from ingestion.engines.spark.engine import java_available

    if not java_available():
        pytest.skip("no Java for Spark")
    # What spark-submit does: the master arrives through the launcher, not through tidemark's config.
    assert _master({"PYSPARK_SUBMIT_ARGS": "--master local[1] pyspark-shell"}) == "local[1]"
    # Started by tidemark itself: the config's master applies.
    assert _master({}) == "local[2]"


@pytest.fixture
def secrets(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("secretsmanager")


@pytest.mark.parametrize("form", ["json", "plain"])
def test_a_jdbc_password_from_secrets_manager(
    form: str, pg_db: PgDb, secrets, tmp_path: Path, write_config
) -> None:
    pg_db.con.execute("create table orders (id int primary key, updated_at timestamptz not null)")
    pg_db.con.execute("insert into orders values (1, '2026-01-01 10:00+00')")
    name = f"tidemark/{pg_db.name}/{form}"
    value = (
        json.dumps({"username": pg_db.role, "password": pg_db.password}) if form == "json" else pg_db.password
    )
    secrets.create_secret(Name=name, SecretString=value)
    source = jdbc_source(pg_db, password_env="TM_NO_SUCH_VARIABLE", password_secret=name)
    report = run_pipeline(write_config(pipeline_doc(tmp_path / "lake", source)))
    assert report.ok, [(t.name, t.error) for t in report.tables]
    assert [(t.table, t.rows_landed) for t in report.tables] == [("orders", 1)]
    # The password read from the secret is masked like any other.
    from ingestion.redact import redact

    assert pg_db.password not in redact(f"failed for {pg_db.password}")


def test_a_missing_secret_says_which_and_what_to_check(secrets) -> None:
    from ingestion.sources.jdbc import secret_password

    with pytest.raises(SourceError) as e:
        secret_password("tidemark/nope", "shop")
    assert "tidemark/nope" in e.value.message and "secretsmanager:GetSecretValue" in (e.value.hint or "")
