"""After `dbt parse --target glue`: the CDC models merge into Iceberg tables and snapshots are Iceberg.

Run by `make check-glue` with the dbt-glue environment's Python; exits 1 naming what is wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(manifest_path: str) -> int:
    manifest = json.loads(Path(manifest_path).read_text())
    nodes = [n for n in manifest["nodes"].values() if n["resource_type"] in ("model", "snapshot")]
    cdc = [n for n in nodes if n["resource_type"] == "model" and "cdc" in n["tags"]]
    snapshots = [n for n in nodes if n["resource_type"] == "snapshot"]
    wrong = [
        f"{n['unique_id']}: strategy {n['config'].get('incremental_strategy')}, format {n['config'].get('file_format')}"
        for n in cdc
        if n["config"].get("incremental_strategy") != "merge" or n["config"].get("file_format") != "iceberg"
    ]
    wrong += [
        f"{n['unique_id']}: format {n['config'].get('file_format')}"
        for n in snapshots
        if n["config"].get("file_format") != "iceberg"
    ]
    if not cdc or not snapshots:
        wrong.append(f"found {len(cdc)} CDC models and {len(snapshots)} snapshots; expected some of each")
    for line in wrong:
        print("check-glue:", line, file=sys.stderr)
    if not wrong:
        print(
            f"check-glue: {len(nodes)} models and snapshots parsed; {len(cdc)} CDC models merge into Iceberg"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
