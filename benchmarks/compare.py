"""Side by side: the market pipeline against the best pure-Python peers, on the same data (issue 11).

    ./benchmarks/setup.sh            # once: Quix Streams and py-spy in .cache/bench-venv
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py drain [--ticks 400000] [--runs 3]
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py live --rate 10000 --duration 300

drain: fills one fresh 3-partition topic with --ticks ticks from the project's
producer (20 symbols, event time spread over the last 60 minutes, record
timestamp = event time, keyed by symbol), then runs on that same topic, one
after the other, each from the beginning with a fresh consumer group:

* raw:      benchmarks/peer_raw.py, one confluent-kafka consumer + orjson +
            a dict of open bars, closed 60 s bars to a topic (the Python ceiling);
* quix:     benchmarks/peer_quix.py, Quix Streams' tumbling_window(60 s,
            grace 30 s).reduce(...).final() to a topic;
* pipeline: `python -m pipelines.market --runner=FlinkRunner` (embedded
            Flink, default flags, --no_resume, topics of its own).

Throughput = ticks/s between the moments 10 % and 90 % of the ticks are in
published bars: the sum over (symbol, window) of the newest bar's tick_count
on the system's output topic (the pipeline's EARLY panes count, the peers
publish closed bars only; a constant lag cancels out of a rate). CPU of each
system's process tree over the same interval gives µs of CPU per tick. The
pipeline's final bars are checked against the ticks (every tick in a final
bar or a dead letter).

live: the project's producer at --rate ticks/s into fresh topics with the
pipeline running; every --interval_s it prints offered and processed ticks/s,
the backlog (published − processed) and the pipeline's consumer-group lag
(committed offsets, at checkpoints), then p50/p95/p99 from a tick's event
time to the first bar version that includes it, and µs of CPU per tick in the
job-server JVM and in the Python worker.

--profile (drain) records the pipeline's Python processes with py-spy and the
job-server JVM with JFR between the 10 % and 90 % marks and prints the top
frames. A benchmark, not a test: it prints numbers and asserts nothing. Every
process it starts is stopped by pid when it ends, Ctrl-C included.
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
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from market import config, settings  # noqa: E402

BENCH_DIR = ROOT / "benchmarks"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
BENCH_VENV = ROOT / ".cache" / "bench-venv"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
PY_SPY = BENCH_VENV / "bin" / "py-spy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_MS = config.WINDOW_SIZE_S * 1000
EVENT_SPAN_MS = 3_600_000   # event time of the drain data: the last 60 minutes


class BenchError(Exception):
    """A prerequisite is missing or a system under test failed: printed without a traceback."""


# --- Kafka ---------------------------------------------------------------------------------------

def require_broker(bootstrap: str) -> None:
    try:
        # log_level 0: one clear line below instead of librdkafka's retry log.
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
    except KafkaException as exc:
        raise BenchError(f"no Kafka broker answers at {bootstrap} ({exc.args[0]}); start one with "
                         f"`.venv/bin/python -m runners.local start` or pass --bootstrap_servers") from None


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, num_partitions=count, replication_factor=1) for name, count in partitions.items()]
    for future in admin.create_topics(new).values():
        future.result()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Best effort: the names are unique to this run."""
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except Exception:
            pass


def topics_containing(bootstrap: str, text: str) -> list[str]:
    """Topics a system created on its own (Quix Streams' changelogs) named after this run."""
    listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return [name for name in listed if text in name]


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compare-offsets"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def assign_from_start(consumer: Consumer, topic: str) -> None:
    """Read every partition of `topic` from its start, with no group rebalance to wait for.

    A subscribing consumer of a new group waits out the broker's initial
    rebalance delay (3 s by default): longer than the raw peer's whole drain.
    """
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])


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
        end = end_offsets(bootstrap, topic, 1)[0]
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

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()   # fields from 3 (state) on, the name may hold spaces


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


class Started:
    """A process this benchmark started, in its own session, and every descendant it spawns.

    A watcher thread records each descendant (pid and start time) as it
    appears, so stop() can kill by pid even what escaped the process group or
    outlived its parent, and never a stranger that reused a pid.
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
        self._stop = threading.Event()
        Started.registry.append(self)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.tree()

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

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each kind of process in the tree."""
        totals: dict[str, float] = defaultdict(float)
        for pid in self.tree():
            fields = _stat(pid)
            if fields:
                totals[process_kind(_cmdline(pid))] += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return dict(totals)

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
        create_topics(bootstrap, {outputs.bars: 3, outputs.alerts: 3, outputs.dlq: 1})
        return outputs

    def names(self) -> list[str]:
        return [self.bars, self.alerts, self.dlq]


# --- reading bars --------------------------------------------------------------------------------

class TopicReader:
    """Reads one topic from its start in a background thread; subclasses handle each poll's records."""

    def __init__(self, bootstrap: str, topic: str, group: str, batch: int, timeout_s: float) -> None:
        self.lock = threading.Lock()
        self._batch, self._timeout_s = batch, timeout_s
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "enable.auto.commit": False})
        assign_from_start(self._consumer, topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._handle(self._consumer.consume(self._batch, self._timeout_s))
        finally:
            self._consumer.close()

    def _handle(self, msgs: list) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class TickLog(TopicReader):
    """Event time of every tick on the input topic, per (symbol, window), in partition order.

    Read from the records' key and timestamp (= event time, DESIGN.md §2): no
    JSON parse, so watching costs little of the machine under test.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.stamps: dict[tuple[str, int], array] = defaultdict(lambda: array("q"))
        self.count = 0
        super().__init__(bootstrap, topic, f"compare-ticks-{topic}", batch=5000, timeout_s=0.2)

    def _handle(self, msgs: list) -> None:
        with self.lock:
            for msg in msgs:
                if msg.error() is None:
                    stamp = msg.timestamp()[1]
                    self.stamps[(msg.key().decode(), stamp - stamp % WINDOW_MS)].append(stamp)
                    self.count += 1


class BarProgress(TopicReader):
    """Ticks a system has put into published bars, read from its bar topic.

    processed = Σ over (symbol, window) of the newest tick_count seen; with
    a TickLog, each tick a new bar version covers gets its latency: the bar's
    arrival here minus the tick's event time.
    """

    def __init__(self, bootstrap: str, topic: str, ticks: TickLog | None = None) -> None:
        self.covered: dict[tuple[str, int], int] = defaultdict(int)
        self.final: dict[tuple[str, int], tuple[int, int]] = {}   # key -> (pane_index, tick_count)
        self.processed = 0
        self.bars = 0
        self.ticks = ticks
        self.received = array("q")    # ms, per latency sample
        self.latency = array("q")     # ms
        self._pending: list[tuple[tuple[str, int], int, int, int]] = []
        # (monotonic time a batch of bars arrived, processed after it): the
        # 10 % and 90 % marks come from here, at the resolution of a poll.
        self.history: list[tuple[float, int]] = [(time.monotonic(), 0)]
        super().__init__(bootstrap, topic, f"compare-bars-{topic}", batch=1000, timeout_s=0.05)

    def _handle(self, msgs: list) -> None:
        now_ms, now = int(time.time() * 1000), time.monotonic()
        with self.lock:
            before = self.processed
            for msg in msgs:
                if msg.error() is None:
                    self._on_bar(orjson.loads(msg.value()), now_ms)
            if self.processed != before:
                self.history.append((now, self.processed))
            if self._pending:
                self._resolve()

    def _on_bar(self, bar: dict, received_ms: int) -> None:
        key = (bar["symbol"], bar["window_start"])
        count = bar["tick_count"]
        self.bars += 1
        if bar.get("is_final"):
            pane = bar.get("pane_index", 0)
            if key not in self.final or pane >= self.final[key][0]:
                self.final[key] = (pane, count)
        before = self.covered[key]
        if count <= before:
            return
        self.covered[key] = count
        self.processed += count - before
        if self.ticks is not None:
            self._pending.append((key, before, count, received_ms))

    def _resolve(self) -> None:
        """Latencies of covered ticks the TickLog has read (it may trail the bars by a poll)."""
        waiting = []
        with self.ticks.lock:
            for key, before, count, received_ms in self._pending:
                stamps = self.ticks.stamps.get(key)
                if stamps is None or len(stamps) < count:
                    waiting.append((key, before, count, received_ms))
                    continue
                for stamp in stamps[before:count]:
                    self.received.append(received_ms)
                    self.latency.append(received_ms - stamp)
        self._pending = waiting

    def crossed(self, count: float) -> tuple[float, int] | None:
        """(when, processed) of the first batch of bars that took processed to `count` or more."""
        with self.lock:
            return next(((t, n) for t, n in self.history if n >= count), None)

    def final_ticks(self) -> int:
        with self.lock:
            return sum(count for _, count in self.final.values())

    def latencies_since(self, since_ms: int) -> array:
        """Latencies of the ticks whose bar version arrived at or after `since_ms`."""
        with self.lock:   # a copy, so the reader thread is held up for a memcpy only
            return self.latency[bisect.bisect_left(self.received, since_ms):]


def percentiles(values: array, qs=(50, 95, 99)) -> list[float]:
    if len(values) < 2:
        return [float("nan")] * len(qs)
    return [float(v) for v in numpy.percentile(numpy.frombuffer(values, dtype=numpy.int64), qs)]


# --- drain ---------------------------------------------------------------------------------------

@dataclass
class DrainResult:
    system: str
    rate: float = float("nan")
    seconds: float = float("nan")
    startup_s: float = float("nan")
    cpu_us_per_tick: dict[str, float] = field(default_factory=dict)
    processed: int = 0
    final_ticks: int | None = None
    dead_letters: Counter = field(default_factory=Counter)
    note: str = ""


def fill(bootstrap: str, topic: str, ticks: int, seed: int, run_dir: Path) -> None:
    """`ticks` ticks from the project's producer, event time over the last 60 minutes, as fast as it goes."""
    create_topics(bootstrap, {topic: 3})
    start = int(time.time() * 1000) - EVENT_SPAN_MS
    producer = Started("producer (fill)", [
        PYTHON, "-m", "producer", f"--bootstrap_servers={bootstrap}", f"--input_topic={topic}",
        f"--count={ticks}", "--rate=0", f"--start_time={start}", f"--event_rate={ticks * 1000 / EVENT_SPAN_MS}",
        f"--seed={seed}", "--stats_interval_s=0"], run_dir / "fill.log")
    t0 = time.monotonic()
    try:
        code = producer.proc.wait(timeout=600)
    finally:
        producer.stop()
    published = sum(end_offsets(bootstrap, topic, 3))
    if code != 0 or published != ticks:
        raise BenchError(f"filling {topic}: producer exited {code}, {published} of {ticks} ticks on the topic; "
                         f"see {run_dir / 'fill.log'}")
    print(f"filled {topic}: {published} ticks in {time.monotonic() - t0:.1f}s "
          f"(partitions {end_offsets(bootstrap, topic, 3)})", flush=True)


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


def drain_one(system: str, cmd: list[str], env: dict | None, bootstrap: str, bars_topic: str, ticks: int,
              run_dir: Path, timeout_s: float, profile: bool = False,
              profile_s: int = 60) -> tuple[DrainResult, BarProgress, Started]:
    """Start one system on the filled topic; measure 10 %→90 %; leave it running for the final check."""
    result = DrainResult(system)
    progress = BarProgress(bootstrap, bars_topic)
    proc = Started(system, cmd, run_dir / f"{system}.log", env=env)
    t0 = time.monotonic()
    # CPU is sampled when the loop sees a mark; the rate uses the bars' arrival times.
    cpu_at: dict[float, tuple[int, dict[str, float]]] = {0.0: (0, proc.cpu())}
    profiler = None
    deadline = t0 + timeout_s
    while 0.9 not in cpu_at and time.monotonic() < deadline:
        proc.require_running()
        done = progress.processed
        for fraction in (0.1, 0.9):
            if fraction not in cpu_at and done >= fraction * ticks:
                cpu_at[fraction] = (done, proc.cpu())
                print(f"  {system}: {fraction:.0%} at {time.monotonic() - t0:.1f}s", flush=True)
                if fraction == 0.1 and profile:
                    profiler = Profiler(proc, run_dir, profile_s)
                    profiler.start()
                if fraction == 0.9 and profiler is not None:
                    profiler.stop()
        time.sleep(0.05)
    if 0.9 not in cpu_at:
        cpu_at[0.9] = (progress.processed, proc.cpu())
        result.note = f"timed out after {timeout_s:.0f}s at {progress.processed} ticks"
        if profiler is not None:
            profiler.stop()
    mark10, mark90 = progress.crossed(0.1 * ticks), progress.crossed(0.9 * ticks)
    if mark10 is not None:
        (t10, n10), (t90, n90) = mark10, mark90 or (time.monotonic(), progress.processed)
        result.startup_s = t10 - t0
        result.seconds = t90 - t10
        if n90 > n10 and t90 > t10:
            result.rate = (n90 - n10) / (t90 - t10)
        # Progress moves in steps (bar batches; the pipeline's EARLY panes
        # every second): the longest step over the span bounds the error.
        with progress.lock:
            times = [t for t, _ in progress.history if t10 <= t <= t90]
        step = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        error = 100 * step / result.seconds if result.seconds > 0 else float("inf")
        if error > 10:
            result.note = "; ".join(filter(None, [
                result.note, f"10 %→90 % took {result.seconds:.1f}s in steps up to {step:.2f}s: "
                             f"rate ±{error:.0f} %, use more --ticks"]))
        (c10, cpu10), (c90, cpu90) = cpu_at.get(0.1, cpu_at[0.0]), cpu_at[0.9]
        if c90 - c10 < 0.2 * ticks:
            # A drain faster than this loop's look: CPU from the start instead
            # (the peers' start-up is small next to their drain).
            (c10, cpu10) = cpu_at[0.0]
        if c90 > c10:
            result.cpu_us_per_tick = {kind: 1e6 * (cpu90.get(kind, 0) - cpu10.get(kind, 0)) / (c90 - c10)
                                      for kind in cpu90}
    if profiler is not None:
        print(profiler.report(), flush=True)
    return result, progress, proc


def wait_complete(progress: BarProgress, proc: Started, expected: int, quiet_s: float, timeout_s: float) -> None:
    """Until every tick is in a final bar, or nothing new came for `quiet_s`, or the timeout."""
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and proc.running():
        finals = progress.final_ticks()
        if finals >= expected:
            return
        state = (finals, progress.bars)
        if state != last:
            last, last_change = state, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.5)


def run_drain(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if "quix" in systems and not BENCH_PYTHON.exists():
        raise BenchError(f"Quix Streams runs in {BENCH_VENV}: run ./benchmarks/setup.sh first")
    all_results: list[list[DrainResult]] = []
    for run in range(1, args.runs + 1):
        run_id = f"cmp{uuid.uuid4().hex[:6]}"
        run_dir = Path(args.out_dir) / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
        created = [ticks_topic]
        results: list[DrainResult] = []
        print(f"== run {run}/{args.runs} ({run_id}, logs and profiles in {run_dir})", flush=True)
        try:
            fill(args.bootstrap_servers, ticks_topic, args.ticks, args.seed, run_dir)
            for system in systems:
                outputs = Outputs.create(args.bootstrap_servers, f"{run_id}_{system}")
                created += outputs.names()
                group = f"{run_id}-{system}"
                env = None
                if system == "raw":
                    cmd = [PYTHON, str(BENCH_DIR / "peer_raw.py"), f"--bootstrap_servers={args.bootstrap_servers}",
                           f"--input_topic={ticks_topic}", f"--output_topic={outputs.bars}", f"--group={group}"]
                elif system == "quix":
                    cmd = [str(BENCH_PYTHON), str(BENCH_DIR / "peer_quix.py"),
                           f"--bootstrap_servers={args.bootstrap_servers}", f"--input_topic={ticks_topic}",
                           f"--output_topic={outputs.bars}", f"--group={group}"]
                elif system == "pipeline":
                    cmd = pipeline_command(args.bootstrap_servers, ticks_topic, outputs, group,
                                           run_dir / "checkpoints", args.pipeline_arg)
                else:
                    raise BenchError(f"unknown system {system!r}: raw, quix, pipeline")
                print(f"-- {system}: {' '.join(cmd[1:3])} ...", flush=True)
                result, progress, proc = drain_one(
                    system, cmd, env, args.bootstrap_servers, outputs.bars, args.ticks, run_dir,
                    args.timeout_s, profile=system == "pipeline" and args.profile, profile_s=args.profile_s)
                try:
                    # Quix never closes the windows of the last 90 s of event
                    # time (no newer tick passes their grace period): it stops
                    # at the first quiet spell, short of every tick.
                    wait_complete(progress, proc, args.ticks, quiet_s=10 if system == "quix" else 30,
                                  timeout_s=args.settle_s)
                    result.processed = progress.processed
                    result.final_ticks = progress.final_ticks()
                    if system == "pipeline":
                        result.dead_letters = dead_letter_reasons(args.bootstrap_servers, outputs.dlq)
                finally:
                    progress.close()
                    proc.stop()
                    created += topics_containing(args.bootstrap_servers, group)
                results.append(result)
                print(f"  {system}: {result.rate:,.0f} ticks/s; final bars hold {result.final_ticks} "
                      f"of {args.ticks} ticks {result.note}", flush=True)
        finally:
            if not args.keep_topics:
                delete_topics(args.bootstrap_servers, created)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        all_results.append(results)
        print_drain_table(results, args.ticks)
    if args.runs > 1:
        print_summary(all_results)
    return 0


def print_drain_table(results: list[DrainResult], ticks: int) -> None:
    quix = next((r.rate for r in results if r.system == "quix"), float("nan"))
    print(f"\n| system | ticks/s (10 %→90 %) | × Quix | start-up s | CPU µs/tick | ticks in final bars |")
    print("|---|---:|---:|---:|---|---|")
    for r in results:
        cpu = ", ".join(f"{kind} {us:.1f}" for kind, us in sorted(r.cpu_us_per_tick.items(), key=lambda i: -i[1])
                        if us >= 0.05) or "-"
        check = f"{r.final_ticks:,} of {ticks:,}"
        if r.dead_letters:
            check += f", dead letters {dict(r.dead_letters)}"
        if r.note:
            check += f" ({r.note})"
        print(f"| {r.system} | {r.rate:,.0f} | {r.rate / quix:.2f} | {r.startup_s:.1f} | {cpu} | {check} |")
    print(flush=True)


def print_summary(all_results: list[list[DrainResult]]) -> None:
    by_system: dict[str, list[float]] = defaultdict(list)
    for results in all_results:
        for r in results:
            by_system[r.system].append(r.rate)
    quix = statistics.median(by_system["quix"]) if by_system.get("quix") else float("nan")
    print(f"| system | runs (ticks/s) | median | median × Quix |")
    print("|---|---|---:|---:|")
    for system, rates in by_system.items():
        median = statistics.median(rates)
        print(f"| {system} | {', '.join(f'{r:,.0f}' for r in rates)} | {median:,.0f} | {median / quix:.2f} |")
    print(flush=True)


# --- live ----------------------------------------------------------------------------------------

def run_live(args: argparse.Namespace) -> int:
    run_id = f"live{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    create_topics(args.bootstrap_servers, {ticks_topic: 3})
    created = [ticks_topic]
    tick_log = progress = None
    try:
        outputs = Outputs.create(args.bootstrap_servers, run_id)
        created += outputs.names()
        group = f"{run_id}-pipeline"
        tick_log = TickLog(args.bootstrap_servers, ticks_topic)
        progress = BarProgress(args.bootstrap_servers, outputs.bars, tick_log)
        print(f"== live at {args.rate} ticks/s for {args.duration}s ({run_id}, logs in {run_dir})", flush=True)
        pipeline = Started("pipeline", pipeline_command(args.bootstrap_servers, ticks_topic, outputs, group,
                                                        run_dir / "checkpoints", args.pipeline_arg),
                           run_dir / "pipeline.log")
        producer_cmd = [PYTHON, "-m", "producer", f"--bootstrap_servers={args.bootstrap_servers}",
                        f"--input_topic={ticks_topic}", f"--seed={args.seed}", "--stats_interval_s=0"]
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

        producer = Started("producer", [*producer_cmd, f"--rate={args.rate}", f"--duration_s={args.duration}"],
                           run_dir / "producer.log")
        start_wall = time.time()
        print(f"{'t s':>5} {'offered/s':>10} {'processed/s':>12} {'backlog':>9} {'group lag':>10} "
              f"{'p50 ms':>7} {'p99 ms':>7}", flush=True)
        series: list[tuple[float, int, int]] = []   # (t, published, processed)
        cpu_marks: dict[str, tuple[float, int, dict, dict]] = {}
        last_t, last_pub, last_done = time.monotonic(), tick_log.count, progress.processed
        step_start_ms = int(time.time() * 1000)
        while producer.running():
            pipeline.require_running()
            time.sleep(min(args.interval_s, max(0.5, args.duration + start_wall - time.time() + 1)))
            now = time.monotonic()
            pub, done = tick_log.count, progress.processed
            t = time.time() - start_wall
            series.append((t, pub, done))
            lat = progress.latencies_since(step_start_ms)
            step_start_ms = int(time.time() * 1000)
            lag = group_lag(args.bootstrap_servers, group, ticks_topic, 3)
            p50, p99 = percentiles(lat, (50, 99))
            print(f"{t:>5.0f} {(pub - last_pub) / (now - last_t):>10,.0f} {(done - last_done) / (now - last_t):>12,.0f} "
                  f"{pub - done:>9,} {lag if lag is not None else '-':>10} {p50:>7.0f} {p99:>7.0f}", flush=True)
            last_t, last_pub, last_done = now, pub, done
            if t >= args.warmup_s and producer.running():
                # The last mark taken while the producer still runs: CPU at
                # the offered rate, with the producer's own CPU readable.
                cpu_marks["start" if "start" not in cpu_marks else "end"] = (
                    now, done, pipeline.cpu(), producer.cpu())
        end_backlog = tick_log.count - progress.processed
        # Let the backlog drain to tell "slow" from "lost".
        deadline = time.monotonic() + 60
        while tick_log.count > progress.processed and time.monotonic() < deadline and pipeline.running():
            time.sleep(0.5)
        report_live(args, series, progress, tick_log, cpu_marks, start_wall, end_backlog)
        print(f"dead letters: {dict(dead_letter_reasons(args.bootstrap_servers, outputs.dlq))}", flush=True)
    finally:
        Started.stop_all()
        for watcher in (progress, tick_log):
            if watcher is not None:
                watcher.close()
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, created)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return 0


def report_live(args: argparse.Namespace, series: list[tuple[float, int, int]], progress: BarProgress,
                tick_log: TickLog, cpu_marks: dict, start_wall: float, end_backlog: int) -> None:
    steady = [(t, pub - done) for t, pub, done in series if t >= args.warmup_s]
    if len(steady) >= 2:
        (t_a, b_a), (t_b, b_b) = steady[0], steady[-1]
        growth = (b_b - b_a) / (t_b - t_a)
        first, last = next(s for s in series if s[0] >= args.warmup_s), series[-1]
        processed_rate = (last[2] - first[2]) / (last[0] - first[0])
        offered_rate = (last[1] - first[1]) / (last[0] - first[0])
        # Sustained: the backlog grows by less than 1 % of the offered rate.
        verdict = "sustained" if growth < 0.01 * args.rate else "NOT sustained (backlog growing)"
        print(f"\nfrom {args.warmup_s:.0f}s to the end: offered {offered_rate:,.0f}/s, processed "
              f"{processed_rate:,.0f}/s, backlog {b_a:,} -> {b_b:,} ({growth:+,.0f}/s): {verdict}")
    lat = progress.latencies_since(int((start_wall + args.warmup_s) * 1000))
    p50, p95, p99 = percentiles(lat)
    print(f"event time -> first bar version, ticks after {args.warmup_s:.0f}s ({len(lat):,}): "
          f"p50 {p50:,.0f} ms, p95 {p95:,.0f} ms, p99 {p99:,.0f} ms")
    print(f"backlog when the producer stopped: {end_backlog:,}; after up to 60 s more: "
          f"{tick_log.count - progress.processed:,} of {tick_log.count:,} published")
    if "end" in cpu_marks:
        (t_a, n_a, cpu_a, prod_a), (t_b, n_b, cpu_b, prod_b) = cpu_marks["start"], cpu_marks["end"]
        ticks = max(n_b - n_a, 1)
        print(f"CPU per processed tick over {t_b - t_a:.0f}s ({ticks:,} ticks):")
        for kind in sorted(cpu_b):
            used = cpu_b[kind] - cpu_a.get(kind, 0)
            print(f"  {kind:45s} {1e6 * used / ticks:8.1f} µs/tick ({used / (t_b - t_a):.2f} cores)")
        used = sum(prod_b.values()) - sum(prod_a.values())
        print(f"  {'producer (not the pipeline)':45s} {1e6 * used / ticks:8.1f} µs/tick ({used / (t_b - t_a):.2f} cores)")
    print(flush=True)


# --- main ----------------------------------------------------------------------------------------

def main() -> int:
    # Flags every mode takes, accepted after the mode's name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap_servers", default=settings.BOOTSTRAP_SERVERS.value())
    common.add_argument("--out_dir", default="/tmp/market-compare", help="logs, profiles (one folder per run)")
    common.add_argument("--seed", type=int, default=11, help="producer seed: the same data in every run")
    common.add_argument("--keep_topics", action="store_true", help="leave the run's topics for a look")
    common.add_argument("--pipeline_arg", action="append", default=[],
                        help="extra pipeline flag, e.g. --pipeline_arg=--parallelism=3 (default: none)")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    drain = sub.add_parser("drain", parents=[common],
                           help="fill a topic, then time raw, Quix Streams and the pipeline on it")
    drain.add_argument("--ticks", type=int, default=400_000)
    drain.add_argument("--runs", type=int, default=1, help="repeat the whole comparison (a new topic each)")
    drain.add_argument("--systems", default="raw,quix,pipeline")
    drain.add_argument("--timeout_s", type=float, default=1200, help="per system, until 90 %%")
    drain.add_argument("--settle_s", type=float, default=180,
                       help="after 90 %%, how long to wait for every tick to be in a final bar")
    drain.add_argument("--profile", action="store_true",
                       help="py-spy the pipeline's Python, JFR its job-server JVM, between 10 %% and 90 %%")
    drain.add_argument("--profile_s", type=int, default=60, help="longest profile")
    live = sub.add_parser("live", parents=[common],
                          help="the pipeline under the project's producer at a fixed rate")
    live.add_argument("--rate", type=int, default=10_000)
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
