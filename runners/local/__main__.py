"""`python -m runners.local fetch|start|stop|status|topics` for the local infrastructure."""
from __future__ import annotations

import argparse
import sys

from market import console

console.filter_library_warnings()

from market import config  # noqa: E402 - after the warning filter
from runners.local import fetch, kafka, paths, prereqs, process, stack  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.local", description=__doc__)
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "topics", "up", "down"],
                        help="fetch: resolve jars from Maven; start/stop: the Kafka broker; "
                             "status: what runs; topics: create the topics of DESIGN.md §2; "
                             "up/down: the whole system (Kafka, producer, pipeline, serving)")
    parser.add_argument("--rate", type=int, default=stack.DEMO_RATE, help="up: producer ticks/s")
    parser.add_argument("--port", type=int, default=config.SERVING_PORT, help="up: serving port")
    parser.add_argument("--force", action="store_true", help="fetch: resolve again even if cached")
    parser.add_argument("--reset", action="store_true", help="stop: also delete the broker's data")
    parser.add_argument("--kafka", action="store_true",
                        help="status: exit 0 if the Kafka broker runs, 3 if not (for scripts)")
    args = parser.parse_args(argv)
    console.setup_logging()
    try:
        if args.command == "fetch":
            for name, path in fetch.fetch_all(force=args.force).items():
                print(f"{name}: {path}")
        elif args.command == "start":
            fetch.fetch_all()
            kafka.start()
            print(f"kafka: running on {kafka.HOST}:{kafka.PORT} (pid {process.read_pid(kafka.NAME)}), "
                  f"data {paths.data_dir(kafka.NAME)}")
        elif args.command == "up":
            fetch.fetch_all()
            url = stack.up(rate=args.rate, port=args.port)
            for name, pid in stack.status().items():
                print(f"{name}: running, pid {pid}, log {paths.log_file(name)}")
            print(f"\nDashboard: {url}\nStop everything with: make stop")
        elif args.command == "down":
            print("stopped:", ", ".join(stack.down()) or "nothing was running")
        elif args.command == "stop":
            print("kafka: stopped" if kafka.stop() else "kafka: was not running")
            if args.reset:
                kafka.reset_data()
        elif args.command == "status" and args.kafka:
            running = kafka.is_running()
            print(f"kafka: {'running' if running else 'stopped'}")
            return 0 if running else 3
        elif args.command == "status":
            for name, pid in stack.status().items():
                print(f"{name}: {'running, pid %d' % pid if pid else 'stopped'}")
            print(f"job server jar: {fetch.job_server_jar()} "
                  f"({'present' if fetch.job_server_jar().exists() else 'missing'})")
            print(f"expansion service jar: {fetch.expansion_service_jar()} "
                  f"({'present' if fetch.expansion_service_jar().exists() else 'missing'})")
        elif args.command == "topics":
            print("created:", kafka.create_topics() or "none (all exist)")
    except (prereqs.MissingPrerequisite, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
