"""The pipeline's own Beam metrics, read back from Flink and logged in a line an operator can read.

Beam's Flink runner reports each user metric to Flink's metric system per
operator and subtask, under a name that joins the fused stage's (truncated)
name and the metric's namespace and name, e.g.
`0.[8]{AnalyzeMarket__EncodeAlerts__...}.market_transforms_bar_panes`
(counters as numbers, distributions as `DistributionResult{sum=, count=,
min=, max=}`). Flink's REST API and web UI show them that way, spread over
subtasks. `MetricsLog` sums them per metric over every vertex and subtask of
the running job and logs one line every `--metrics_log_s`:

    pipeline metrics: alerts=3 bar_panes=1,204 dead_letters_late=2 ticks_parsed=120,311
    symbols_per_shard_batch(mean 1.2, max 4)

The names are those of transforms (namespace `market.transforms`,
docs/pipeline.md lists them); a counter appears once it has counted.
"""
from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass, field

from runners.flink_rest import UNREACHABLE, FlinkRest
from transforms.ticks import METRICS_NAMESPACE

log = logging.getLogger(__name__)

# Flink's metric identifier of a Beam metric: the namespace with its dots as underscores.
PREFIX = METRICS_NAMESPACE.replace(".", "_") + "_"
_DISTRIBUTION = re.compile(r"DistributionResult\{sum=(-?\d+), count=(\d+), min=(-?\d+), max=(-?\d+)\}")
# Metric ids per GET: each is ~100 characters of the URL.
_IDS_PER_REQUEST = 20

@dataclass
class Distribution:
    sum: int = 0
    count: int = 0
    min: int | None = None
    max: int | None = None

    def add(self, total: int, count: int, low: int, high: int) -> None:
        self.sum += total
        self.count += count
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)


@dataclass
class JobMetrics:
    """The pipeline's metrics summed over every operator and subtask of one job."""

    counters: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, Distribution] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        found = _DISTRIBUTION.fullmatch(value.strip())
        if found:
            self.distributions.setdefault(name, Distribution()).add(*map(int, found.groups()))
            return
        try:
            self.counters[name] = self.counters.get(name, 0) + int(float(value))
        except ValueError:
            log.debug("metric %s: unreadable value %r", name, value)

    def line(self) -> str:
        parts = [f"{name}={n:,}" for name, n in sorted(self.counters.items())]
        for name, d in sorted(self.distributions.items()):
            mean = d.sum / d.count if d.count else float("nan")
            parts.append(f"{name}(mean {mean:.1f}, max {d.max})")
        return " ".join(parts) if parts else "(none reported yet)"


def job_metrics(rest: FlinkRest, jid: str) -> JobMetrics:
    """The pipeline's Beam metrics of job `jid`, summed by metric name (without its namespace)."""
    totals = JobMetrics()
    for vertex in rest.job(jid)["vertices"]:
        base = f"/jobs/{jid}/vertices/{vertex['id']}/metrics"
        ids = [m["id"] for m in rest.call(base) if PREFIX in m["id"]]
        for at in range(0, len(ids), _IDS_PER_REQUEST):
            query = urllib.parse.quote(",".join(ids[at:at + _IDS_PER_REQUEST]), safe=",")
            for metric in rest.call(f"{base}?get={query}"):
                totals.add(metric["id"].rsplit(PREFIX, 1)[-1], str(metric.get("value", "")))
    return totals


class MetricsLog:
    """A daemon thread logging the running job's metrics every `interval_s` (and once more at `stop`)."""

    def __init__(self, rest: FlinkRest, interval_s: float, job_name: str | None = None) -> None:
        self.rest, self.interval_s, self.job_name = rest, interval_s, job_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-log", daemon=True)
        self._jid: str | None = None

    def start(self) -> "MetricsLog":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Log the last figures (the job may already be stopping) and end the thread."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.report()

    def report(self) -> None:
        try:
            self._jid = self._jid or self.rest.running_job(self.job_name)
            if self._jid is not None:
                log.info("pipeline metrics: %s", job_metrics(self.rest, self._jid).line())
        except (*UNREACHABLE, KeyError) as exc:  # Flink's REST is the runner's: its absence must not touch the job
            log.debug("pipeline metrics unavailable: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.report()
