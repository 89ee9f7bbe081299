"""Stopping local processes and resuming the embedded Flink runner, without Flink.

The e2e tests (tests/e2e/test_clean_stop.py) run the real thing; these check
the pieces fast: which checkpoint a start resumes from, the Flink conf the
job server gets, the REST calls of a stop with a savepoint, and that a
stopped process leaves nothing of its process tree behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runners.local import flink as local_flink
from runners.local import process
from runners.wait import wait_until
from tests.waiting import wait_for


def make_checkpoint(folder: Path, mtime: float) -> Path:
    folder.mkdir(parents=True)
    meta = folder / "_metadata"
    meta.write_bytes(b"x")
    os.utime(meta, (mtime, mtime))
    return folder


def test_a_start_resumes_from_the_newest_checkpoint_or_savepoint(tmp_path):
    now = time.time()
    make_checkpoint(tmp_path / "job1" / "chk-7", now - 30)
    savepoint = make_checkpoint(local_flink.savepoint_dir(tmp_path) / "savepoint-ab12-cd34", now - 20)
    (tmp_path / "job1" / "chk-8").mkdir()           # in progress: no _metadata yet
    assert local_flink.latest_checkpoint(tmp_path) == savepoint
    newer = make_checkpoint(tmp_path / "job2" / "chk-1", now - 10)
    assert local_flink.latest_checkpoint(tmp_path) == newer


def test_embedded_runs_get_a_local_rest_port_for_savepoints(tmp_path, monkeypatch):
    storage = tmp_path / "checkpoints"
    checkpoint = make_checkpoint(storage / "job" / "chk-3", time.time())
    args, target = local_flink.pipeline_args(["--flink_job_server_jar=/x.jar",
                                              f"--state_backend_storage_path=file://{storage}"])
    conf_dir = Path(next(a for a in args if a.startswith("--flink_conf_dir=")).split("=", 1)[1])
    conf = dict(line.split(": ", 1) for line in (conf_dir / "flink-conf.yaml").read_text().splitlines())
    assert conf["rest.bind-address"] == "127.0.0.1"
    assert conf["web.submit.enable"] == "false"
    assert conf["execution.savepoint.path"] == f"file://{checkpoint}"
    assert conf["state.savepoints.dir"] == f"file://{local_flink.savepoint_dir(storage)}"
    assert target.rest_url == f"http://127.0.0.1:{conf['rest.port']}"
    assert target.directory == local_flink.savepoint_dir(storage)
    # --no_resume: a fresh start, still stoppable with a savepoint.
    args, _ = local_flink.pipeline_args(["--flink_job_server_jar=/x.jar",
                                         f"--state_backend_storage_path=file://{storage}"], resume=False)
    conf_dir = Path(next(a for a in args if a.startswith("--flink_conf_dir=")).split("=", 1)[1])
    assert "execution.savepoint.path" not in (conf_dir / "flink-conf.yaml").read_text()


class FlinkRestStandIn(BaseHTTPRequestHandler):
    """Flink's REST API for one running job, as far as a stop with a savepoint uses it."""

    requests: list = []

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/jobs/overview":
            self._send({"jobs": [{"jid": "j1", "name": "market", "state": "RUNNING"},
                                 {"jid": "j0", "name": "market", "state": "CANCELED"}]})
        elif self.path == "/jobs/j1/savepoints/r1":
            self._send({"status": {"id": "COMPLETED"},
                        "operation": {"location": "file:/tmp/sp/savepoint-j1-1"}})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FlinkRestStandIn.requests.append((self.path, body))
        self._send({"request-id": "r1"})

    def log_message(self, *args) -> None:
        pass


def test_stop_with_savepoint_asks_flink_to_stop_the_running_job():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlinkRestStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = local_flink.SavepointTarget(f"http://127.0.0.1:{server.server_port}", Path("/tmp/sp"), "market")
        assert local_flink.stop_with_savepoint(target, timeout_s=10) == Path("/tmp/sp/savepoint-j1-1")
        assert FlinkRestStandIn.requests == [("/jobs/j1/stop", {"targetDirectory": "file:///tmp/sp", "drain": False})]
        # No such job: no savepoint, the caller cancels.
        other = local_flink.SavepointTarget(target.rest_url, Path("/tmp/sp"), "other")
        assert local_flink.stop_with_savepoint(other, timeout_s=10) is None
    finally:
        server.shutdown()
        server.server_close()
    # Nothing answers: None, not an exception.
    assert local_flink.stop_with_savepoint(target, timeout_s=1) is None


# A parent that starts a child ignoring SIGTERM in its own session (out of
# the process group) and one in its group, then waits.
TREE = """
import subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process trees are read from /proc")
def test_stop_leaves_nothing_of_the_process_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKET_CACHE_DIR", str(tmp_path))
    pid = process.start("tree", [sys.executable, "-c", TREE])
    wait_for(lambda: len(process.descendants(pid)) >= 2, 20, "the children started", poll_s=0.1)
    tree = process.descendants(pid)
    assert process.stop("tree", timeout_s=5)

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    # A SIGKILLed process takes a moment to become a zombie.
    wait_until(lambda: not any(running(p) for p in [pid, *tree]), 2, 0.05)
    left = [p for p in [pid, *tree] if running(p)]
    assert left == [], subprocess.run(["ps", "-o", "pid,ppid,args", *map(str, left)], capture_output=True,
                                      text=True).stdout
