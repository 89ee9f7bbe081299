"""`make run` (runners.local.stack) serves with the production server docker-compose uses."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request

from runners.local import paths, process, stack
from runners.ports import free_port
from tests.deploy.test_compose import docs_serving_command


def test_make_run_serves_with_gunicorn_like_compose():
    port = free_port()
    cmd = stack.commands(rate=1, port=port)[stack.SERVING]
    documented = docs_serving_command()
    bind = documented.index("--bind") + 1
    assert cmd[cmd.index("gunicorn"):] == ["gunicorn", *documented[1:bind], f"127.0.0.1:{port}", *documented[bind + 1:]]
    env = {**os.environ, "CONSUME": "false", "PYTHONPATH": str(paths.PROJECT_ROOT)}
    server = subprocess.Popen(cmd, cwd=paths.PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    assert response.headers["Server"].startswith("gunicorn"), response.headers["Server"]
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "serving did not answer in 30s"
                time.sleep(0.3)
    finally:
        process.terminate([server.pid], grace_s=10)
        server.wait(timeout=5)


