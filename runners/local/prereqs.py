"""Checks for the tools the local stack needs, with messages a person can act on."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys


class MissingPrerequisite(RuntimeError):
    """A tool the local stack needs is absent or too old."""


def java() -> str:
    """The `java` command every JVM of the local stack runs with: the one on PATH (its bare name if none,
    so the start fails with the OS's message; `require_java` says what to install)."""
    return shutil.which("java") or "java"


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


def require_javac() -> None:
    if shutil.which("javac") is None:
        raise MissingPrerequisite(
            "a JDK (javac) is required to build the project's KafkaIO read: "
            "apt-get install openjdk-17-jdk-headless")


def main() -> int:
    """`python -m runners.local.prereqs`: check Java, javac and Maven (stdlib only: runs before .venv exists)."""
    try:
        require_java()
        require_javac()
        require_maven()
    except MissingPrerequisite as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
