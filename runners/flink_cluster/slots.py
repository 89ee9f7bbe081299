"""Whether a Flink cluster has the task slots a job needs: checked before submitting, watched after.

A job of parallelism P needs P free slots (slot sharing puts one parallel
instance of every operator in a slot). Flink itself does not refuse a job
it cannot place: it waits for slots (about four minutes here), then fails
with `NoResourceAvailableException: Could not acquire the minimum required
resources` and restarts, again and again, while the submitter waits on.

* `check_before_submit`: the JobManager answers, no unfinished job has the
  same name, and `/overview` reports at least P free slots; otherwise
  `ClusterCannotRunJob`, which `python -m pipelines.market` reports as an
  error and exit status 2 before any JVM starts.
* `SlotWatch`: after the submission, a thread that gives up on the job once
  it has waited STARVED_GIVE_UP_S for slots it cannot get (its tasks wait
  for a slot, or it restarts after NoResourceAvailableException, and the
  cluster has no free slot): it cancels the job (its checkpoints stay, so a
  later submission of the name resumes) and ends the submitter with exit
  status 2 and a message saying what is missing. It also logs each restart
  of the job with its cause, which the submitter did not show before.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from apache_beam.options.pipeline_options import FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions

from pipelines.preflight import PreflightError
from runners.flink_cluster import conf
from runners.flink_rest import TERMINAL_STATES, UNREACHABLE, FlinkRest

log = logging.getLogger(__name__)

# Long enough for a restart to redeploy or a replaced TaskManager to register;
# short against Flink's own wait for slots (slot.request.timeout, 5 min).
STARVED_GIVE_UP_S = 30.0
POLL_S = 2.0
FIND_JOB_S = 900.0          # the job server uploads and submits: minutes on a busy machine
EXIT_CANNOT_RUN = 2         # the exit status of every "cannot start" of python -m pipelines.market
NO_RESOURCE = "NoResourceAvailableException"


class ClusterCannotRunJob(PreflightError):
    """The cluster cannot run the job (no JobManager, a job of the name runs, too few slots): the message says what to do."""


def required_slots(argv: list[str]) -> int:
    """Slots a job submitted with `argv` needs: its --parallelism; Beam submits at 1 without it."""
    return max(PipelineOptions(argv).view_as(FlinkRunnerOptions).parallelism, 1)


def _what_to_do() -> str:
    return (f"add TaskManagers (`python -m runners.flink_cluster start --taskmanagers N`, "
            f"{conf.SLOTS_PER_TASKMANAGER} slots each), stop a job (`python -m runners.flink_cluster jobs`, then "
            f"`stop-job NAME`), or lower --parallelism")


def check_before_submit(rest: FlinkRest, job_name: str, slots: int) -> dict:
    """Raise ClusterCannotRunJob unless `rest` answers, has no unfinished `job_name` and `slots` free slots.

    Returns the cluster's `/overview`. The answer holds for this moment only:
    another submission may take the slots first, which `SlotWatch` catches.
    """
    try:
        overview = rest.overview()
        jobs = rest.jobs()
    except UNREACHABLE as exc:
        raise ClusterCannotRunJob(
            f"no Flink JobManager answers at {rest.url} ({exc}): start the local cluster with "
            f"`python -m runners.flink_cluster start`, or check --flink_master") from exc
    same = [job for job in jobs if job["name"] == job_name and job["state"] not in TERMINAL_STATES]
    if same:
        raise ClusterCannotRunJob(
            f"a job named {job_name!r} is already {same[0]['state']} on {rest.url} ({same[0]['jid']}); a second "
            f"one would read the same ticks and publish every bar again. Stop it first with "
            f"`python -m runners.flink_cluster stop-job {job_name}` (a savepoint this submission then resumes "
            f"from), or give another --job_name")
    free = overview.get("slots-available", 0)
    if slots > free:
        running = ", ".join(f"{job['name']} ({job['state']})" for job in jobs if job["state"] not in TERMINAL_STATES)
        raise ClusterCannotRunJob(
            f"job {job_name!r} needs {slots} task slot{'s' if slots > 1 else ''} (--parallelism={slots}) and "
            f"the cluster at {rest.url} has {free} free of {overview.get('slots-total', 0)} "
            f"({overview.get('taskmanagers', 0)} TaskManager(s); running: {running or 'no job'}): "
            f"{_what_to_do()}")
    return overview


class SlotWatch:
    """A daemon thread watching the job called `job_name`; `on_starved(message)` once it cannot get its slots.

    Starved: the job is not running all its tasks, the cluster has no free
    slot, and either some task waits for one (SCHEDULED) or the job's latest
    failure is a NoResourceAvailableException. Starved for `give_up_s` on
    end (any sample that is not resets the clock): `on_starved` is called
    once and the watch ends. It also ends when the job does.
    """

    def __init__(self, rest: FlinkRest, job_name: str, slots: int, on_starved: Callable[[str], None],
                 give_up_s: float = STARVED_GIVE_UP_S, poll_s: float = POLL_S) -> None:
        self.rest, self.job_name, self.slots = rest, job_name, slots
        self.on_starved, self.give_up_s, self.poll_s = on_starved, give_up_s, poll_s
        self.jid: str | None = None
        self._stop = threading.Event()
        self._last_failure: tuple[int, str] | None = None   # (time, first line) of the latest failure seen
        self._thread = threading.Thread(target=self._run, name="slot-watch", daemon=True)

    def start(self) -> "SlotWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _find_job(self) -> str | None:
        deadline = time.monotonic() + FIND_JOB_S
        while not self._stop.wait(self.poll_s) and time.monotonic() < deadline:
            try:
                job = self.rest.active_job(self.job_name)
            except UNREACHABLE:
                continue
            if job is not None:
                return job["jid"]
        return None

    def _run(self) -> None:
        self.jid = self._find_job()
        starved_since: float | None = None
        while self.jid is not None and not self._stop.wait(self.poll_s):
            try:
                job = self.rest.job(self.jid)
                if job["state"] in TERMINAL_STATES:
                    return
                reason = self.starving(job)
            except UNREACHABLE:   # a JobManager under load answers late: no verdict either way
                continue
            if reason is None:
                starved_since = None
            elif starved_since is None:
                starved_since = time.monotonic()
                log.warning("job %s is waiting for task slots: %s", self.job_name, reason)
            elif time.monotonic() - starved_since >= self.give_up_s:
                self.on_starved(
                    f"job {self.job_name!r} ({self.jid}) could not get the task slots it needs for "
                    f"{time.monotonic() - starved_since:.0f}s: {reason}. To run it: {_what_to_do()}")
                return

    def starving(self, job: dict) -> str | None:
        """Why the job is starved of slots now, or None if it is not."""
        counts = job.get("status-counts", {})
        scheduled, waiting = counts.get("SCHEDULED", 0), counts.get("SCHEDULED", 0) + counts.get("CREATED", 0)
        failure = self._note_failure()
        if job["state"] == "RUNNING" and waiting == 0:
            return None     # every task has its slot (deploying, initializing or running)
        no_resource = failure is not None and NO_RESOURCE in failure
        if not scheduled and not no_resource:
            return None     # (re)starting, or restarting for another reason: not a matter of slots
        overview = self.rest.overview()
        free = overview.get("slots-available", 0)
        if free > 0:
            return None     # there are slots: Flink is placing the tasks
        return (f"it needs {self.slots} slot{'s' if self.slots > 1 else ''} (parallelism {self.slots}), the cluster "
                f"has {free} free of {overview.get('slots-total', 0)} ({overview.get('taskmanagers', 0)} "
                f"TaskManager(s)), {scheduled} of its tasks wait for a slot, job state {job['state']}"
                + (f"; Flink: {_exception(failure, NO_RESOURCE)}" if no_resource else ""))

    def _note_failure(self) -> str | None:
        """The job's latest failure; one of another kind than the last is logged (a job that restarts says why)."""
        exceptions = self.rest.call(f"/jobs/{self.jid}/exceptions?maxExceptions=1")
        failure, stamp = exceptions.get("root-exception"), exceptions.get("timestamp")
        if failure and (self._last_failure is None or stamp != self._last_failure[0]):
            first = failure.splitlines()[0]
            if self._last_failure is None or first != self._last_failure[1]:
                log.warning("job %s failed; Flink restarts it: %s", self.job_name, first[:500])
            self._last_failure = (stamp, first)
        return failure


def _exception(failure: str, name: str) -> str:
    """'NoResourceAvailableException: Could not ...' out of a stack trace's wrapped first line."""
    line = failure.splitlines()[0]
    at = line.find(name)
    return (line[line.rfind(".", 0, at) + 1:] if at >= 0 else line)[:300].rstrip(".")


def watch_from_command_line(args: list[str]) -> SlotWatch:
    """Check the cluster before submitting `args`, then watch the job; for `python -m pipelines.market`.

    Raises ClusterCannotRunJob before submitting. When the watch gives up it
    logs why and sends SIGUSR1 to the main thread, whose handler cancels the
    job and raises SystemExit(EXIT_CANNOT_RUN) there: the command's own
    clean-up (`finally`, atexit: the job server and expansion service JVMs)
    runs, and nothing else of the command acts on the job meanwhile. Call
    from the main thread.
    """
    options = PipelineOptions(args)
    rest = FlinkRest.at(options.view_as(FlinkRunnerOptions).flink_master)
    job_name = options.view_as(GoogleCloudOptions).job_name
    slots = required_slots(args)
    check_before_submit(rest, job_name, slots)
    gave_up: list[str] = []

    def starved(message: str) -> None:
        log.error("%s", message)
        gave_up.append(message)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def give_up(signum, frame) -> None:
        # In the main thread, so nothing else of the command acts on the job meanwhile.
        if not gave_up:
            return
        try:
            log.error("cancelled job %s (its checkpoints are kept): %s", job_name, rest.cancel(watch.jid))
        except (*UNREACHABLE, RuntimeError) as exc:
            log.error("could not cancel job %s (%s): cancel it with `python -m runners.flink_cluster cancel %s`",
                      job_name, exc, job_name)
        raise SystemExit(EXIT_CANNOT_RUN)

    signal.signal(signal.SIGUSR1, give_up)
    watch = SlotWatch(rest, job_name, slots, starved)
    return watch.start()
