"""The whole system on this machine: Kafka, producer, pipeline on embedded Flink, serving.

`python -m runners.local up` starts what is not running and prints the
dashboard URL; `python -m runners.local down` stops everything. Each part runs
as its own background process with a pid file and a log under .cache/.
"""
from __future__ import annotations

import logging
import os
import sys
import urllib.request

from market import config
from market.settings import BOOTSTRAP_SERVERS
from runners.local import kafka, paths, process
from runners.wait import wait_until

log = logging.getLogger(__name__)

PRODUCER = "producer"
PIPELINE = "pipeline"
SERVING = "serving"
PARTS = (SERVING, PIPELINE, PRODUCER)
# The demo runs at the rate the product promises (market/config.py): the
# pipeline sustains 10,000 ticks/s on 2 cores with Kafka, the producer and
# serving beside it (docs/performance.md). RATE=2000 make run asks for less.
DEMO_RATE = config.PRODUCER_RATE
# Seconds a part gets to stop by itself before it is killed. The pipeline
# stops its job with a savepoint (runners.local.flink.stop_with_savepoint),
# which waits for the in-flight bundles: 2-5 s measured here, more under load.
STOP_TIMEOUT_S = {PIPELINE: 150}


def _python() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault(BOOTSTRAP_SERVERS.env, f"{kafka.HOST}:{kafka.PORT}")
    env["PYTHONPATH"] = str(paths.PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serving_command(host: str, port: int) -> list[str]:
    """docs/serving.md's production command (the one docker-compose runs), bound to `host:port`.

    gunicorn, not `python -m serving` (Werkzeug's development server): the
    demo serves the way production does. `-m gunicorn` keeps this interpreter,
    so serving gets the project's .venv.
    """
    return [_python(), "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1", "--threads", "1100",
            "--worker-connections", "2200", "--bind", f"{host}:{port}", "--graceful-timeout", "10",
            "serving:create_app()"]


def commands(rate: int, port: int) -> dict[str, list[str]]:
    """The command line of each part."""
    return {
        SERVING: serving_command(config.SERVING_HOST, port),
        PIPELINE: [_python(), "-m", "pipelines.market", "--runner=FlinkRunner"],
        PRODUCER: [_python(), "-m", "producer", "--rate", str(rate)],
    }


def up(rate: int = DEMO_RATE, port: int = config.SERVING_PORT, timeout_s: float = 120) -> str:
    """Start every part not yet running; return the dashboard URL once serving is ready."""
    kafka.start()
    for name, cmd in commands(rate, port).items():
        if process.read_pid(name):
            log.info("%s already running (pid %s)", name, process.read_pid(name))
            continue
        pid = process.start(name, cmd, cwd=paths.PROJECT_ROOT, env=_env())
        log.info("%s started (pid %s), log %s", name, pid, paths.log_file(name))
    url = f"http://{config.SERVING_HOST}:{port}/"

    def serving_ready() -> bool:
        for name in PARTS:
            if process.read_pid(name) is None:
                raise RuntimeError(f"{name} exited:\n{process.tail(paths.log_file(name))}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    if not wait_until(serving_ready, timeout_s, interval_s=1.0):
        raise RuntimeError(f"serving did not answer on {url} in {timeout_s:.0f}s:\n"
                           f"{process.tail(paths.log_file(SERVING))}")
    return url


def down() -> list[str]:
    """Stop every part and the broker; return the names that were running."""
    stopped = [name for name in PARTS if process.stop(name, timeout_s=STOP_TIMEOUT_S.get(name, 30))]
    if kafka.stop():
        stopped.append(kafka.NAME)
    return stopped


def status() -> dict[str, int | None]:
    return {name: process.read_pid(name) for name in (kafka.NAME, *PARTS)}
