"""runners.compose: the compose stack's pipeline submitter, without a cluster."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from runners.compose import submit


def test_adds_packaging_and_checkpoints_keyed_by_job_name():
    args = submit.pipeline_args(["--runner=FlinkRunner", "--job_name=market"])
    assert f"--setup_file={submit.PROJECT_ROOT / 'setup.py'}" in args
    assert f"--state_backend_storage_path=file://{submit.CHECKPOINT_ROOT}/market" in args
    assert "--checkpointing_interval=10000" in args
    assert "--retain_externalized_checkpoints_on_cancellation" in args


def test_flink_defaults_are_added_unless_set():
    # The same defaults go to the embedded and cluster runs (runners/args.py).
    args = submit.pipeline_args(["--runner=FlinkRunner", "--max_cache_memory_usage_mb=8"])
    assert "--finish_bundle_before_checkpointing" in args and "--object_reuse" in args
    assert [a for a in args if a.startswith("--max_cache_memory_usage_mb")] == ["--max_cache_memory_usage_mb=8"]


def test_resumes_from_the_newest_completed_checkpoint(tmp_path):
    old = tmp_path / "job-a" / "chk-3"
    new = tmp_path / "job-b" / "chk-7"
    unfinished = tmp_path / "job-b" / "chk-8"  # no _metadata: still being written
    for chk in (old, new, unfinished):
        chk.mkdir(parents=True)
    (old / "_metadata").write_text("x")
    (new / "_metadata").write_text("x")
    import os
    os.utime(old / "_metadata", (1, 1))
    argv = ["--job_name=market", f"--state_backend_storage_path=file://{tmp_path}"]
    args = submit.pipeline_args(argv)
    assert f"--savepoint_path=file://{new}" in args and "--allow_non_restored_state" in args
    assert not any(a.startswith("--savepoint_path") for a in submit.pipeline_args(argv, resume=False))
    # Without a job name there is nothing to resume.
    assert not any(a.startswith("--savepoint_path")
                   for a in submit.pipeline_args([f"--state_backend_storage_path=file://{tmp_path}"]))


def test_own_flags_are_not_passed_to_the_pipeline():
    own, rest = submit.split_flags(["--runner=FlinkRunner", "--kafka_expansion_service=x:1", "--no_resume"])
    assert own.kafka_expansion_service == "x:1" and own.no_resume
    assert rest == ["--runner=FlinkRunner"]


@pytest.fixture
def flink_rest():
    """A stand-in for the JobManager's REST `/jobs/overview`."""
    jobs = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"jobs": jobs}).encode()
            self.send_response(200 if self.path == "/jobs/overview" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}", jobs
    server.shutdown()


def test_a_running_job_of_the_same_name_is_not_submitted_again(flink_rest):
    master, jobs = flink_rest
    jobs += [{"jid": "a", "name": "market", "state": "CANCELED"},
             {"jid": "b", "name": "other", "state": "RUNNING"}]
    assert submit.active_job(master, "market") is None
    jobs.append({"jid": "c", "name": "market", "state": "RUNNING"})
    assert submit.active_job(f"http://{master}", "market")["jid"] == "c"
    # run() returns before building anything (no broker, no job server needed).
    assert submit.run([f"--flink_master={master}", "--job_name=market", "--runner=FlinkRunner"]) is None
