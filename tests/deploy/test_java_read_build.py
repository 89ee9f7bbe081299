"""The project's Java KafkaIO read: its sources sit beside pipelines/kafka_io.py, and fetch builds them.

javac is replaced by a stand-in that records what it was asked to compile,
so these run without a JDK or the resolved jars; `python -m runners.local
fetch` and the Flink tests compile the real thing.
"""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from runners.local import fetch

ROOT = Path(__file__).resolve().parents[2]
REGISTRAR = "META-INF/services/org.apache.beam.sdk.expansion.ExternalTransformRegistrar"


@pytest.fixture
def javac(monkeypatch) -> list[list[str]]:
    """Each javac command line `build_event_time_read` runs; every compile "succeeds" with one class."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1]) / "org" / "Read.class"
        out.parent.mkdir(parents=True)
        out.write_bytes(b"\xca\xfe\xba\xbe")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


def compiled_sources(cmd: list[str]) -> list[Path]:
    return [Path(arg) for arg in cmd if arg.endswith(".java")]


def test_the_read_sits_beside_its_python_side():
    assert fetch.JAVA_SOURCES == ROOT / "pipelines" / "java"
    assert (ROOT / "pipelines" / "kafka_io.py").is_file()
    names = {path.name for path in fetch.JAVA_SOURCES.rglob("*.java")}
    assert {"EventTimeKafkaRead.java", "IdleAwareCreateTimePolicy.java", "KafkaRecordBatchRead.java",
            "KafkaRecordBatchSource.java"} <= names
    assert (fetch.JAVA_SOURCES / REGISTRAR).is_file()
    assert not (ROOT / "runners" / "local" / "java").exists(), "one place for the Java read"


def test_fetch_compiles_the_sources_beside_kafka_io(tmp_path, javac):
    lib = tmp_path / "beam" / "lib"
    lib.mkdir(parents=True)
    jar = fetch.build_event_time_read(lib)
    assert len(javac) == 1
    sources = compiled_sources(javac[0])
    assert sources and all(fetch.JAVA_SOURCES in path.parents for path in sources)
    assert javac[0][javac[0].index("-cp") + 1] == str(lib / "*"), "compiled against the class path it joins"
    with zipfile.ZipFile(jar) as zf:
        assert {"org/Read.class", REGISTRAR} <= set(zf.namelist())
    # Unchanged sources: the jar is kept.
    assert fetch.build_event_time_read(lib) == jar and len(javac) == 1


def test_a_changed_java_file_is_compiled_again(tmp_path, javac, monkeypatch):
    sources = tmp_path / "java"
    shutil.copytree(fetch.JAVA_SOURCES, sources)
    monkeypatch.setattr(fetch, "JAVA_SOURCES", sources)
    lib = tmp_path / "beam" / "lib"
    lib.mkdir(parents=True)
    fetch.build_event_time_read(lib)
    changed = next(sources.rglob("IdleAwareCreateTimePolicy.java"))
    changed.write_text(changed.read_text() + "\n// changed\n")
    fetch.build_event_time_read(lib)
    assert len(javac) == 2
    assert changed in compiled_sources(javac[1])


def test_the_workers_sdist_holds_the_pipeline_without_its_java(tmp_path):
    # Beam stages this sdist (--setup_file) to the Python workers on Flink and Dataflow.
    import sys
    import tarfile

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / "src" / name)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
                   cwd=tmp_path / "src", capture_output=True, check=True)
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
    assert "pipelines/kafka_io.py" in names and "pipelines/market.py" in names
    assert not [name for name in names if name.startswith("pipelines/java")]


def test_a_pipeline_started_after_an_edit_runs_the_edited_read(tmp_path, javac, monkeypatch):
    """The local expansion service (every local pipeline start) compiles a changed source first, not only `fetch`."""
    from runners.local import beam, paths
    sources = tmp_path / "java"
    shutil.copytree(fetch.JAVA_SOURCES, sources)
    monkeypatch.setattr(fetch, "JAVA_SOURCES", sources)
    monkeypatch.setattr(paths, "jars_dir", lambda descriptor: tmp_path / descriptor)
    (tmp_path / fetch.BEAM_CLASSPATH / "lib").mkdir(parents=True)
    fetch.expansion_service_jar().write_bytes(b"launcher")
    beam.expansion_service()
    beam.expansion_service()
    assert len(javac) == 1, "unchanged sources: nothing compiled again"
    changed = next(sources.rglob("KafkaRecordBatchSource.java"))
    changed.write_text(changed.read_text() + "\n// changed\n")
    beam.expansion_service()
    assert len(javac) == 2 and changed in compiled_sources(javac[1])
