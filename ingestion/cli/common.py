"""What every command shares: consoles, the common options, exit codes, the config loader.

Heavy imports (DuckDB, Spark, pyarrow) happen inside commands: `--help` loads none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ingestion.config import PipelineConfig

# Exit codes, documented in `--help` and the README.
EXIT_OK = 0  # every table landed or was up to date
EXIT_FAILED = 1  # a table failed, refused a file, or (status) its last run was abandoned
EXIT_USAGE = 2  # a usage or config error, or an expected error that stopped the command
EXIT_LOCKED = 3  # the only problem: tables locked by another live run (try again later)
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 a table failed or refused a file; 2 usage, config or lake error; "
    "3 tables locked by another run (nothing else wrong)."
)

out = Console()
err = Console(stderr=True)
if not out.is_terminal:
    out.width = 160  # logs and CI captures: don't squeeze tables to 80 columns

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="Pipeline config file. Default: $TIDEMARK_CONFIG, else ./ingestion.yml.",
        show_default=False,
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        metavar="ENV",
        help="Environment whose overrides (environments.<env> in the config) apply, e.g. dev or prod. "
        "Default: $TIDEMARK_ENV, else the config's `env`, else dev.",
        show_default=False,
    ),
]
TablesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--table",
        "-t",
        metavar="TABLE",
        help="Only this table (`table` or `source.table`); repeat for several. Default: all.",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project-dir", help="The dbt project. Default: the folder of the config file.", show_default=False
    ),
]


def load(config: Path | None, env: str | None = None) -> PipelineConfig:
    """The pipeline config (a `ConfigError` naming the file and key when it is wrong)."""
    from ingestion.config import load_config

    return load_config(config, env=env)
