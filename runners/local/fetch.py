"""Resolve the pinned Maven descriptors into `.cache/jars/` and build launcher jars.

Maven Central here serves the Beam modules but not the shaded job-server or
IO expansion-service jars, so each launcher is a tiny jar whose manifest
names a main class and the resolved jars as its Class-Path. `java -jar` then
behaves as it would with the shaded jar, which is what Beam's Python
FlinkRunner (`--flink_job_server_jar`) and `JavaJarExpansionService` expect.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from runners.local import paths, prereqs

log = logging.getLogger(__name__)

BEAM_CLASSPATH = "beam"
KAFKA_CLASSPATH = "kafka"

JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
EXPANSION_SERVICE_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"


def resolve(descriptor: str, force: bool = False) -> Path:
    """Copy the runtime class path of `maven/<descriptor>/pom.xml` into the jar cache."""
    target = paths.jars_dir(descriptor)
    lib = target / "lib"
    marker = target / ".complete"
    pom = paths.MAVEN_DIR / descriptor / "pom.xml"
    if marker.exists() and not force and marker.read_text() == pom.read_text():
        return lib
    mvn = prereqs.require_maven()
    log.info("resolving %s with Maven into %s", pom, lib)
    if lib.exists():
        for old in lib.glob("*.jar"):
            old.unlink()
    cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"Maven could not resolve {pom}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    marker.write_text(pom.read_text())
    return lib


# The Java side of pipelines/kafka_io.py, beside it: it is part of the
# pipeline, not of a runner. Every runner that reads Kafka gets it from here:
# the embedded Flink, the session cluster and Dataflow through the beam class
# path below (the job server, the expansion service and, on Dataflow, the
# jars it stages).
JAVA_SOURCES = paths.PROJECT_ROOT / "pipelines" / "java"
EVENT_TIME_READ_JAR = "market-kafka-event-time-read.jar"


def build_event_time_read(lib: Path) -> Path:
    """Compile pipelines/java (the project's KafkaIO read) into `lib`, if a source changed.

    javac from the JDK, against the resolved class path: no Maven plugins needed.
    """
    sources = sorted(JAVA_SOURCES.rglob("*.java"))
    services = sorted(JAVA_SOURCES.glob("META-INF/services/*"))
    if not sources:
        raise RuntimeError(f"no Java sources under {JAVA_SOURCES}")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources + services)).hexdigest()
    jar = lib / EVENT_TIME_READ_JAR
    stamp = lib.parent / ".event-time-read.sha256"
    if jar.exists() and stamp.exists() and stamp.read_text() == digest:
        return jar
    javac = shutil.which("javac")
    if javac is None:
        raise prereqs.MissingPrerequisite("javac is required (a JDK, not only a JRE): "
                                          "apt-get install openjdk-17-jdk-headless")
    with tempfile.TemporaryDirectory() as classes:
        jar.unlink(missing_ok=True)   # not on the class path it compiles against
        result = subprocess.run([javac, "-nowarn", "--release", "11", "-d", classes,
                                 "-cp", str(lib / "*"), *map(str, sources)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"javac failed:\n{result.stdout}{result.stderr}")
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(classes).rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
            for path in services:
                zf.write(path, path.relative_to(JAVA_SOURCES).as_posix())
    stamp.write_text(digest)
    return jar


def _manifest(main_class: str, class_path: list[str]) -> bytes:
    """A JAR manifest; lines are wrapped at 72 bytes as the JAR spec requires."""
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}",
             "Class-Path: " + " ".join(class_path), "Created-By: market-data-pipeline runners.local"]
    out = []
    for line in lines:
        data = line.encode()
        out.append(data[:72])
        data = data[72:]
        while data:
            out.append(b" " + data[:71])
            data = data[71:]
    return b"\r\n".join(out) + b"\r\n\r\n"


def build_launcher(lib: Path, name: str, main_class: str) -> Path:
    """Write `<lib>/../<name>.jar` whose manifest runs `main_class` on the jars of `lib`."""
    jar = lib.parent / f"{name}.jar"
    class_path = sorted(f"lib/{p.name}" for p in lib.glob("*.jar"))
    if not class_path:
        raise RuntimeError(f"no jars in {lib}: run `python -m runners.local fetch`")
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/MANIFEST.MF", _manifest(main_class, class_path))
    return jar


def require(jar: Path) -> Path:
    """`jar` if it exists, else a RuntimeError saying how to fetch it."""
    if not jar.exists():
        raise RuntimeError(f"{jar} is missing: run `python -m runners.local fetch`")
    return jar


def job_server_jar() -> Path:
    return paths.jars_dir(BEAM_CLASSPATH) / "flink-job-server.jar"


def expansion_service_jar() -> Path:
    return paths.jars_dir(BEAM_CLASSPATH) / "io-expansion-service.jar"


def beam_lib() -> Path:
    return paths.jars_dir(BEAM_CLASSPATH) / "lib"


def current_event_time_read() -> Path:
    """The project's KafkaIO read jar, compiled again first if a source under pipelines/java changed.

    `fetch` builds it; a pipeline started after an edit of the Java side
    would otherwise run the old classes without a word.
    """
    return build_event_time_read(require(beam_lib()))


def kafka_lib() -> Path:
    return paths.jars_dir(KAFKA_CLASSPATH) / "lib"


def fetch_all(force: bool = False) -> dict[str, Path]:
    """Resolve every descriptor and build the launchers; idempotent and quick when warm."""
    prereqs.require_java()
    beam_lib = resolve(BEAM_CLASSPATH, force)
    build_event_time_read(beam_lib)
    kafka = resolve(KAFKA_CLASSPATH, force)
    return {
        "kafka": kafka,
        "job_server": build_launcher(beam_lib, job_server_jar().stem, JOB_SERVER_MAIN),
        "expansion_service": build_launcher(beam_lib, expansion_service_jar().stem, EXPANSION_SERVICE_MAIN),
    }
