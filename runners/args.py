"""Reading pipeline flags out of an argv list, for the per-runner set-up in runners/."""
from __future__ import annotations


def flag_value(argv: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in `argv`, or None."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            return argv[index + 1]
    return None


def has_flag(argv: list[str], name: str) -> bool:
    """Whether `argv` sets `--name` (with or without a value)."""
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)
