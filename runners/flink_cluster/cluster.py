"""A Flink 1.19 session cluster on this machine, without Docker, and the pipeline arguments to use it.

Three background processes, each with a pid file and a log under `.cache/`
(runners.local.process):

* `flink-jobmanager`: `StandaloneSessionClusterEntrypoint`, REST on localhost:8081;
* `flink-taskmanager-<n>`: `TaskManagerRunner`, 2 slots each;
* `beam-worker-pool`: Beam's Python SDK worker pool on localhost:50000; the
  TaskManagers ask it for a Python SDK worker per stage (EXTERNAL environment).

They are the processes Flink's `bin/jobmanager.sh` / `bin/taskmanager.sh`
would start: the memory flags come from the same BashJavaUtils call.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from runners.flink_cluster import conf, distribution
from runners.flink_rest import ACTIVE_STATES, UNREACHABLE, FlinkRest, base_url
from runners.local import fetch as local_fetch
from runners.local import paths, prereqs, process
from runners.wait import wait_until

if TYPE_CHECKING:    # Beam is imported only when submitting (see pipeline_args)
    from runners.local.flink import SavepointTarget

log = logging.getLogger(__name__)

JOBMANAGER = "flink-jobmanager"
TASKMANAGER_PREFIX = "flink-taskmanager-"
WORKER_POOL = "beam-worker-pool"
WORKER_POOL_PORT = 50000

# What Flink 1.19's default config.yaml puts in env.java.opts.all so that
# Kryo and Flink's own reflection work on Java 17's module system.
JAVA17_OPENS = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
)


def taskmanager_class_path() -> str:
    """Flink's lib/ only: see `beam_lib_for_taskmanager` for why Beam's jars are not here."""
    return str(distribution.lib_dir() / "*")


def _resource_params(command: str) -> tuple[list[str], list[str]]:
    """(JVM flags, dynamic `-D key=value` args) Flink derives from the memory config.

    The same call `bin/jobmanager.sh` / `bin/taskmanager.sh` make; the
    TaskManager refuses to start without the derived memory settings.
    """
    class_path = os.pathsep.join([str(distribution.bash_java_utils_jar()), taskmanager_class_path()])
    cmd = [prereqs.java(), "-Xmx64m", "-cp", class_path, "org.apache.flink.runtime.util.bash.BashJavaUtils",
           command, "--configDir", str(conf.conf_dir())]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line.split(":", 1)[1] for line in result.stdout.splitlines()
             if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"BashJavaUtils {command} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    jvm_flags = lines[0].split()
    dynamic = lines[1].split() if len(lines) > 1 else []
    return jvm_flags, dynamic


def _flink_env() -> dict[str, str]:
    env = dict(os.environ)
    plugins = distribution.home() / "plugins"
    plugins.mkdir(exist_ok=True)
    env["FLINK_PLUGINS_DIR"] = str(plugins)
    return env


def _flink_cmd(name: str, main_class: str, resource_command: str) -> list[str]:
    jvm_flags, dynamic = _resource_params(resource_command)
    log4j = conf.conf_dir() / "log4j-console.properties"
    return [prereqs.java(), *jvm_flags, *JAVA17_OPENS, "-XX:+UseG1GC",
            f"-Dlog4j.configurationFile=file:{log4j}", f"-Dlog.file={paths.log_file(name)}",
            "-classpath", taskmanager_class_path(), main_class,
            "--configDir", str(conf.conf_dir()), *dynamic]


def _worker_pool_cmd() -> list[str]:
    return [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={WORKER_POOL_PORT}"]


def _worker_pool_env() -> dict[str, str]:
    # The SDK workers unpickle the pipeline's functions by reference
    # (`pipelines.market`, `transforms`, test modules): they import them from
    # the project, as a real worker image would have the package installed.
    env = dict(os.environ)
    # worker_pool_main starts each SDK worker as a bare `python`: this
    # interpreter's folder goes first on PATH so the workers get its packages.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def taskmanager_names() -> list[str]:
    """Names of the TaskManagers that have a pid file, running or not."""
    run_dir = paths.pid_file(JOBMANAGER).parent
    return sorted(p.stem for p in run_dir.glob(f"{TASKMANAGER_PREFIX}*.pid"))


def rest() -> FlinkRest:
    """The REST API of this machine's session cluster."""
    return FlinkRest(conf.rest_url())


def overview(timeout_s: float = 2.0) -> dict | None:
    """The JobManager's `/overview` (TaskManagers, slots, jobs), or None if REST does not answer."""
    try:
        return rest().overview(timeout_s=timeout_s)
    except UNREACHABLE:
        return None


def is_running() -> bool:
    return process.read_pid(JOBMANAGER) is not None


def start(taskmanagers: int = 1, timeout_s: float = 120.0) -> dict:
    """Start the cluster unless it runs; wait until every TaskManager has registered its slots.

    Returns the REST overview. On failure everything started here is stopped again.
    """
    prereqs.require_java()
    distribution.fetch()
    conf.write()
    started = []
    try:
        if process.read_pid(JOBMANAGER) is None:
            for port in (conf.REST_PORT, conf.RPC_PORT):
                if process.port_open(conf.HOST, port):
                    raise RuntimeError(f"port {port} is taken by another process; stop it or free the port")
            process.start(JOBMANAGER, _flink_cmd(
                JOBMANAGER, "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                "GET_JM_RESOURCE_PARAMS"), cwd=conf.cluster_dir(), env=_flink_env())
            started.append(JOBMANAGER)
        tm_cmd = None
        for index in range(taskmanagers):
            name = f"{TASKMANAGER_PREFIX}{index}"
            if process.read_pid(name) is None:
                tm_cmd = tm_cmd or _flink_cmd(name, "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
                                              "GET_TM_RESOURCE_PARAMS")
                process.start(name, tm_cmd, cwd=conf.cluster_dir(), env=_flink_env())
                started.append(name)
        if process.read_pid(WORKER_POOL) is None:
            if process.port_open(conf.HOST, WORKER_POOL_PORT):
                raise RuntimeError(f"port {WORKER_POOL_PORT} is taken by another process")
            process.start(WORKER_POOL, _worker_pool_cmd(), cwd=paths.PROJECT_ROOT, env=_worker_pool_env())
            started.append(WORKER_POOL)
        return wait_ready(taskmanagers * conf.SLOTS_PER_TASKMANAGER, timeout_s)
    except BaseException:
        for name in reversed(started):
            process.stop(name)
        raise


def wait_ready(slots: int, timeout_s: float) -> dict:
    """Block until REST reports `slots` registered slots and the worker pool listens."""
    last = None

    def ready() -> dict | None:
        nonlocal last
        for name in [JOBMANAGER, *taskmanager_names(), WORKER_POOL]:
            if process.read_pid(name) is None:
                raise RuntimeError(f"{name} exited during start:\n{process.tail(paths.log_file(name))}")
        last = overview()
        if (last and last.get("slots-total", 0) >= slots and last.get("slots-available", 0) > 0
                and process.port_open(conf.HOST, WORKER_POOL_PORT)):
            return last
        return None

    if (ready_overview := wait_until(ready, timeout_s)) is not None:
        return ready_overview
    raise RuntimeError(f"the Flink cluster was not ready in {timeout_s:.0f}s (overview: {last}):\n"
                       f"{process.tail(paths.log_file(JOBMANAGER))}")


def stop() -> list[str]:
    """Stop TaskManagers, then the JobManager, then the worker pool; return what was running."""
    stopped = []
    for name in [*taskmanager_names(), JOBMANAGER, WORKER_POOL]:
        if process.stop(name, timeout_s=30):
            stopped.append(name)
    return stopped


def status() -> dict[str, int | None]:
    """Pid (or None) of each cluster process."""
    names = [JOBMANAGER, *(taskmanager_names() or [f"{TASKMANAGER_PREFIX}0"]), WORKER_POOL]
    return {name: process.read_pid(name) for name in names}


def checkpoint_root(job_name: str | None) -> Path:
    """Checkpoints of one job name; resuming is keyed by name so jobs never share state."""
    return conf.checkpoints_dir() / (job_name or "unnamed")


def pipeline_args(argv: list[str], resume: bool = True) -> tuple[list[str], SavepointTarget]:
    """`argv` (with `--runner=FlinkRunner --flink_master=host:port`) plus what a cluster run needs.

    * the local job server launcher jar: the Python FlinkRunner starts it and
      it submits the job to `--flink_master`;
    * EXTERNAL Python workers from the cluster's worker pool;
    * checkpoints (runners/checkpoints.py) under
      `.cache/flink-cluster/checkpoints/<job_name>`, retained on cancel; with
      an explicit `--job_name` a new submission resumes from that name's
      newest completed checkpoint.
    """
    # Beam is imported only when submitting: `fetch`, `start` and `status` do without it.
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        GoogleCloudOptions,
        PipelineOptions,
        PortableOptions,
    )

    from runners import checkpoints
    from runners.args import with_flink_defaults
    from runners.local import flink as local_flink

    args = with_flink_defaults(argv)
    options = PipelineOptions(args)
    if options.view_as(FlinkRunnerOptions).flink_job_server_jar is None:
        jar = local_fetch.job_server_jar()
        local_fetch.require(jar)
        args.append(f"--flink_job_server_jar={jar}")
    if options.view_as(PortableOptions).environment_type is None:
        args += ["--environment_type=EXTERNAL", f"--environment_config={conf.HOST}:{WORKER_POOL_PORT}"]
    job_name = options.view_as(GoogleCloudOptions).job_name
    resume = resume and bool(job_name)
    if not job_name:
        # A job is found again by its name (`stop-job NAME`, the slot watch,
        # the next submission's check); a made-up name is new, so nothing is
        # resumed, as with Beam's own made-up name before.
        job_name = f"unnamed-{uuid.uuid4().hex[:8]}"
        args.append(f"--job_name={job_name}")
        log.info("no --job_name given: the job is called %s on the cluster", job_name)
    args, storage, checkpoint = checkpoints.prepare_storage(args, checkpoint_root(job_name), resume)
    # SIGTERM to `python -m pipelines.market` stops this job with a
    # savepoint where the next submission of the name looks for one.
    master = options.view_as(FlinkRunnerOptions).flink_master
    if master in local_flink.LOCAL_MASTERS:   # not named: this machine's session cluster
        master = conf.rest_url()
    target = local_flink.SavepointTarget(base_url(master), checkpoints.savepoint_dir(storage), job_name)
    if checkpoint is not None:
        log.info("resuming %s from checkpoint %s", job_name, checkpoint)
        args += checkpoints.restore_args(checkpoint)
    return args, target


def find_job(name_or_jid: str) -> dict | None:
    """The job with that id, else the newest unfinished job of that name, else the newest of that name."""
    jobs = rest().jobs()
    by_id = [job for job in jobs if job["jid"] == name_or_jid]
    named = sorted((job for job in jobs if job["name"] == name_or_jid), key=lambda job: job.get("start-time", 0))
    active = [job for job in named if job["state"] in ACTIVE_STATES]
    return (by_id or active or named or [None])[-1]


def stop_job(name_or_jid: str, timeout_s: float = 120.0) -> tuple[dict, Path]:
    """Stop an unfinished job with a savepoint; return the job and the savepoint.

    The savepoint goes where a submission of the job's name looks for one
    (`checkpoint_root(name)/savepoints`), so `python -m pipelines.market
    --job_name=NAME` resumes from it: same state and Kafka offsets, any
    parallelism. Raises RuntimeError when there is no such job or the
    savepoint fails (the job then runs on).
    """
    from runners.checkpoints import savepoint_dir

    job = _unfinished(name_or_jid)
    savepoint = rest().stop_with_savepoint(job["jid"], savepoint_dir(checkpoint_root(job["name"])), timeout_s)
    if savepoint is None:
        raise RuntimeError(f"job {job['name']} ({job['jid']}) could not be stopped with a savepoint and runs on; "
                           f"see {paths.log_file(JOBMANAGER)}, or cancel it (its last checkpoint is kept)")
    job["state"] = rest().wait_ended(job["jid"], timeout_s) or "STOPPING"
    return job, savepoint


def cancel(name_or_jid: str, timeout_s: float = 60.0) -> dict:
    """Cancel an unfinished job without a savepoint (its retained checkpoints stay); return it, ended."""
    job = _unfinished(name_or_jid)
    job["state"] = rest().cancel(job["jid"], timeout_s)
    return job


def _unfinished(name_or_jid: str) -> dict:
    job = find_job(name_or_jid)
    if job is None:
        raise RuntimeError(f"no job called {name_or_jid!r} on {conf.rest_url()}: see `python -m runners.flink_cluster jobs`")
    if job["state"] not in ACTIVE_STATES:
        raise RuntimeError(f"job {job['name']} ({job['jid']}) has already ended: {job['state']}")
    return job
