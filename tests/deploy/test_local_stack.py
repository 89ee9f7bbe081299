"""`make run` (runners.local.stack) serves with the production server docker-compose uses."""
from __future__ import annotations

import os
import subprocess
import urllib.request

from runners.local import paths, process, stack
from runners.ports import free_port
from tests.deploy.test_compose import docs_serving_command
from tests.waiting import wait_for


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
        def answered() -> str | None:
            """The healthz answer's Server header, once serving answers."""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    return response.headers["Server"] if response.status == 200 else None
            except OSError:
                assert server.poll() is None, server.stdout.read()
                return None

        server_header = wait_for(answered, 30, "serving answering /healthz", poll_s=0.3)
        assert server_header.startswith("gunicorn"), server_header
    finally:
        process.terminate([server.pid], grace_s=10)
        server.wait(timeout=5)


