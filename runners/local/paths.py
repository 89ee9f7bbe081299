"""Where the local infrastructure keeps its jars, data, logs and pid files.

Everything lives under `.cache/` in the project (ignored by git), or under
$MARKET_CACHE_DIR when set, so a clean clone recreates it with `fetch`.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAVEN_DIR = Path(__file__).resolve().parent / "maven"


def cache_dir() -> Path:
    """Root of everything the scripts download or create at run time."""
    return Path(os.environ.get("MARKET_CACHE_DIR", PROJECT_ROOT / ".cache")).resolve()


def jars_dir(name: str) -> Path:
    """Folder holding the resolved class path of one Maven descriptor."""
    return cache_dir() / "jars" / name


def data_dir(name: str) -> Path:
    return cache_dir() / "data" / name


def log_file(name: str) -> Path:
    path = cache_dir() / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def pid_file(name: str) -> Path:
    path = cache_dir() / "run" / f"{name}.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
