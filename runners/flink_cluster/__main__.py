"""`python -m runners.flink_cluster fetch|start|stop|status|jobs|stop-job|cancel` for the local Flink session cluster.

The cluster's jobs outlive the command that submitted them when it dies
without stopping them (docs/flink_cluster.md, "A job's lifecycle"): `jobs`
lists them, `stop-job NAME` stops one with a savepoint its next submission
resumes from, `cancel NAME` cancels one (its last checkpoint is kept).
"""
from __future__ import annotations

import argparse
import sys
import time

from market import console

console.filter_library_warnings()

from runners.flink_cluster import cluster, conf, distribution  # noqa: E402 - after the warning filter
from runners.flink_rest import ACTIVE_STATES, UNREACHABLE  # noqa: E402
from runners.local import fetch as local_fetch  # noqa: E402
from runners.local import paths, prereqs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.flink_cluster", description=__doc__)
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "jobs", "stop-job", "cancel"],
                        help="fetch: the Flink distribution and the Beam jars; start/stop: JobManager, "
                             "TaskManagers and the Beam worker pool; status: what runs; jobs: the cluster's jobs; "
                             "stop-job JOB: stop a job with a savepoint (a new submission of its name resumes "
                             "from it); cancel JOB: cancel a job (its last checkpoint is kept)")
    parser.add_argument("job", nargs="?", help="stop-job, cancel: the job's name (--job_name) or id")
    parser.add_argument("--taskmanagers", type=int, default=1,
                        help=f"start: number of TaskManagers ({conf.SLOTS_PER_TASKMANAGER} slots each)")
    parser.add_argument("--force", action="store_true", help="fetch: unpack again")
    args = parser.parse_args(argv)
    if args.command in ("stop-job", "cancel") and not args.job:
        parser.error(f"{args.command} needs the job's name or id (see `python -m runners.flink_cluster jobs`)")
    console.setup_logging()
    try:
        if args.command == "fetch":
            print(f"flink: {distribution.fetch(force=args.force)}")
            for name, path in local_fetch.fetch_all().items():
                print(f"{name}: {path}")
        elif args.command == "start":
            local_fetch.fetch_all()
            began = time.monotonic()
            overview = cluster.start(taskmanagers=args.taskmanagers)
            print(f"flink cluster: ready in {time.monotonic() - began:.1f}s, REST {conf.rest_url()}, "
                  f"{overview['taskmanagers']} TaskManager(s), {overview['slots-available']} free slots; "
                  f"worker pool on {conf.HOST}:{cluster.WORKER_POOL_PORT}; logs {paths.log_file('x').parent}")
        elif args.command == "stop":
            began = time.monotonic()
            stopped = cluster.stop()
            print(f"stopped {', '.join(stopped)} in {time.monotonic() - began:.1f}s" if stopped
                  else "flink cluster: was not running")
        elif args.command == "status":
            for name, pid in cluster.status().items():
                print(f"{name}: {'running, pid %d' % pid if pid else 'stopped'}")
            overview = cluster.overview()
            print(f"REST {conf.rest_url()}: {overview if overview else 'not answering'}")
        elif args.command == "jobs":
            print_jobs(cluster.rest().jobs())
        elif args.command == "stop-job":
            job, savepoint = cluster.stop_job(args.job)
            print(f"{job['name']} ({job['jid']}): {job['state']}, savepoint {savepoint}")
        elif args.command == "cancel":
            job = cluster.cancel(args.job)
            print(f"{job['name']} ({job['jid']}): {job['state']}")
    except UNREACHABLE as exc:
        print(f"error: the JobManager at {conf.rest_url()} does not answer ({exc}): is the cluster started?",
              file=sys.stderr)
        return 1
    except (prereqs.MissingPrerequisite, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def print_jobs(jobs: list[dict]) -> None:
    """One line a job, unfinished ones first, then the newest: id, state, tasks running/total, started, name."""
    if not jobs:
        print("no jobs")
        return
    jobs = sorted(jobs, key=lambda job: (job["state"] not in ACTIVE_STATES, -job.get("start-time", 0)))
    print(f"{'job id':32}  {'state':11}  {'tasks':>7}  {'started (UTC)':19}  name")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.get("start-time", 0) / 1000))
        tasks = f"{job['tasks']['running']}/{job['tasks']['total']}"
        print(f"{job['jid']:32}  {job['state']:11}  {tasks:>7}  {started:19}  {job['name']}")


if __name__ == "__main__":
    sys.exit(main())
