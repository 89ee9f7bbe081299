"""Fetch the Flink distribution a session cluster runs from, into `.cache/flink-dist/`.

Apache publishes no Flink binary tarball to any registry this machine can
reach, and Maven Central does not serve `org.apache.flink:flink-dist`. The
PyPI sdist `apache-flink-libraries` (PyFlink's jar carrier) does: its
`deps/lib/` is the `lib/` of the binary distribution (flink-dist, log4j) and
`deps/bin/bash-java-utils.jar` is what Flink's own start scripts use to turn
the memory settings into JVM flags. It has no `bin/*.sh` or `conf/`, so
`runners.flink_cluster.cluster` starts the JVMs itself and writes the config.

Flink 1.19.0 exactly: Beam 2.62's `beam-runners-flink-1.19` is built against
1.19.0, and the job server submits a Java-serialized JobGraph built with its
own flink-clients/flink-runtime 1.19.0 jars; the same version on the cluster
side leaves nothing to chance (see docs/flink_cluster.md).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from runners.local import paths, prereqs

log = logging.getLogger(__name__)

FLINK_VERSION = "1.19.0"
PACKAGE = "apache-flink-libraries"

# Of the sdist's deps/lib only what a streaming session cluster running Beam
# needs: flink-dist (runtime, client, streaming API, RPC) and log4j. The Table
# API, Scala API and connectors stay out of the class path.
_LIB_JARS = (f"flink-dist-{FLINK_VERSION}.jar", "log4j-api-", "log4j-core-", "log4j-slf4j-impl-",
             "log4j-1.2-api-")


def home() -> Path:
    """FLINK_HOME of the fetched distribution: `lib/` and `bin/bash-java-utils.jar`."""
    return paths.cache_dir() / "flink-dist" / f"flink-{FLINK_VERSION}"


def lib_dir() -> Path:
    return home() / "lib"


def bash_java_utils_jar() -> Path:
    return home() / "bin" / "bash-java-utils.jar"


def is_fetched() -> bool:
    return (home() / ".complete").exists()


def _sdist(download_dir: Path) -> Path:
    """The sdist, downloaded with pip once; later calls reuse the file."""
    name = f"{PACKAGE}-{FLINK_VERSION}.tar.gz"
    found = download_dir / name
    if found.exists():
        return found
    download_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s from PyPI (about 230 MB)", PACKAGE, FLINK_VERSION)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--dest", str(download_dir), f"{PACKAGE}=={FLINK_VERSION}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not found.exists():
        raise RuntimeError(f"pip could not download {PACKAGE}=={FLINK_VERSION}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return found


def _wanted(member: str) -> str | None:
    """Where an sdist member goes under `home()`, or None to skip it."""
    parts = member.split("/")
    if len(parts) != 4 or parts[1] != "deps":
        return None
    folder, name = parts[2], parts[3]
    if folder == "lib" and name.endswith(".jar") and name.startswith(_LIB_JARS):
        return f"lib/{name}"
    if folder == "bin" and name == "bash-java-utils.jar":
        return f"bin/{name}"
    return None


def fetch(force: bool = False) -> Path:
    """Download (once) and unpack the Flink distribution; return its home. Idempotent."""
    prereqs.require_java()
    target = home()
    if is_fetched() and not force:
        return target
    sdist = _sdist(paths.cache_dir() / "flink-dist" / "download")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("unpacking the Flink %s lib/ from %s", FLINK_VERSION, sdist)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            dest = _wanted(member.name)
            if dest is None or not member.isfile():
                continue
            out = staging / dest
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (staging / "lib" / f"flink-dist-{FLINK_VERSION}.jar").exists():
        raise RuntimeError(f"{sdist} holds no deps/lib/flink-dist-{FLINK_VERSION}.jar")
    if not (staging / "bin" / "bash-java-utils.jar").exists():
        raise RuntimeError(f"{sdist} holds no deps/bin/bash-java-utils.jar")
    (staging / ".complete").write_text(f"{PACKAGE}=={FLINK_VERSION}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
