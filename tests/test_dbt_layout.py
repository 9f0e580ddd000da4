"""The dbt project's layout conventions (CONVENTIONS.md, dbt): source() only in staging, one YAML per folder,
shared columns described by docs blocks, the dbt versions the project is tested with."""

from __future__ import annotations

import re

import yaml
from dbt.version import __version__ as dbt_version

from ingestion.dbt_gen import CURRENT_METADATA, DELETE_COLUMNS, METADATA_COLUMNS, STAMP_COLUMNS

from .helpers import REPO

MODELS = REPO / "models"
SHARED = {*METADATA_COLUMNS, *DELETE_COLUMNS, *STAMP_COLUMNS}


def test_source_is_called_only_in_staging_models() -> None:
    callers = {p.relative_to(MODELS).parts[0] for p in MODELS.rglob("*.sql") if "source(" in p.read_text()}
    assert callers == {"staging"}
    assert (MODELS / "staging/audit/stg_audit__ingestion_runs.sql").exists()
    assert (MODELS / "audit/audit_pipeline_runs.sql").exists()


def test_one_yaml_per_folder_named_for_it() -> None:
    for path in MODELS.rglob("*.yml"):
        folder = path.parent.name
        assert re.fullmatch(rf"_{folder}__(models|sources|unit_tests)\.yml", path.name), path
        doc = yaml.safe_load(path.read_text())
        if "sources" in doc:
            assert path.name == f"_{folder}__sources.yml" and path.parent.parent == MODELS / "staging", path


def test_shared_columns_are_described_by_the_docs_blocks() -> None:
    docs = set(re.findall(r"{%\s*docs\s+(\w+)\s*%}", (MODELS / "docs.md").read_text()))
    assert {f"{c}_current" for c in CURRENT_METADATA} | SHARED <= docs
    paths = [*MODELS.rglob("*.yml"), *(REPO / "snapshots").rglob("*.yml")]
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        nodes = [t for s in doc.get("sources") or [] for t in s.get("tables") or []]
        nodes += [*(doc.get("models") or []), *(doc.get("snapshots") or [])]
        for node in nodes:
            for col in node.get("columns") or []:
                if col["name"] in SHARED:
                    ref = re.fullmatch(r"{{ doc\('(\w+)'\) }}", col["description"])
                    assert ref and ref.group(1) in docs, (path, node["name"], col)


def test_the_project_requires_the_dbt_versions_it_is_tested_with() -> None:
    project = yaml.safe_load((REPO / "dbt_project.yml").read_text())
    assert project["require-dbt-version"] == [">=1.10.0", "<1.12.0"]
    major, minor = (int(x) for x in dbt_version.split(".")[:2])
    assert (1, 10) <= (major, minor) < (1, 12)
