"""Background processes with pid files: start detached, check, stop cleanly."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from runners.local import paths
from runners.wait import wait_until


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
    """Stop the process `name` and everything it started; True if it was running.

    SIGTERM goes to the main process only, so it can stop its own children in
    order (the pipeline stops its Flink job with a savepoint, then its job
    server JVM); a group-wide SIGTERM would take the JVM down under it. After
    it exits, or after `timeout_s`, whatever is left of its process tree and
    process group is terminated.
    """
    pid = read_pid(name)
    if pid is None:
        return False
    tree = descendants(pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    seen = set(tree)

    def exited() -> bool:
        # What it starts while stopping is stopped with it.
        seen.update(descendants(pid))
        return not _alive(pid)

    wait_until(exited, timeout_s, interval_s=0.2)
    terminate([pid, *sorted(seen), *group_members(pid)], grace_s=5.0)
    paths.pid_file(name).unlink(missing_ok=True)
    return True


def _proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, pgid, state, start time in clock ticks) of `pid` from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    # After the command: state ppid pgrp session tty tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
    return int(fields[1]), int(fields[2]), fields[0], int(fields[19])


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Pids of every live process below `pid` in the process tree (children, grandchildren ...)."""
    children: dict[int, list[int]] = {}
    for other in _all_pids():
        stat = _proc_stat(other)
        if stat is not None:
            children.setdefault(stat[0], []).append(other)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid`."""
    return [pid for pid in _all_pids() if (stat := _proc_stat(pid)) is not None and stat[1] == pgid]


def terminate(pids: list[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM each live pid of `pids`, SIGKILL those still alive after `grace_s`; return the ones signalled.

    A pid is identified with its start time when first seen, so a pid reused
    by an unrelated process in the meantime is left alone.
    """
    started = {pid: stat[3] for pid in dict.fromkeys(pids)
               if (stat := _proc_stat(pid)) is not None and stat[2] != "Z"}

    def same(pid: int) -> bool:
        stat = _proc_stat(pid)
        return stat is not None and stat[3] == started[pid] and stat[2] != "Z"

    def all_gone() -> bool:
        for pid in started:
            _reap(pid)
        return not any(same(pid) for pid in started)

    for pid in started:
        _send(pid, signal.SIGTERM)
    wait_until(all_gone, grace_s, interval_s=0.1)
    for pid in started:
        if same(pid):
            _send(pid, signal.SIGKILL)
            _reap(pid)
    return list(started)


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(pid: int) -> bool:
    _reap(pid)
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
