"""Side by side: the market pipeline against the best pure-Python peers, on the same data, at any number of symbols.

    ./benchmarks/setup.sh            # once: Quix Streams and py-spy in .cache/bench-venv
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py drain [--ticks 400000] [--runs 3] \\
        [--symbols 20,500,5000]
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py live --rate 10000 --duration 300 \\
        [--symbols 10000]

--symbols N[,N...] sets how many symbols the data spans (`python -m producer
--symbol_count N`: made-up tickers, heavy-tailed activity); a list runs each
count in turn and ends with one table by symbol count, to paste into
docs/performance.md. Without it the producer's 20 default symbols are used.

drain: fills one fresh 3-partition topic with --ticks ticks from the project's
producer (event time spread over 60 minutes that end at a window boundary a
minute or two before the fill, record timestamp = event time, keyed by
symbol), then runs on that same topic, one after the other, each from the
beginning with a fresh consumer group:

* raw:      benchmarks/peer_raw.py, one confluent-kafka consumer + orjson +
            a dict of open bars, closed 60 s bars to a topic (the Python ceiling);
* quix:     benchmarks/peer_quix.py, Quix Streams' tumbling_window(60 s,
            grace 30 s).reduce(...).final() to a topic;
* pipeline: `python -m pipelines.market --runner=FlinkRunner` (embedded
            Flink, default flags, --no_resume, topics of its own).

Two rates per system: ticks/s between the moments 10 % and 90 % of the ticks
are in published bars (the sum over (symbol, window) of the newest bar's
tick_count on the system's output topic: the pipeline's EARLY panes count,
the peers publish closed bars only; a constant lag cancels out of a rate),
and ticks/s from the first bar to the last final bar (the whole drain, the
closing of every window included). Times are the broker's: the bar topics
are created with LogAppendTime, so how fast the benchmark reads them does not
change a figure. CPU of each system's process tree (sampled from /proc every
0.1 s, interpolated at the marks) gives µs of CPU per tick in the JVMs and in
Python. Every system's final bars are checked against the ticks (every tick
in a final bar or, for the pipeline, a dead letter).

live: the project's producer at --rate ticks/s into fresh topics with the
pipeline running; every --interval_s it prints offered and processed ticks/s,
the backlog (published − processed), the pipeline's consumer-group lag
(committed offsets, at checkpoints) and how far the benchmark's own readers
trail their topics, then p50/p95/p99 from a tick's event time to the moment
the first bar version that includes it was appended to the bar topic, the p99
delay of ON_TIME panes after their window's end, µs of CPU per tick in the
JVMs and in Python, and what the benchmark's readers cost.

--profile records the pipeline's Python processes with py-spy and the
job-server JVM with JFR (drain: between the 10 % and 90 % marks; live: from
the end of the warm-up) and prints the top frames. A benchmark, not a test:
it prints numbers and asserts nothing. Every process it starts is stopped by
pid when it ends, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import orjson
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from market import config, settings
from producer import DEFAULT_SYMBOLS
from runners.topics import create_topics, delete_topics

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
BENCH_VENV = ROOT / ".cache" / "bench-venv"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
PY_SPY = BENCH_VENV / "bin" / "py-spy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_MS = config.WINDOW_SIZE_S * 1000
EVENT_SPAN_MS = 3_600_000   # event time of the drain data: 60 minutes, ending ...
# ... at a window boundary at least a window before the fill, so the wall clock
# has passed every window's end when a system drains the topic: the last final
# bar then measures the system, not the wait for the clock (an idle partition's
# watermark follows the wall clock).
DRAIN_END_MARGIN_MS = WINDOW_MS
CPU_SAMPLE_S = 0.1          # how often a started process tree's CPU is read
TREE_SCAN_EVERY = 5         # CPU samples between two scans of /proc for new descendants
# The broker stamps each bar with the time it was appended: a bar's arrival
# on its topic, whatever the benchmark's reader is doing at that moment.
BARS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
READER_BEHIND_MS = 1000     # a reader whose p99 delay behind its topic is above this is falling behind
FIRST_BAR_TIMEOUT_S = 300   # drain: a system with no bar at all by then is given up on (it is failing)


class BenchError(Exception):
    """A prerequisite is missing or a system under test failed: printed without a traceback."""


# --- the market the data spans ---------------------------------------------------------------------

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


# --- Kafka ---------------------------------------------------------------------------------------

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


def assign_from_start(consumer: Consumer, topic: str) -> list[TopicPartition]:
    """Read every partition of `topic` from its start, with no group rebalance to wait for.

    A subscribing consumer of a new group waits out the broker's initial
    rebalance delay (3 s by default): longer than the raw peer's whole drain.
    """
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)]
    consumer.assign(assigned)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


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


# --- processes -----------------------------------------------------------------------------------

def _stat(pid: int, tid: int | None = None) -> list[str] | None:
    """Fields of /proc/<pid>/stat (or of one thread's) from field 3 (state) on; the name may hold spaces."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _cpu_s(fields: list[str]) -> float:
    """User + system CPU seconds of a /proc stat line."""
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_s(tid: int | None) -> float:
    """CPU seconds of one thread of this process (0 before it started)."""
    fields = _stat(os.getpid(), tid) if tid is not None else None
    return _cpu_s(fields) if fields else 0.0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_kind(cmdline: str) -> str:
    """What a process of a system's tree is, for the CPU breakdown."""
    if "java" in cmdline.split(" ", 1)[0]:
        if "flink-job-server" in cmdline:
            return "job-server JVM"
        if "expansion-service" in cmdline:
            return "expansion JVM"
        return "other JVM"
    if "pipelines.market" in cmdline:
        return "pipeline Python (driver + LOOPBACK worker)"
    if "python" in cmdline:
        return "Python SDK worker" if "sdk_worker" in cmdline else "Python"
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


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


class Started:
    """A process this benchmark started, in its own session, and every descendant it spawns.

    A watcher thread records each descendant (pid and start time) as it
    appears, so stop() can kill by pid even what escaped the process group or
    outlived its parent, and never a stranger that reused a pid. It also
    samples the tree's CPU by kind of process every CPU_SAMPLE_S, keeping the
    last CPU time of a process that ended, so the CPU between any two moments
    of the run can be read afterwards (cpu_between).
    """

    registry: list["Started"] = []

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.known: dict[int, str] = {self.pid: (_stat(self.pid) or [""] * 20)[19]}
        self._last_cpu: dict[int, tuple[str, float]] = {}   # pid -> (kind, CPU s when last seen)
        self._samples_lock = threading.Lock()
        self.samples: list[tuple[float, dict[str, float]]] = []   # (wall time s, CPU s by kind)
        self._sample()
        self._stop = threading.Event()
        Started.registry.append(self)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        n = 0
        while not self._stop.wait(CPU_SAMPLE_S):
            if n % TREE_SCAN_EVERY == 0:
                self.tree()
            self._sample()
            n += 1

    def tree(self) -> list[int]:
        """Live pids of the process and its descendants (recorded for stop())."""
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields:
                    children[int(fields[1])].append(int(entry))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            fields = _stat(pid)
            if fields is None or fields[0] == "Z":
                continue
            found.append(pid)
            self.known.setdefault(pid, fields[19])
            todo.extend(children.get(pid, []))
        return found

    def _sample(self) -> dict[str, float]:
        """Read the CPU of every recorded process; a process that ended keeps its last reading."""
        for pid, started in list(self.known.items()):
            fields = _stat(pid)
            if fields is None or fields[19] != started:
                continue
            cmdline = _cmdline(pid)
            previous = self._last_cpu.get(pid)
            # A zombie has no command line: it keeps the kind it had.
            kind = process_kind(cmdline) if cmdline or previous is None else previous[0]
            self._last_cpu[pid] = (kind, _cpu_s(fields))
        totals: dict[str, float] = defaultdict(float)
        for kind, seconds in list(self._last_cpu.values()):
            totals[kind] += seconds
        with self._samples_lock:
            self.samples.append((time.time(), dict(totals)))
        return dict(totals)

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each kind of process in the tree."""
        self.tree()
        return self._sample()

    def cpu_at(self, when: float) -> dict[str, float]:
        """CPU seconds by kind at wall time `when`, interpolated between the samples around it."""
        with self._samples_lock:
            samples = list(self.samples)
        times = [t for t, _ in samples]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return dict(samples[0][1])
        if i == len(samples):
            return dict(samples[-1][1])
        (t_a, a), (t_b, b) = samples[i - 1], samples[i]
        share = (when - t_a) / (t_b - t_a) if t_b > t_a else 1.0
        return {kind: a.get(kind, 0.0) + share * (b[kind] - a.get(kind, 0.0)) for kind in b}

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by kind used between two wall times of the run."""
        a, b = self.cpu_at(start), self.cpu_at(end)
        return {kind: b[kind] - a.get(kind, 0.0) for kind in b}

    def pids_of(self, kind: str) -> list[int]:
        return [pid for pid in self.tree() if process_kind(_cmdline(pid)) == kind]

    def running(self) -> bool:
        return self.proc.poll() is None

    def require_running(self) -> None:
        if not self.running():
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; its log "
                             f"{self.log_path} ends:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 30) -> None:
        """SIGTERM the group (the pipeline cancels its job), then SIGKILL every recorded pid left."""
        if self in Started.registry:
            Started.registry.remove(self)
        self.tree()
        self._stop.set()
        self._watcher.join(5)
        self._sample()
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        for pid in self._alive():   # what left the group (setsid) gets its SIGTERM too
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.2)
        for pid in self._alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.2)
        left = self._alive()
        if left:
            print(f"warning: {self.name}: processes still alive after SIGKILL: {left}", file=sys.stderr)

    def _alive(self) -> list[int]:
        """Recorded pids still running as the same process (same start time)."""
        alive = []
        for pid, started in self.known.items():
            fields = _stat(pid)
            if fields and fields[0] != "Z" and fields[19] == started:
                alive.append(pid)
        return alive

    @classmethod
    def stop_all(cls) -> None:
        for started in list(reversed(cls.registry)):
            started.stop(grace_s=15)


def pipeline_command(bootstrap: str, ticks: str, outputs: "Outputs", group: str, storage: Path,
                     extra: list[str]) -> list[str]:
    """`python -m pipelines.market --runner=FlinkRunner` with default flags on topics of its own.

    The checkpoints go to a directory of this run, so `make run` never
    resumes from a benchmark's checkpoint.
    """
    return [PYTHON, "-m", "pipelines.market", "--runner=FlinkRunner", f"--bootstrap_servers={bootstrap}",
            f"--input_topic={ticks}", f"--output_topic={outputs.bars}", f"--alerts_topic={outputs.alerts}",
            f"--dlq_topic={outputs.dlq}", f"--consumer_group={group}", "--no_resume",
            f"--state_backend_storage_path=file://{storage}", *extra]


@dataclass
class Outputs:
    bars: str
    alerts: str
    dlq: str

    @classmethod
    def create(cls, bootstrap: str, prefix: str) -> "Outputs":
        outputs = cls(f"{config.TRENDS_TOPIC}_{prefix}", f"{config.ALERTS_TOPIC}_{prefix}",
                      f"{config.DLQ_TOPIC}_{prefix}")
        create_topics(bootstrap, {outputs.bars: config.TRENDS.partitions, outputs.alerts: config.ALERTS.partitions,
                                  outputs.dlq: config.DLQ.partitions},
                      {outputs.bars: BARS_TOPIC_CONFIG})
        return outputs

    def names(self) -> list[str]:
        return [self.bars, self.alerts, self.dlq]


# --- reading the topics --------------------------------------------------------------------------

class TopicReader:
    """Reads one topic from its start in a background thread; subclasses handle each poll's records.

    It keeps what shows whether it keeps up: its position (records read), the
    delay of each poll behind its topic (the poll's time minus the oldest
    record's timestamp in it, see subclasses) and its thread's CPU.
    """

    def __init__(self, bootstrap: str, topic: str, group: str, batch: int, timeout_s: float) -> None:
        self.lock = threading.Lock()
        self.topic = topic
        self._batch, self._timeout_s = batch, timeout_s
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "enable.auto.commit": False})
        self._partitions = assign_from_start(self._consumer, topic)
        self.position = 0           # records of the topic read so far (next offsets, summed)
        self.messages = 0
        self.delays = array("q")    # ms, one per poll that returned records
        self.tid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(self._batch, self._timeout_s)
                if not msgs:
                    self._idle()
                    continue
                oldest = self._handle(msgs)
                if oldest is not None:
                    self.delays.append(int(time.time() * 1000) - oldest)
                self.messages += len(msgs)
                self.position = sum(max(tp.offset, 0) for tp in self._consumer.position(self._partitions))
        finally:
            self._consumer.close()

    def _handle(self, msgs: list) -> int | None:
        """Take in one poll's records; return the oldest record timestamp (ms) among them, if any."""
        raise NotImplementedError

    def _idle(self) -> None:
        """A poll returned nothing."""

    def cpu_s(self) -> float:
        """CPU seconds of the reader's thread (librdkafka's own threads not included)."""
        return thread_cpu_s(self.tid)

    def delay_ms(self, from_index: int = 0) -> list[float]:
        """p50, p99 and max of the polls' delays behind the topic, from the `from_index`-th poll on."""
        values = numpy.array(self.delays[from_index:], dtype=numpy.int64)
        if not len(values):
            return [float("nan")] * 3
        return [float(numpy.percentile(values, 50)), float(numpy.percentile(values, 99)), float(values.max())]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class TickLog(TopicReader):
    """Event time of every tick on the input topic, per (symbol, window), in partition order.

    Read from the records' key and timestamp (= event time, DESIGN.md §2): no
    JSON parse, so watching costs little of the machine under test, and the
    same per tick whatever the number of symbols (one dict look-up).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.stamps: dict[tuple[str, int], array] = defaultdict(lambda: array("q"))
        self.count = 0
        super().__init__(bootstrap, topic, f"compare-ticks-{topic}", batch=5000, timeout_s=0.2)

    def _handle(self, msgs: list) -> int | None:
        oldest = None
        with self.lock:
            stamps = self.stamps
            for msg in msgs:
                if msg.error() is None:
                    stamp = msg.timestamp()[1]
                    stamps[(msg.key().decode(), stamp - stamp % WINDOW_MS)].append(stamp)
                    self.count += 1
                    if oldest is None or stamp < oldest:
                        oldest = stamp
        return oldest


class BarProgress(TopicReader):
    """Ticks a system has put into published bars, read from its bar topic.

    processed = Σ over (symbol, window) of the newest tick_count seen. Every
    time is the bar's append time on its topic (LogAppendTime, set by
    Outputs.create; the reader's clock on a topic without it). With a
    TickLog, each tick a new bar version covers gets its latency: the bar's
    append time minus the tick's event time; ON_TIME panes get their delay
    after their window's end.
    """

    def __init__(self, bootstrap: str, topic: str, ticks: TickLog | None = None) -> None:
        self.covered: dict[tuple[str, int], int] = defaultdict(int)
        self.final: dict[tuple[str, int], tuple[int, int]] = {}   # key -> (pane_index, tick_count)
        self.final_sum = 0
        self.processed = 0
        self.bars = 0
        self.first_ms: int | None = None      # append time of the first bar
        self.last_final_ms: int | None = None   # ... of the last bar that added ticks to the final bars
        self.ticks = ticks
        self.latency_at = array("q")    # append time (ms) of the bar, per latency sample
        self.latency = array("q")       # ms
        self.to_emit = array("q")       # ms, per latency sample: the bar's emitted_at - the tick's event time
        self.on_time = array("q")       # per ON_TIME pane: window_end, append time, delay (ms), flat
        self._pending: list[tuple[tuple[str, int], int, int, int]] = []
        self._resolved_at = -1          # tick_log.count at the last _resolve
        self._new_pending = False
        # Per bar version that added ticks: its append time and the ticks it
        # added. The 10 % / 90 % marks and "processed at t" come from here
        # (timeline()), at the resolution of one bar, whatever the polls.
        self._gain_at = array("q")
        self._gain = array("q")
        super().__init__(bootstrap, topic, f"compare-bars-{topic}", batch=1000, timeout_s=0.05)

    def _handle(self, msgs: list) -> int | None:
        now_ms = int(time.time() * 1000)
        oldest = None
        loads = orjson.loads
        with self.lock:
            for msg in msgs:
                if msg.error() is None:
                    kind, stamp = msg.timestamp()
                    appended = stamp if kind == TIMESTAMP_LOG_APPEND_TIME else now_ms
                    self._on_bar(loads(msg.value()), appended)
                    if oldest is None or appended < oldest:
                        oldest = appended
            # Only when something could have changed: the pending list
            # grows when the TickLog trails, and each poll would walk it.
            if self._new_pending or (self._pending and self.ticks.count != self._resolved_at):
                self._resolve()
        return oldest

    def _idle(self) -> None:
        # The TickLog may have read the ticks of the last bars since.
        with self.lock:
            if self._pending and self.ticks.count != self._resolved_at:
                self._resolve()

    def _on_bar(self, bar: dict, appended: int) -> None:
        key = (bar["symbol"], bar["window_start"])
        count = bar["tick_count"]
        self.bars += 1
        if self.first_ms is None or appended < self.first_ms:
            self.first_ms = appended
        if bar.get("is_final"):
            pane = bar.get("pane_index", 0)
            old = self.final.get(key)
            if old is None or pane >= old[0]:
                self.final[key] = (pane, count)
                gained = count - (old[1] if old else 0)
                self.final_sum += gained
                if gained > 0:
                    self.last_final_ms = max(self.last_final_ms or appended, appended)
            if bar.get("pane") == "ON_TIME":
                self.on_time.extend((bar["window_end"], appended, appended - bar["window_end"]))
        before = self.covered[key]
        if count <= before:
            return
        self.covered[key] = count
        self.processed += count - before
        self._gain_at.append(appended)
        self._gain.append(count - before)
        if self.ticks is not None:
            self._pending.append((key, before, count, appended, bar.get("emitted_at") or appended))
            self._new_pending = True

    def _resolve(self) -> None:
        """Latencies of covered ticks the TickLog has read (it may trail the bars by a poll)."""
        waiting = []
        self._new_pending = False
        with self.ticks.lock:
            self._resolved_at = self.ticks.count
            for entry in self._pending:
                key, before, count, appended, emitted = entry
                stamps = self.ticks.stamps.get(key)
                if stamps is None or len(stamps) < count:
                    waiting.append(entry)
                    continue
                self.latency.extend([appended - stamp for stamp in stamps[before:count]])
                self.to_emit.extend([emitted - stamp for stamp in stamps[before:count]])
                self.latency_at.extend(array("q", [appended]) * (count - before))
        self._pending = waiting

    def timeline(self) -> "Timeline":
        """Ticks in bars by append time, as far as this reader has read."""
        with self.lock:
            at = numpy.array(self._gain_at, dtype=numpy.int64)
            gain = numpy.array(self._gain, dtype=numpy.int64)
        order = numpy.argsort(at, kind="stable")
        return Timeline(at[order], numpy.cumsum(gain[order]))

    def final_ticks(self) -> int:
        return self.final_sum

    def latencies_from(self, index: int) -> tuple[numpy.ndarray, int]:
        """Latencies resolved since the `index`-th one, and the index to ask from next time."""
        with self.lock:
            end = len(self.latency)
            return numpy.array(self.latency[index:end], dtype=numpy.int64), end

    def latencies_between(self, start_ms: float, end_ms: float = float("inf")) -> numpy.ndarray:
        """Latencies of the ticks whose first bar version was appended in [start_ms, end_ms]."""
        with self.lock:
            latency = numpy.array(self.latency, dtype=numpy.int64)
            at = numpy.array(self.latency_at, dtype=numpy.int64)
        return latency[(at >= start_ms) & (at <= end_ms)]

    def hops_between(self, start_ms: float, end_ms: float = float("inf")) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The latencies of latencies_between split at the bar's `emitted_at`: event -> emit, emit -> append."""
        with self.lock:
            latency = numpy.array(self.latency, dtype=numpy.int64)
            to_emit = numpy.array(self.to_emit, dtype=numpy.int64)
            at = numpy.array(self.latency_at, dtype=numpy.int64)
        inside = (at >= start_ms) & (at <= end_ms)
        return to_emit[inside], (latency - to_emit)[inside]

    def on_time_delays(self, start_ms: float, end_ms: float) -> numpy.ndarray:
        """Append time − window end of the ON_TIME panes of windows ending in [start_ms, end_ms]."""
        with self.lock:
            flat = numpy.array(self.on_time, dtype=numpy.int64).reshape(-1, 3)
        ends = flat[:, 0]
        return flat[(ends >= start_ms) & (ends <= end_ms), 2]

    def pending(self) -> int:
        """Bar versions whose ticks the TickLog has not read yet."""
        with self.lock:
            return len(self._pending)


@dataclass
class Timeline:
    """Progress by the bars' append times: `at` sorted (ms), `total[i]` ticks in bars appended up to `at[i]`."""
    at: numpy.ndarray
    total: numpy.ndarray

    def processed_at(self, when_ms: float) -> int:
        """Ticks in bars appended up to `when_ms`."""
        i = int(numpy.searchsorted(self.at, when_ms, side="right"))
        return int(self.total[i - 1]) if i else 0

    def crossed(self, count: float) -> tuple[int, int] | None:
        """(append time ms, processed) of the bar that took processed to `count` or more; None before."""
        i = int(numpy.searchsorted(self.total, count, side="left"))
        return (int(self.at[i]), int(self.total[i])) if i < len(self.total) else None

    def longest_gap_ms(self, start_ms: float, end_ms: float) -> int:
        """The longest time between two bars that added ticks, within [start_ms, end_ms]."""
        times = self.at[(self.at >= start_ms) & (self.at <= end_ms)]
        return int(numpy.diff(times).max()) if len(times) > 1 else 0


def percentiles(values, qs=(50, 95, 99)) -> list[float]:
    values = numpy.asarray(values, dtype=numpy.int64)
    if len(values) < 2:
        return [float("nan")] * len(qs)
    return [float(v) for v in numpy.percentile(values, qs)]


# --- drain ---------------------------------------------------------------------------------------

@dataclass
class DrainResult:
    system: str
    symbols: int | None
    ticks: int
    rate: float = float("nan")                  # ticks/s, 10 % -> 90 % of the ticks in published bars
    seconds: float = float("nan")
    startup_s: float = float("nan")
    cpu_us_per_tick: dict[str, float] = field(default_factory=dict)        # by kind, 10 % -> 90 %
    full_rate: float = float("nan")             # ticks/s, first bar -> last final bar
    full_s: float = float("nan")
    full_cpu_us_per_tick: dict[str, float] = field(default_factory=dict)   # by kind, same span
    processed: int = 0
    final_ticks: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    reader: str = ""                            # what the benchmark's bar reader cost
    note: str = ""

    @property
    def accounted(self) -> int:
        """Ticks that ended somewhere: in a final bar or as a dead letter."""
        return self.final_ticks + sum(self.dead_letters.values())

    @property
    def complete(self) -> bool:
        return self.accounted == self.ticks


def fill(bootstrap: str, topic: str, ticks: int, seed: int, symbols: int | None, run_dir: Path) -> None:
    """`ticks` ticks from the project's producer, event time over 60 minutes that ended a minute or two ago."""
    create_topics(bootstrap, {topic: config.TICKS.partitions})
    end = int(time.time() * 1000) - DRAIN_END_MARGIN_MS
    start = end - end % WINDOW_MS - EVENT_SPAN_MS
    producer = Started("producer (fill)", [
        PYTHON, "-m", "producer", f"--bootstrap_servers={bootstrap}", f"--input_topic={topic}",
        f"--count={ticks}", "--rate=0", f"--start_time={start}", f"--event_rate={ticks * 1000 / EVENT_SPAN_MS}",
        f"--seed={seed}", "--stats_interval_s=0", *producer_symbol_flags(symbols)], run_dir / "fill.log")
    t0 = time.monotonic()
    try:
        code = producer.proc.wait(timeout=max(600.0, ticks / 5000))
    finally:
        producer.stop()
    partitions = end_offsets(bootstrap, topic)
    if code != 0 or sum(partitions) != ticks:
        raise BenchError(f"filling {topic}: producer exited {code}, {sum(partitions)} of {ticks} ticks on the "
                         f"topic; see {run_dir / 'fill.log'}")
    print(f"filled {topic}: {sum(partitions)} ticks over {symbols_label(symbols)} symbols in "
          f"{time.monotonic() - t0:.1f}s (partitions {partitions})", flush=True)


class Profiler:
    """py-spy on the pipeline's Python processes and JFR on its job-server JVM, started and stopped on demand."""

    def __init__(self, system: Started, out_dir: Path, max_s: int) -> None:
        self.system = system
        self.out_dir = out_dir
        self.max_s = max_s
        self.spy: Started | None = None
        self.jvm: int | None = None
        self.spy_out = out_dir / "pipeline-python.pyspy.txt"
        self.jfr_out = out_dir / "job-server.jfr"

    def start(self) -> None:
        if not PY_SPY.exists():
            raise BenchError(f"--profile needs py-spy: run ./benchmarks/setup.sh ({PY_SPY} is missing)")
        # --nonblocking: never pause the pipeline to sample it; --subprocesses:
        # Python SDK workers the job server starts (PROCESS environment) too.
        self.spy = Started("py-spy", [str(PY_SPY), "record", "--pid", str(self.system.pid), "--rate", "100",
                                      "--nonblocking", "--subprocesses", "--function", "--format", "raw",
                                      "--duration", str(self.max_s), "--output", str(self.spy_out)],
                           self.out_dir / "py-spy.log")
        jvms = self.system.pids_of("job-server JVM")
        if jvms:
            self.jvm = jvms[0]
            subprocess.run(["jcmd", str(self.jvm), "JFR.start", "name=compare", "settings=profile",
                            f"duration={self.max_s}s", f"filename={self.jfr_out}"],
                           capture_output=True, timeout=60, check=False)

    def stop(self) -> None:
        if self.jvm is not None:
            subprocess.run(["jcmd", str(self.jvm), "JFR.stop", "name=compare", f"filename={self.jfr_out}"],
                           capture_output=True, timeout=120, check=False)
        if self.spy is not None and self.spy.running():
            os.kill(self.spy.pid, signal.SIGINT)   # py-spy writes its output on Ctrl-C
            try:
                self.spy.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.spy is not None:
            self.spy.stop(grace_s=5)

    def report(self, top: int = 20) -> str:
        parts = []
        if self.spy_out.exists():
            parts.append(summarize_py_spy(self.spy_out, top))
        else:
            parts.append(f"(no py-spy output; see {self.out_dir / 'py-spy.log'})")
        if self.jfr_out.exists():
            parts.append(summarize_jfr(self.jfr_out, top))
        else:
            parts.append("(no JFR recording)")
        return "\n".join(parts)


def _frame_name(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'fn (module.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})" if where else name


def summarize_py_spy(path: Path, top: int) -> str:
    """Top frames by self and by total samples of a py-spy raw (collapsed stacks) file."""
    own: Counter = Counter()
    total: Counter = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    lines = [f"py-spy, pipeline Python processes: {samples} samples (non-idle), raw stacks in {path}",
             "  self %  frame"]
    lines += [f"  {100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)] if samples else []
    lines += ["  total %  frame (inclusive)"]
    lines += [f"  {100 * n / samples:6.1f}  {name}" for name, n in total.most_common(top)] if samples else []
    return "\n".join(lines)


def summarize_jfr(path: Path, top: int) -> str:
    """Top threads, self and inclusive methods of the JFR execution samples."""
    result = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", str(path)],
                            capture_output=True, timeout=300, check=False)
    if result.returncode != 0:
        return f"(jfr print failed: {result.stderr.decode(errors='replace')[:300]})"
    events = json.loads(result.stdout)["recording"]["events"]
    threads: Counter = Counter()
    own: Counter = Counter()
    total: Counter = Counter()
    for event in events:
        values = event["values"]
        thread = (values.get("sampledThread") or {}).get("javaName") or "?"
        threads[thread.rstrip("0123456789").rstrip("-#")] += 1
        frames = ((values.get("stackTrace") or {}).get("frames")) or []
        names = [f"{f['method']['type']['name'].rsplit('.', 1)[-1]}.{f['method']['name']}" for f in frames]
        if names:
            own[names[0]] += 1
            for name in set(names):
                total[name] += 1
    n = len(events) or 1
    lines = [f"JFR, job-server JVM: {len(events)} execution samples (Java code only), recording {path}",
             "  samples %  thread"]
    lines += [f"  {100 * c / n:6.1f}  {name}" for name, c in threads.most_common(10)]
    lines += ["  self %  method"] + [f"  {100 * c / n:6.1f}  {name}" for name, c in own.most_common(top)]
    lines += ["  total %  method (inclusive)"] + [f"  {100 * c / n:6.1f}  {name}"
                                                 for name, c in total.most_common(top)]
    return "\n".join(lines)


def drain_one(result: DrainResult, cmd: list[str], env: dict | None, bootstrap: str, bars_topic: str,
              run_dir: Path, timeout_s: float, profile: bool = False,
              profile_s: int = 60) -> tuple[BarProgress, Started]:
    """Start one system on the filled topic; measure 10 %→90 %; leave it running for the final check."""
    system, ticks = result.system, result.ticks
    progress = BarProgress(bootstrap, bars_topic)
    proc = Started(system, cmd, run_dir / f"{system}.log", env=env)
    t0 = time.time()
    seen: set[float] = set()
    profiler = None
    deadline = time.monotonic() + timeout_s
    while 0.9 not in seen and time.monotonic() < deadline:
        proc.require_running()
        if progress.bars == 0 and time.time() - t0 > FIRST_BAR_TIMEOUT_S:
            result.note = f"no bar at all {FIRST_BAR_TIMEOUT_S}s after the start: see {proc.log_path}"
            break
        done = progress.processed
        for fraction in (0.1, 0.9):
            if fraction not in seen and done >= fraction * ticks:
                seen.add(fraction)
                print(f"  {system}: {fraction:.0%} at {time.time() - t0:.1f}s", flush=True)
                if fraction == 0.1 and profile:
                    profiler = Profiler(proc, run_dir, profile_s)
                    profiler.start()
                if fraction == 0.9 and profiler is not None:
                    profiler.stop()
        time.sleep(0.05)
    if 0.9 not in seen:
        result.note = result.note or f"timed out after {timeout_s:.0f}s at {progress.processed} ticks"
        if profiler is not None:
            profiler.stop()
    timeline = progress.timeline()
    # The whole curve, not only its 10 % / 90 % marks: a slow start and a
    # fast finish (or the reverse) average out in one rate.
    marks = [timeline.crossed(f / 10 * ticks) for f in range(1, 10)]
    print(f"  {system}: s after start at 10 %, 20 %, ... 90 %: "
          + ", ".join(f"{m[0] / 1000 - t0:.1f}" for m in marks if m is not None), flush=True)
    mark10, mark90 = marks[0], marks[-1]
    if mark10 is not None:
        (t10, n10), (t90, n90) = mark10, mark90 or (int(time.time() * 1000), progress.processed)
        result.startup_s = t10 / 1000 - t0
        result.seconds = (t90 - t10) / 1000
        if n90 > n10 and t90 > t10:
            result.rate = (n90 - n10) / result.seconds
        # Progress moves in steps (the pipeline's EARLY panes every second):
        # the longest step over the span bounds the error.
        step = timeline.longest_gap_ms(t10, t90) / 1000
        error = 100 * step / result.seconds if result.seconds > 0 else float("inf")
        if error > 10:
            result.note = "; ".join(filter(None, [
                result.note, f"10 %→90 % took {result.seconds:.1f}s in steps up to {step:.2f}s: "
                             f"rate ±{error:.0f} %, use more --ticks"]))
        result.cpu_us_per_tick = per_tick(proc.cpu_between(t10 / 1000, t90 / 1000), n90 - n10)
    if profiler is not None:
        print(profiler.report(), flush=True)
    return progress, proc


def wait_complete(progress: BarProgress, proc: Started, expected: int, quiet_s: float, timeout_s: float,
                  dead_letters=lambda: 0) -> None:
    """Until every tick is in a final bar or a dead letter, or nothing new came for `quiet_s`, or the timeout."""
    deadline = time.monotonic() + timeout_s
    last, last_change = None, time.monotonic()
    dlq, next_dlq = 0, 0.0
    while time.monotonic() < deadline and proc.running():
        if time.monotonic() >= next_dlq:
            dlq, next_dlq = dead_letters(), time.monotonic() + 2
        finals = progress.final_ticks()
        if finals + dlq >= expected:
            return
        state = (finals, progress.bars, dlq)
        if state != last:
            last, last_change = state, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.5)


def finish_drain(result: DrainResult, progress: BarProgress, proc: Started, dead_letters: Counter) -> None:
    """The whole-drain figures, once the system has put every tick it will into final bars."""
    result.processed = progress.processed
    result.final_ticks = progress.final_ticks()
    result.dead_letters = dead_letters
    first, last = progress.first_ms, progress.last_final_ms
    if first is not None and last is not None and last > first:
        result.full_s = (last - first) / 1000
        result.full_rate = result.accounted / result.full_s
        result.full_cpu_us_per_tick = per_tick(proc.cpu_between(first / 1000, last / 1000), result.accounted)
        # Where the whole drain's time goes: reading and binning the ticks,
        # or waiting for the watermark to close the last windows.
        timeline = progress.timeline()
        marks = [(share, timeline.crossed(share * result.ticks)) for share in (0.1, 0.5, 0.9, 0.95, 0.99, 1.0)]
        print(f"  {result.system}: s after the first bar at which that share of the ticks was in bars: "
              + ", ".join(f"{share:.0%} {(mark[0] - first) / 1000:.1f}" for share, mark in marks if mark)
              + f"; the last final bar {(last - first) / 1000:.1f}", flush=True)
    _, p99, worst = progress.delay_ms()
    result.reader = (f"bar reader {1e6 * progress.cpu_s() / progress.bars:.1f} µs per bar version "
                     f"({progress.bars:,}), p99 {p99:,.0f} ms behind its topic (max {worst:,.0f})"
                     if progress.bars else "bar reader: no bars")


def system_command(system: str, bootstrap: str, ticks_topic: str, outputs: Outputs, group: str, run_dir: Path,
                   pipeline_args: list[str]) -> list[str]:
    if system == "raw":
        return [PYTHON, str(BENCH_DIR / "peer_raw.py"), f"--bootstrap_servers={bootstrap}",
                f"--input_topic={ticks_topic}", f"--output_topic={outputs.bars}", f"--group={group}"]
    if system == "quix":
        return [str(BENCH_PYTHON), str(BENCH_DIR / "peer_quix.py"), f"--bootstrap_servers={bootstrap}",
                f"--input_topic={ticks_topic}", f"--output_topic={outputs.bars}", f"--group={group}"]
    if system == "pipeline":
        return pipeline_command(bootstrap, ticks_topic, outputs, group, run_dir / "checkpoints", pipeline_args)
    raise BenchError(f"unknown system {system!r}: raw, quix, pipeline")


def drain_run(args: argparse.Namespace, systems: list[str], symbols: int | None, label: str) -> list[DrainResult]:
    """One fill of a fresh topic, then each system on it in turn."""
    run_id = f"cmp{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    created = [ticks_topic]
    results: list[DrainResult] = []
    print(f"== {label} ({run_id}, logs and profiles in {run_dir})", flush=True)
    offsets = EndOffsets(args.bootstrap_servers)
    try:
        fill(args.bootstrap_servers, ticks_topic, args.ticks, args.seed, symbols, run_dir)
        for system in systems:
            outputs = Outputs.create(args.bootstrap_servers, f"{run_id}_{system}")
            created += outputs.names()
            group = f"{run_id}-{system}"
            cmd = system_command(system, args.bootstrap_servers, ticks_topic, outputs, group, run_dir,
                                 args.pipeline_arg)
            print(f"-- {system}: {' '.join(cmd[1:3])} ...", flush=True)
            result = DrainResult(system, symbols, args.ticks)
            progress, proc = drain_one(result, cmd, None, args.bootstrap_servers, outputs.bars, run_dir,
                                       args.timeout_s, profile=system == "pipeline" and args.profile,
                                       profile_s=args.profile_s)
            try:
                # Quix never closes the windows of the last 90 s of event
                # time (no newer tick passes their grace period): it stops
                # at the first quiet spell, short of every tick.
                wait_complete(progress, proc, args.ticks, quiet_s=10 if system == "quix" else 30,
                              timeout_s=args.settle_s,
                              dead_letters=lambda: offsets.total(outputs.dlq) if system == "pipeline" else 0)
                reasons = dead_letter_reasons(args.bootstrap_servers, outputs.dlq) if system == "pipeline" \
                    else Counter()
                finish_drain(result, progress, proc, reasons)
            finally:
                progress.close()
                proc.stop()
                created += topics_containing(args.bootstrap_servers, group)
            results.append(result)
            print(f"  {system}: {result.rate:,.0f} ticks/s (10 %→90 %), {result.full_rate:,.0f} ticks/s (first bar "
                  f"→ last final bar, {result.full_s:,.1f}s); final bars hold {result.final_ticks:,} of "
                  f"{args.ticks:,} ticks {result.note}", flush=True)
            print(f"  benchmark's {result.reader}", flush=True)
    finally:
        offsets.close()
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, created)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return results


def run_drain(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if "quix" in systems and not BENCH_PYTHON.exists():
        raise BenchError(f"Quix Streams runs in {BENCH_VENV}: run ./benchmarks/setup.sh first")
    counts = symbol_counts(args.symbols)
    require_symbol_count(counts)
    by_count: list[tuple[int | None, list[list[DrainResult]]]] = []
    for symbols in counts:
        runs: list[list[DrainResult]] = []
        for run in range(1, args.runs + 1):
            label = f"{symbols_label(symbols)} symbols, run {run}/{args.runs}"
            results = drain_run(args, systems, symbols, label)
            runs.append(results)
            print_drain_table(results, args.ticks)
        by_count.append((symbols, runs))
    print_drain_summary(by_count, args.ticks)
    return 0


def _cpu_text(per_kind: dict[str, float]) -> str:
    return ", ".join(f"{kind} {us:.1f}" for kind, us in sorted(per_kind.items(), key=lambda i: -i[1])
                     if us >= 0.05) or "-"


def _runtime_text(per_kind: dict[str, float]) -> str:
    """'JVM 4.1 / Python 6.5' (µs/tick), or 'Python 1.2' for a system with no JVM."""
    runtimes = by_runtime(per_kind)
    return " / ".join(f"{name} {runtimes[name]:.1f}" for name in ("JVM", "Python") if name in runtimes) or "-"


def _tick_check(r: DrainResult) -> str:
    done = f"{r.final_ticks:,} in final bars"
    if r.dead_letters:
        done += f" + {sum(r.dead_letters.values()):,} dead letters {dict(r.dead_letters)}"
    return f"{'yes' if r.complete else 'no'}: {done} of {r.ticks:,}"


def print_drain_table(results: list[DrainResult], ticks: int) -> None:
    quix = next((r.rate for r in results if r.system == "quix"), float("nan"))
    print("\n| system | ticks/s (10 %→90 %) | ticks/s (first bar → last final bar) | × Quix | start-up s "
          "| CPU µs/tick (10 %→90 %) | CPU µs/tick (first bar → last final bar) | every tick in a final bar |")
    print("|---|---:|---:|---:|---:|---|---|---|")
    for r in results:
        check = _tick_check(r) + (f" ({r.note})" if r.note else "")
        print(f"| {r.system} | {r.rate:,.0f} | {r.full_rate:,.0f} | {r.rate / quix:.2f} | {r.startup_s:.1f} "
              f"| {_cpu_text(r.cpu_us_per_tick)} | {_runtime_text(r.full_cpu_us_per_tick)} | {check} |")
    print(flush=True)


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def print_drain_summary(by_count: list[tuple[int | None, list[list[DrainResult]]]], ticks: int) -> None:
    """One table by symbol count and system, every run's rates and their medians: for docs/performance.md."""
    print(f"drain of {ticks:,} ticks, event time over the 60 minutes before the fill; "
          f"CPU over first bar → last final bar")
    print("\n| symbols | system | ticks/s 10 %→90 % (runs) | median | ticks/s first bar → last final bar (runs) "
          "| median | median × Quix (10→90 / whole) | CPU µs/tick JVM / Python (median) "
          "| every tick in a final bar |")
    print("|---:|---|---|---:|---|---:|---:|---|---|")
    for symbols, runs in by_count:
        by_system: dict[str, list[DrainResult]] = defaultdict(list)
        for results in runs:
            for r in results:
                by_system[r.system].append(r)
        quix = by_system.get("quix", [])
        quix_rate, quix_full = _median([r.rate for r in quix]), _median([r.full_rate for r in quix])
        for system, rs in by_system.items():
            rate, full = _median([r.rate for r in rs]), _median([r.full_rate for r in rs])
            cpu: dict[str, float] = {}
            for name in ("JVM", "Python"):
                values = [by_runtime(r.full_cpu_us_per_tick)[name] for r in rs
                          if name in by_runtime(r.full_cpu_us_per_tick)]
                if values:
                    cpu[name] = _median(values)
            short = [f"run {i}: {r.accounted:,} of {r.ticks:,}" for i, r in enumerate(rs, 1) if not r.complete]
            check = f"{len(rs) - len(short)} of {len(rs)} runs" + (f" ({'; '.join(short)})" if short else "")
            print(f"| {symbols_label(symbols)} | {system} | {', '.join(f'{r.rate:,.0f}' for r in rs)} | {rate:,.0f} "
                  f"| {', '.join(f'{r.full_rate:,.0f}' for r in rs)} | {full:,.0f} "
                  f"| {rate / quix_rate:.2f} / {full / quix_full:.2f} "
                  f"| {' / '.join(f'{n} {v:.1f}' for n, v in cpu.items()) or '-'} | {check} |")
    print(flush=True)


# --- live ----------------------------------------------------------------------------------------

@dataclass
class ReadersMark:
    """What the benchmark's own readers had done and cost at one moment."""
    wall: float
    process_cpu: float      # the whole benchmark process: readers, librdkafka's threads, the watchers
    ticks_cpu: float
    ticks_read: int
    ticks_polls: int
    bars_cpu: float
    bars_read: int
    bars_polls: int

    @classmethod
    def take(cls, tick_log: TickLog, progress: BarProgress) -> "ReadersMark":
        return cls(time.time(), time.process_time(), tick_log.cpu_s(), tick_log.messages, len(tick_log.delays),
                   progress.cpu_s(), progress.messages, len(progress.delays))


@dataclass
class LiveResult:
    symbols: int | None
    rate: int
    duration: int
    offered: float = float("nan")
    processed: float = float("nan")
    backlog: tuple[int, int] | None = None
    growth: float = float("nan")
    sustained: bool | None = None
    latency: list[float] = field(default_factory=lambda: [float("nan")] * 3)
    latency_n: int = 0
    on_time_p99: float = float("nan")
    on_time_n: int = 0
    cpu_us_per_tick: dict[str, float] = field(default_factory=dict)   # by kind, the pipeline's processes
    producer_us_per_tick: float = float("nan")
    readers: str = ""
    readers_keep_up: bool | None = None
    dead_letters: Counter = field(default_factory=Counter)


def run_live(args: argparse.Namespace) -> int:
    counts = symbol_counts(args.symbols)
    rates = [int(part) for part in args.rate.replace("_", "").split(",") if part.strip()]
    require_symbol_count(counts)
    results = [live_one(args, symbols, rate) for symbols in counts for rate in rates]
    print_live_summary(results, args)
    return 0


def live_one(args: argparse.Namespace, symbols: int | None, rate: int) -> LiveResult:
    """The pipeline under the producer at `rate` ticks/s over `symbols` symbols, on topics of its own."""
    run_id = f"live{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = args.bootstrap_servers
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    create_topics(bootstrap, {ticks_topic: config.TICKS.partitions})
    created = [ticks_topic]
    result = LiveResult(symbols, rate, args.duration)
    tick_log = progress = offsets = profiler = None
    try:
        outputs = Outputs.create(bootstrap, run_id)
        created += outputs.names()
        group = f"{run_id}-pipeline"
        offsets = EndOffsets(bootstrap)
        tick_log = TickLog(bootstrap, ticks_topic)
        progress = BarProgress(bootstrap, outputs.bars, tick_log)
        print(f"== live: {symbols_label(symbols)} symbols at {rate} ticks/s for {args.duration}s ({run_id}, "
              f"logs in {run_dir})", flush=True)
        pipeline = Started("pipeline", pipeline_command(bootstrap, ticks_topic, outputs, group,
                                                        run_dir / "checkpoints", args.pipeline_arg),
                           run_dir / "pipeline.log")
        producer_cmd = [PYTHON, "-m", "producer", f"--bootstrap_servers={bootstrap}", f"--input_topic={ticks_topic}",
                        f"--seed={args.seed}", "--stats_interval_s=0", *producer_symbol_flags(symbols)]
        # Warm up: a trickle until the first bar shows the job is running.
        t0 = time.monotonic()
        warm = Started("producer (warm-up)", [*producer_cmd, "--rate=100"], run_dir / "warmup.log")
        while progress.processed == 0:
            pipeline.require_running()
            warm.require_running()
            if time.monotonic() - t0 > args.timeout_s:
                raise BenchError(f"no bar {args.timeout_s:.0f}s after the pipeline started; see {pipeline.log_path}")
            time.sleep(0.2)
        warm.stop()
        print(f"pipeline live after {time.monotonic() - t0:.0f}s", flush=True)

        producer = Started("producer", [*producer_cmd, f"--rate={rate}", f"--duration_s={args.duration}"],
                           run_dir / "producer.log")
        start_wall = time.time()
        print(f"{'t s':>5} {'offered/s':>10} {'processed/s':>12} {'backlog':>9} {'group lag':>10} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'bars/s':>8} {'readers behind (ticks, bars)':>29}", flush=True)
        series: list[tuple[float, int, int, bool]] = []   # (t, published, processed, producer running)
        marks: dict[str, ReadersMark] = {}
        last_t, last_pub, last_done, last_bars = (time.time(), offsets.total(ticks_topic), progress.processed,
                                                   progress.messages)
        lat_index = 0
        while producer.running():
            pipeline.require_running()
            time.sleep(min(args.interval_s, max(0.5, args.duration + start_wall - time.time() + 1)))
            now = time.time()
            # Published from the broker, not from the tick log: a tick log
            # that trails must not shrink the backlog.
            pub, done, bars = offsets.total(ticks_topic), progress.processed, progress.messages
            behind = (pub - tick_log.position, offsets.total(outputs.bars) - progress.position)
            t = now - start_wall
            series.append((t, pub, done, producer.running()))
            lat, lat_index = progress.latencies_from(lat_index)
            lag = group_lag(bootstrap, group, ticks_topic, 3)
            p50, p99 = percentiles(lat, (50, 99))
            span = now - last_t
            print(f"{t:>5.0f} {(pub - last_pub) / span:>10,.0f} {(done - last_done) / span:>12,.0f} "
                  f"{pub - done:>9,} {lag if lag is not None else '-':>10} {p50:>7.0f} {p99:>7.0f} "
                  f"{(bars - last_bars) / span:>8,.0f} {f'{behind[0]:,}, {behind[1]:,}':>29}", flush=True)
            last_t, last_pub, last_done, last_bars = now, pub, done, bars
            if t >= args.warmup_s and producer.running():
                # The readers' cost between the first and the last mark
                # taken while the producer still runs.
                marks["start" if "start" not in marks else "end"] = ReadersMark.take(tick_log, progress)
                if args.profile and profiler is None:
                    profiler = Profiler(pipeline, run_dir, args.profile_s)
                    profiler.start()
        # The producer ran at its rate until its last second (then it flushes).
        measured_until = min(time.time(), start_wall + args.duration - 1)
        if profiler is not None:
            profiler.stop()
        end_backlog = offsets.total(ticks_topic) - progress.processed
        # Let the backlog drain to tell "slow" from "lost", and the readers
        # reach the ends of their topics before anything is reported.
        deadline = time.monotonic() + 60
        while offsets.total(ticks_topic) > progress.processed and time.monotonic() < deadline and pipeline.running():
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and readers_behind(offsets, tick_log, progress, ticks_topic, outputs.bars):
            time.sleep(0.5)
        report_live(args, result, series, progress, tick_log, offsets, ticks_topic, outputs.bars, marks,
                    start_wall, measured_until, end_backlog, pipeline, producer)
        if profiler is not None:
            print(profiler.report(), flush=True)
        result.dead_letters = dead_letter_reasons(bootstrap, outputs.dlq)
        print(f"dead letters: {dict(result.dead_letters)}\n", flush=True)
    finally:
        Started.stop_all()
        for watcher in (progress, tick_log):
            if watcher is not None:
                watcher.close()
        if offsets is not None:
            offsets.close()
        if not args.keep_topics:
            delete_topics(bootstrap, created)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def readers_behind(offsets: EndOffsets, tick_log: TickLog, progress: BarProgress, ticks_topic: str,
                   bars_topic: str) -> tuple:
    """(ticks, bar versions) the readers have not read, bar versions waiting for their ticks; () when none."""
    behind = (offsets.total(ticks_topic) - tick_log.position, offsets.total(bars_topic) - progress.position,
              progress.pending())
    return behind if any(behind) else ()


def report_live(args: argparse.Namespace, result: LiveResult, series: list[tuple[float, int, int, bool]],
                progress: BarProgress, tick_log: TickLog, offsets: EndOffsets, ticks_topic: str, bars_topic: str,
                marks: dict[str, ReadersMark], start_wall: float, measured_until: float, end_backlog: int,
                pipeline: Started, producer: Started) -> None:
    """Print the run's figures and fill `result` with them.

    CPU, ticks processed and ON_TIME panes are taken over [start_wall +
    warm-up, measured_until] from the CPU samples and the bars' append
    times; the backlog and the readers' cost at the interval marks.
    """
    # Processed as of each moment from the bars' append times, not from what
    # the bar reader had read then: exact even if the reader trailed.
    timeline = progress.timeline()
    steady = [(t, pub, timeline.processed_at((start_wall + t) * 1000)) for t, pub, _, running in series
              if t >= args.warmup_s and running]
    if len(steady) >= 2:
        (t_a, pub_a, done_a), (t_b, pub_b, done_b) = steady[0], steady[-1]
        b_a, b_b = pub_a - done_a, pub_b - done_b
        result.growth = (b_b - b_a) / (t_b - t_a)
        result.processed = (done_b - done_a) / (t_b - t_a)
        result.offered = (pub_b - pub_a) / (t_b - t_a)
        result.backlog = (b_a, b_b)
        # Sustained: the backlog grows by less than 1 % of the offered rate.
        result.sustained = result.growth < 0.01 * result.rate
        verdict = "sustained" if result.sustained else "NOT sustained (backlog growing)"
        print(f"\nfrom {args.warmup_s:.0f}s to {t_b:.0f}s (the producer running): offered {result.offered:,.0f}/s, "
              f"processed {result.processed:,.0f}/s, backlog {b_a:,} -> {b_b:,} ({result.growth:+,.0f}/s): {verdict}")
    unread = readers_behind(offsets, tick_log, progress, ticks_topic, bars_topic)
    since_ms = (start_wall + args.warmup_s) * 1000
    lat = progress.latencies_between(since_ms)
    result.latency, result.latency_n = percentiles(lat), len(lat)
    p50, p95, p99 = result.latency
    partial = (f" -- PARTIAL: the benchmark's readers had not read {unread[0]:,} ticks and {unread[1]:,} bar "
               f"versions ({unread[2]:,} waiting for their ticks) when it stopped waiting") if unread else ""
    print(f"event time -> first bar version on the bar topic, ticks after {args.warmup_s:.0f}s ({len(lat):,}): "
          f"p50 {p50:,.0f} ms, p95 {p95:,.0f} ms, p99 {p99:,.0f} ms{partial}")
    # Where it goes, split at the bar's emitted_at (the bar step's clock when
    # it emitted the pane; same machine, same clock): the wait for a firing
    # and the stages before it, then the bundle's end, the write and Kafka.
    to_emit, to_append = progress.hops_between(since_ms)
    if len(to_emit):
        e50, e99 = percentiles(to_emit, (50, 99))
        a50, a99 = percentiles(to_append, (50, 99))
        print(f"  of which event time -> bar emitted (emitted_at): p50 {e50:,.0f} ms, p99 {e99:,.0f} ms; "
              f"emitted -> on the bar topic: p50 {a50:,.0f} ms, p99 {a99:,.0f} ms")
    on_time = progress.on_time_delays(since_ms, measured_until * 1000)
    result.on_time_p99, result.on_time_n = percentiles(on_time, (99,))[0], len(on_time)
    print(f"ON_TIME pane on the bar topic after its window's end, windows ending from {args.warmup_s:.0f}s "
          f"while the producer ran ({len(on_time):,} panes): p50 {percentiles(on_time, (50,))[0]:,.0f} ms, "
          f"p99 {result.on_time_p99:,.0f} ms{partial}")
    print(f"backlog when the producer stopped: {end_backlog:,}; after up to 60 s more: "
          f"{offsets.total(ticks_topic) - progress.processed:,} of {offsets.total(ticks_topic):,} published")
    a, b = start_wall + args.warmup_s, measured_until
    if b > a:
        ticks = timeline.processed_at(b * 1000) - timeline.processed_at(a * 1000)
        used = pipeline.cpu_between(a, b)
        result.cpu_us_per_tick = per_tick(used, ticks)
        produced = sum(producer.cpu_between(a, b).values())
        result.producer_us_per_tick = 1e6 * produced / ticks if ticks > 0 else float("nan")
        print(f"CPU per processed tick over {b - a:.0f}s ({ticks:,} ticks in bars appended in that span):")
        for kind in sorted(used):
            if used[kind] > 0:   # not the kinds whose processes did nothing in the span
                print(f"  {kind:45s} {result.cpu_us_per_tick.get(kind, float('nan')):8.1f} µs/tick "
                      f"({used[kind] / (b - a):.2f} cores)")
        for name, us in by_runtime(result.cpu_us_per_tick).items():
            print(f"  {'= ' + name:45s} {us:8.1f} µs/tick")
        print(f"  {'producer (not the pipeline)':45s} {result.producer_us_per_tick:8.1f} µs/tick "
              f"({produced / (b - a):.2f} cores)")
    report_readers(result, marks, tick_log, progress, unread)
    print(flush=True)


def report_readers(result: LiveResult, marks: dict[str, ReadersMark], tick_log: TickLog, progress: BarProgress,
                   unread: tuple) -> None:
    """What the benchmark's own readers cost (they share the cores with the system) and whether they kept up."""
    if "end" not in marks:
        result.readers = "not measured (run too short)"
        print(f"benchmark's readers: {result.readers}")
        return
    a, b = marks["start"], marks["end"]
    span = b.wall - a.wall
    ticks, bars = max(b.ticks_read - a.ticks_read, 1), max(b.bars_read - a.bars_read, 1)
    delays = {"tick log": tick_log.delay_ms(a.ticks_polls), "bar reader": progress.delay_ms(a.bars_polls)}
    late = [name for name, (_, p99, _) in delays.items() if p99 > READER_BEHIND_MS]
    result.readers_keep_up = not unread and not late
    cores = (b.process_cpu - a.process_cpu) / span
    tick_us, bar_us = 1e6 * (b.ticks_cpu - a.ticks_cpu) / ticks, 1e6 * (b.bars_cpu - a.bars_cpu) / bars
    result.readers = (f"{cores:.2f} cores; tick log {tick_us:.1f} µs/tick, bar reader {bar_us:.1f} µs/bar version; "
                      f"{'keep up' if result.readers_keep_up else '**fall behind**'}")
    print(f"benchmark's own readers over {span:.0f}s (on the same cores as the system): the whole process "
          f"{cores:.2f} cores (librdkafka's threads and the CPU sampling included)")
    for name, us, unit, rate, cpu, (p50, p99, worst), since in (
            ("tick log", tick_us, "tick", ticks / span, b.ticks_cpu - a.ticks_cpu, delays["tick log"],
             "a tick's event time to its poll, the producer's linger included"),
            ("bar reader", bar_us, "bar version", bars / span, b.bars_cpu - a.bars_cpu, delays["bar reader"],
             "append time to poll")):
        print(f"  {name:10s} {us:6.1f} µs/{unit} ({rate:,.0f}/s, {cpu / span:.2f} cores), behind its topic "
              f"p50 {p50:,.0f} / p99 {p99:,.0f} / max {worst:,.0f} ms ({since})")
    if result.readers_keep_up:
        print(f"  both kept up (p99 behind ≤ {READER_BEHIND_MS:,} ms, everything read at the end)")
    if late:
        print(f"  WARNING: the {' and the '.join(late)} fell behind (p99 > {READER_BEHIND_MS:,} ms): the interval "
              f"lines above trail; the figures after them are taken at the broker's append times and stand "
              f"if everything was read, but the benchmark competed with the system for the cores")
    if unread:
        print(f"  WARNING: the readers did not reach the ends of their topics ({unread[0]:,} ticks, {unread[1]:,} "
              f"bar versions unread, {unread[2]:,} waiting for their ticks): the latencies and ON_TIME delays "
              f"above are PARTIAL")


def print_live_summary(results: list[LiveResult], args: argparse.Namespace) -> None:
    """One table by symbol count and rate: for docs/performance.md."""
    print(f"live, {args.duration}s at each rate, figures from {args.warmup_s:.0f}s on; latency = event time -> "
          f"first bar version appended to the bar topic; CPU per processed tick")
    print("\n| symbols | rate | processed ticks/s | backlog (start → end, /s) | latency p50 / p95 / p99 ms "
          "| ON_TIME delay p99 ms | CPU µs/tick JVM / Python / producer | benchmark's readers | dead letters |")
    print("|---:|---:|---:|---|---|---:|---|---|---|")
    for r in results:
        backlog = (f"{r.backlog[0]:,} → {r.backlog[1]:,} ({r.growth:+,.0f}/s): "
                   f"{'sustained' if r.sustained else '**not sustained**'}") if r.backlog else "-"
        runtimes = by_runtime(r.cpu_us_per_tick)
        cpu = " / ".join(f"{runtimes.get(name, float('nan')):.1f}" for name in ("JVM", "Python"))
        print(f"| {symbols_label(r.symbols)} | {r.rate:,} | {r.processed:,.0f} | {backlog} "
              f"| {' / '.join(f'{v:,.0f}' for v in r.latency)} | {r.on_time_p99:,.0f} "
              f"| {cpu} / {r.producer_us_per_tick:.1f} | {r.readers} | {dict(r.dead_letters) or 'none'} |")
    print(flush=True)


# --- main ----------------------------------------------------------------------------------------

def main() -> int:
    # Flags every mode takes, accepted after the mode's name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap_servers", default=settings.BOOTSTRAP_SERVERS.value())
    common.add_argument("--symbols", default=None, metavar="N[,N...]",
                        help="symbols the data spans (the producer's --symbol_count: made-up tickers, heavy-tailed "
                             "activity); a list runs each in turn and ends with a table by symbol count (default: "
                             f"the producer's {len(DEFAULT_SYMBOLS)} default symbols)")
    common.add_argument("--out_dir", default="/tmp/market-compare", help="logs, profiles (one folder per run)")
    common.add_argument("--seed", type=int, default=11, help="producer seed: the same data in every run")
    common.add_argument("--keep_topics", action="store_true", help="leave the run's topics for a look")
    common.add_argument("--pipeline_arg", action="append", default=[],
                        help="extra pipeline flag, e.g. --pipeline_arg=--parallelism=3 (default: none)")
    common.add_argument("--profile", action="store_true",
                        help="py-spy the pipeline's Python, JFR its job-server JVM (drain: 10 %%→90 %%; "
                             "live: after the warm-up)")
    common.add_argument("--profile_s", type=int, default=60, help="longest profile")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    drain = sub.add_parser("drain", parents=[common],
                           help="fill a topic, then time raw, Quix Streams and the pipeline on it")
    drain.add_argument("--ticks", type=int, default=400_000)
    drain.add_argument("--runs", type=int, default=1, help="repeat the whole comparison (a new topic each)")
    drain.add_argument("--systems", default="raw,quix,pipeline")
    drain.add_argument("--timeout_s", type=float, default=1200, help="per system, until 90 %%")
    drain.add_argument("--settle_s", type=float, default=3600,
                       help="after 90 %%, how long to wait for every tick to be in a final bar (a system that "
                            "stops making progress is given up on after 30 s, Quix Streams after 10 s)")
    live = sub.add_parser("live", parents=[common],
                          help="the pipeline under the project's producer at a fixed rate")
    live.add_argument("--rate", default="10000", metavar="R[,R...]",
                      help="ticks/s; a list runs each in turn (for each --symbols)")
    live.add_argument("--duration", type=int, default=300, help="seconds at --rate")
    live.add_argument("--interval_s", type=float, default=30)
    live.add_argument("--warmup_s", type=float, default=30,
                      help="seconds at --rate left out of the sustained rate, latency and CPU figures")
    live.add_argument("--timeout_s", type=float, default=300, help="for the pipeline's first bar")
    args = parser.parse_args()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        require_broker(args.bootstrap_servers)
        return run_drain(args) if args.mode == "drain" else run_live(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stopping what was started", file=sys.stderr)
        return 130
    finally:
        Started.stop_all()


if __name__ == "__main__":
    sys.exit(main())
