"""ingestion.yml: validation errors name the key, ${VAR} interpolation, env overrides, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.config import load_config, parse_config
from ingestion.errors import ConfigError

from .conftest import REPO


def minimal(**over):
    doc = {
        "pipeline": "p",
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": "./in",
                "tables": [{"name": "t", "primary_key": "id", "cursor": "updated_at"}],
            }
        ],
    }
    doc.update(over)
    return doc


def test_repository_config_is_valid():
    cfg = load_config(REPO / "ingestion.yml")
    assert cfg.pipeline == "billing_demo"
    assert cfg.engine == "duckdb"
    assert [t.name for _, t in cfg.csv_tables()] == ["accounts", "customers", "subscriptions", "invoices"]
    assert cfg.lake_root == str(REPO / "lake")


def test_defaults_and_single_key_shorthand():
    cfg = parse_config(minimal())
    ((_, table),) = cfg.csv_tables()
    assert table.primary_key == ("id",)
    assert table.glob == "t*.csv"
    assert cfg.env == "dev" and cfg.engine == "duckdb"


def test_error_names_the_key_and_what_is_expected():
    doc = minimal()
    doc["sources"][0]["tables"][0]["primary_key"] = ["Bad Name"]
    with pytest.raises(ConfigError) as e:
        parse_config(doc, source="x.yml")
    text = str(e.value)
    assert "x.yml" in text
    assert "sources[0](s).tables[0](t).primary_key" in text
    assert "lowercase letters" in text


def test_unknown_keys_and_engines_are_rejected():
    with pytest.raises(ConfigError, match=r"lake.rooot: Extra inputs are not permitted"):
        parse_config(minimal(lake={"rooot": "x"}))
    with pytest.raises(ConfigError, match=r"engine: Input should be 'duckdb' or 'spark'"):
        parse_config(minimal(engine="flink"))


def test_duplicate_tables_are_rejected():
    doc = minimal()
    doc["sources"][0]["tables"].append({"name": "t"})
    with pytest.raises(ConfigError, match="repeated: \\['t'\\]"):
        parse_config(doc)


def test_env_interpolation_with_default_and_missing(monkeypatch):
    monkeypatch.setenv("INBOX", "/data/in")
    monkeypatch.delenv("NOPE", raising=False)
    cfg = parse_config(
        minimal(
            lake={"root": "${LAKE_X:-/tmp/lake}"},
            sources=[{**minimal()["sources"][0], "path": "${INBOX}/billing"}],
        )
    )
    assert cfg.sources[0].path == "/data/in/billing"
    assert cfg.lake.root == "/tmp/lake"
    with pytest.raises(ConfigError, match=r"lake\.root: environment variable NOPE is not set"):
        parse_config(minimal(lake={"root": "${NOPE}"}))


def test_env_selects_overrides(monkeypatch):
    monkeypatch.delenv("TIDEMARK_ENV", raising=False)
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    doc = minimal(environments={"prod": {"engine": "spark", "lake": {"root": "/prod/lake"}}})
    assert parse_config(doc).engine == "duckdb"
    prod = parse_config(doc, env="prod")
    assert (prod.env, prod.engine, prod.lake.root) == ("prod", "spark", "/prod/lake")
    monkeypatch.setenv("TIDEMARK_ENV", "prod")
    assert parse_config(doc).engine == "spark"
    with pytest.raises(ConfigError, match="env 'staging' is not defined"):
        parse_config(doc, env="staging")


def test_lake_env_var_wins(monkeypatch):
    monkeypatch.setenv("TIDEMARK_LAKE", "/elsewhere")
    assert parse_config(minimal(lake={"root": "/configured"})).lake_root == "/elsewhere"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, write_config, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    cfg = write_config(minimal())
    monkeypatch.chdir("/")
    assert cfg.lake_root == str(tmp_path / "lake")
    assert cfg.resolve(cfg.sources[0].path) == str(tmp_path / "in")


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found") as e:
        load_config(tmp_path / "nope.yml")
    assert e.value.hint and "--config" in e.value.hint
    bad = tmp_path / "bad.yml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _pg_source(**over):
    return {
        "name": "pg",
        "kind": "jdbc",
        "url": "jdbc:postgresql://db:5432/shop",
        "user": "u",
        "password": "${TIDEMARK_TEST_PW}",
        "tables": [{"name": "t", "primary_key": ["id"]}],
        **over,
    }


def test_config_errors_never_echo_secrets_nor_whole_sources(monkeypatch):
    monkeypatch.setenv("TIDEMARK_TEST_PW", "hunter2-s3cret")
    for source in (
        _pg_source(url="postgresql://db/shop"),  # a typo elsewhere in the source
        _pg_source(passwrd="${TIDEMARK_TEST_PW}"),  # a typo in the secret's own key
        _pg_source(password=["${TIDEMARK_TEST_PW}"]),  # the secret with the wrong shape
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config({"pipeline": "p", "sources": [source]})
        text = str(exc.value)
        assert "hunter2" not in text, text
        assert "Tuple should have at least 1 item" not in text  # no cascade from the failed source
        assert "sources[0](pg)" in text


def test_variables_are_interpolated_only_for_the_chosen_environment(monkeypatch):
    monkeypatch.delenv("TIDEMARK_PROD_ONLY", raising=False)
    doc = minimal(environments={"prod": {"lake": {"root": "${TIDEMARK_PROD_ONLY}"}}})
    assert parse_config(doc, env="dev").env == "dev"  # the prod-only variable need not be set
    with pytest.raises(ConfigError, match="TIDEMARK_PROD_ONLY"):
        parse_config(doc, env="prod")
    monkeypatch.setenv("TIDEMARK_PROD_ONLY", "/prod/lake")
    assert parse_config(doc, env="prod").lake.root == "/prod/lake"
