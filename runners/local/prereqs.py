"""Checks for the tools the local stack needs, with messages a person can act on."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys


class MissingPrerequisite(RuntimeError):
    """A tool the local stack needs is absent or too old."""


def java_version() -> int:
    """Major version of the `java` on PATH; raises MissingPrerequisite if there is none."""
    java = shutil.which("java")
    if java is None:
        raise MissingPrerequisite(
            "Java 17 or newer is required (for Kafka and the Flink job server): "
            "install a JDK, e.g. `apt-get install openjdk-17-jdk-headless`, and put `java` on PATH")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise MissingPrerequisite(f"could not read the Java version from: {out.stderr.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def require_java(minimum: int = 17) -> None:
    major = java_version()
    if major < minimum:
        raise MissingPrerequisite(f"Java {minimum}+ is required, found Java {major}")


def require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingPrerequisite(
            "Maven is required to fetch the Kafka and Beam jars: `apt-get install maven`")
    return mvn


def require_python() -> None:
    if sys.version_info[:2] != (3, 11):
        raise MissingPrerequisite(
            f"Python 3.11 is required (the pinned apache-beam supports it), found "
            f"{sys.version_info.major}.{sys.version_info.minor}")
