"""The README's commands run from a fresh clone: every script the Makefile calls is executable in git."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripts_called_by_make_and_ci_are_executable_in_git():
    called = set(re.findall(r"\./(scripts/[\w.-]+\.sh)", (ROOT / "Makefile").read_text()))
    called |= set(re.findall(r"\./(scripts/[\w.-]+\.sh)", (ROOT / "scripts/test.sh").read_text()))
    called |= set(re.findall(r"\./(scripts/[\w.-]+\.sh)", (ROOT / "scripts/run.sh").read_text()))
    assert "scripts/run.sh" in called and "scripts/test.sh" in called
    listing = subprocess.run(["git", "ls-files", "-s", "scripts", ".ci"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    modes = {}
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        modes[path] = meta.split()[0]
    not_executable = sorted(path for path in called | {".ci/run"} if modes.get(path) != "100755")
    assert not not_executable, f"not executable in git (a fresh clone gets 'Permission denied'): {not_executable}"


def test_scripts_ask_whether_kafka_runs_by_exit_code(tmp_path):
    import os
    import sys

    assert "kafka: running" not in (ROOT / "scripts/test.sh").read_text(), "human text is no interface"
    env = dict(os.environ, MARKET_CACHE_DIR=str(tmp_path))      # no pid file here: not running
    result = subprocess.run([sys.executable, "-m", "runners.local", "status", "--kafka"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr


def test_setup_checks_prerequisites_with_the_commands_own_code(tmp_path):
    import os
    import shutil
    import sys

    # A PATH with Python 3.11, bash and dirname, and no java: setup.sh stops
    # with the commands' own message before it creates or fetches anything.
    for name, target in (("python3.11", sys.executable), ("bash", shutil.which("bash")),
                         ("dirname", shutil.which("dirname"))):
        (tmp_path / name).symlink_to(target)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "JAVA_HOME")}
    env["PATH"] = str(tmp_path)
    result = subprocess.run([str(tmp_path / "bash"), str(ROOT / "scripts/setup.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Java 17 or newer is required" in result.stderr, result.stderr
    assert "creating .venv" not in result.stdout + result.stderr
