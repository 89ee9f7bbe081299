"""Background processes with pid files: start detached, check, stop cleanly."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from runners.local import paths


def read_pid(name: str) -> int | None:
    """Pid of the running process `name`, or None (a stale pid file is removed)."""
    pid_path = paths.pid_file(name)
    if not pid_path.exists():
        return None
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        pid_path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):
        pid_path.unlink(missing_ok=True)
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def start(name: str, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Start `cmd` in its own session, output to `.cache/logs/<name>.log`; return its pid."""
    log_path = paths.log_file(name)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    paths.pid_file(name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group of `name`, SIGKILL after `timeout_s`; True if one was running."""
    pid = read_pid(name)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        _signal_group(pid, signal.SIGKILL)
    paths.pid_file(name).unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
