"""`python -m runners.flink_cluster fetch|start|stop|status` for the local Flink session cluster."""
from __future__ import annotations

import argparse
import sys
import time

from market import console

console.filter_library_warnings()

from runners.flink_cluster import cluster, conf, distribution  # noqa: E402 - after the warning filter
from runners.local import fetch as local_fetch  # noqa: E402
from runners.local import paths, prereqs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.flink_cluster", description=__doc__)
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"],
                        help="fetch: the Flink distribution and the Beam jars; start/stop: JobManager, "
                             "TaskManagers and the Beam worker pool; status: what runs")
    parser.add_argument("--taskmanagers", type=int, default=1,
                        help=f"start: number of TaskManagers ({conf.SLOTS_PER_TASKMANAGER} slots each)")
    parser.add_argument("--force", action="store_true", help="fetch: unpack again")
    args = parser.parse_args(argv)
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
    except (prereqs.MissingPrerequisite, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
