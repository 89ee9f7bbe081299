"""What the parts of the side-by-side benchmark share: paths, the market of the data, Kafka questions, CPU figures."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from market import config
from producer import DEFAULT_SYMBOLS
from runners.local.supervised import Supervised

ROOT = Path(__file__).resolve().parents[1]


BENCH_DIR = ROOT / "benchmarks"


PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


BENCH_VENV = ROOT / ".cache" / "bench-venv"


BENCH_PYTHON = BENCH_VENV / "bin" / "python"


PY_SPY = BENCH_VENV / "bin" / "py-spy"


WINDOW_MS = config.WINDOW_SIZE_S * 1000


EVENT_SPAN_MS = 3_600_000   # event time of the drain data: 60 minutes, ending ...


# ... at a window boundary at least a window before the fill, so the wall clock
# has passed every window's end when a system drains the topic: the last final
# bar then measures the system, not the wait for the clock (an idle partition's
# watermark follows the wall clock).
DRAIN_END_MARGIN_MS = WINDOW_MS


# The broker stamps each bar with the time it was appended: a bar's arrival
# on its topic, whatever the benchmark's reader is doing at that moment.
BARS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


READER_BEHIND_MS = 1000     # a reader whose p99 delay behind its topic is above this is falling behind


FIRST_BAR_TIMEOUT_S = 300   # drain: a system with no bar at all by then is given up on (it is failing)


class BenchError(Exception):
    """A prerequisite is missing or a system under test failed: printed without a traceback."""


def run_benchmark(body: Callable[[], int], cleanup: Callable[[], None] | None = None) -> int:
    """A benchmark command's exit status: `body()`, 2 on a BenchError, 130 when interrupted.

    SIGTERM stops it as Ctrl-C does. Whatever it started is stopped either
    way (`Started.stop_all`), then `cleanup` runs.
    """
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return body()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stopping what was started", file=sys.stderr)
        return 130
    finally:
        Started.stop_all()
        if cleanup is not None:
            cleanup()


def symbol_counts(text: str | None) -> list[int | None]:
    """--symbols '20,500,5000' -> [20, 500, 5000]; absent -> [None], the producer's default symbols."""
    if not text:
        return [None]
    counts = [int(part) for part in text.replace("_", "").split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise BenchError(f"--symbols takes positive counts, e.g. 20,500,5000; got {text!r}")
    return counts


def symbols_label(symbols: int | None) -> str:
    return f"{len(DEFAULT_SYMBOLS)} (default)" if symbols is None else f"{symbols:,}"


def producer_symbol_flags(symbols: int | None) -> list[str]:
    """The producer's flags for a market of `symbols` symbols (none: its default symbols)."""
    return [] if symbols is None else [f"--symbol_count={symbols}"]


def require_symbol_count(counts: list[int | None]) -> None:
    """--symbols needs the producer's --symbol_count: say so before any topic is made."""
    if all(count is None for count in counts):
        return
    help_text = subprocess.run([PYTHON, "-m", "producer", "--help"], capture_output=True, text=True,
                               cwd=ROOT, timeout=120, check=False).stdout
    if "--symbol_count" not in help_text:
        raise BenchError("--symbols needs `python -m producer --symbol_count N`, which this tree's producer "
                         "does not have yet")


def require_broker(bootstrap: str) -> None:
    try:
        # log_level 0: one clear line below instead of librdkafka's retry log.
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
    except KafkaException as exc:
        raise BenchError(f"no Kafka broker answers at {bootstrap} ({exc.args[0]}); start one with "
                         f"`.venv/bin/python -m runners.local start` or pass --bootstrap_servers") from None


def topics_containing(bootstrap: str, text: str) -> list[str]:
    """Topics a system created on its own (Quix Streams' changelogs) named after this run."""
    listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return [name for name in listed if text in name]


class EndOffsets:
    """End offsets of topics, from one consumer kept open for the run's repeated questions."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compare-offsets",
                                   "enable.auto.commit": False})
        self._partitions: dict[str, list[int]] = {}

    def of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(self._consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        deadline = time.monotonic() + 15
        while True:
            try:
                return [self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in self._partitions[topic]]
            except KafkaException:
                # A topic created a moment ago may not have its leaders yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def total(self, topic: str) -> int:
        return sum(self.of(topic))

    def close(self) -> None:
        self._consumer.close()


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    offsets = EndOffsets(bootstrap)
    try:
        return offsets.of(topic)
    finally:
        offsets.close()


def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int | None:
    """End offsets minus the group's committed offsets; None before its first commit."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        if all(tp.offset < 0 for tp in committed):
            return None
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
        return sum(end - max(tp.offset, 0) for end, tp in zip(ends, committed))
    finally:
        consumer.close()


def dead_letter_reasons(bootstrap: str, topic: str) -> Counter:
    """Reasons of every record on the dead-letter topic (a clean run has none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"compare-dlq-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    reasons: Counter = Counter()
    try:
        end = end_offsets(bootstrap, topic)[0]
        if end == 0:
            return reasons
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        seen = 0
        while seen < end and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    seen += 1
                    reasons[orjson.loads(msg.value()).get("reason", "?")] += 1
        return reasons
    finally:
        consumer.close()


def runtime_of(kind: str) -> str:
    """'JVM' (job server, expansion service, any other Java), 'Python' (driver, SDK workers, peers) or 'other'."""
    if kind.endswith("JVM"):
        return "JVM"
    if "Python" in kind:
        return "Python"
    return "other"


def by_runtime(per_kind: dict[str, float]) -> dict[str, float]:
    """Per-kind figures summed into JVM, Python and other (short-lived helpers such as a `docker` probe)."""
    totals: dict[str, float] = defaultdict(float)
    for kind, value in per_kind.items():
        totals[runtime_of(kind)] += value
    return {name: value for name, value in totals.items() if name != "other" or value >= 0.05}


def per_tick(used: dict[str, float], ticks: int) -> dict[str, float]:
    """CPU seconds per kind -> µs per tick."""
    return {kind: 1e6 * seconds / ticks for kind, seconds in used.items()} if ticks > 0 else {}


class Started(Supervised):
    """A process of the benchmark, started at once with its CPU sampled; `stop_all` ends every one still running.

    A failed system is a BenchError (printed without a traceback), and a stop
    SIGTERMs the whole group: a benchmark wants a quick end, not a savepoint.
    """

    registry: list["Started"] = []

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None) -> None:
        super().__init__(name, cmd, log_path, env=env, sample_cpu=True)
        self.start()
        Started.registry.append(self)

    def require_running(self) -> None:
        if not self.running():
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; its log "
                             f"{self.log_path} ends:\n{self.tail(30)}")

    def stop(self, grace_s: float = 30, whole_group: bool = True) -> None:
        if self in Started.registry:
            Started.registry.remove(self)
        super().stop(grace_s=grace_s, whole_group=whole_group)

    @classmethod
    def stop_all(cls) -> None:
        for started in list(reversed(cls.registry)):
            started.stop(grace_s=15)
