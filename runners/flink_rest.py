"""Flink's REST API, as every Flink runner of the project uses it: one client.

The embedded cluster (runners/local/flink.py), the local session cluster
(runners/flink_cluster) and the compose stack's submitter (runners/compose)
all talk to a JobManager the same way: list jobs, find one by name, read its
state, slots and exceptions, cancel it, or stop it with a savepoint. Beam's
job server has no call for a savepoint or for a cluster's slots; Flink's
REST API has both.

Errors: a JobManager that does not answer raises OSError (urllib's URLError
is one); a reply that is not JSON raises ValueError. `UNREACHABLE` is both.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runners.wait import wait_until

log = logging.getLogger(__name__)

# A job in one of these states holds (or waits for) slots and may still write output.
ACTIVE_STATES = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING",
                 "SUSPENDED")
TERMINAL_STATES = ("FINISHED", "CANCELED", "FAILED")
UNREACHABLE = (OSError, ValueError)


def get_json(url: str, timeout_s: float = 10.0) -> dict | list:
    """GET `url` (a full Flink REST URL) as JSON."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


def base_url(master: str) -> str:
    """`host:port` or a URL, as `--flink_master` takes it, to the REST base URL."""
    url = master if master.startswith(("http://", "https://")) else f"http://{master}"
    return url.rstrip("/")


@dataclass(frozen=True)
class FlinkRest:
    """The REST API of one JobManager at `url` (`http://host:port`)."""

    url: str

    @classmethod
    def at(cls, master: str) -> "FlinkRest":
        return cls(base_url(master))

    def call(self, path: str, method: str = "GET", body: dict | None = None, timeout_s: float = 10.0) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)

    def overview(self, timeout_s: float = 10.0) -> dict:
        """`/overview`: `taskmanagers`, `slots-total`, `slots-available`, job counts."""
        return self.call("/overview", timeout_s=timeout_s)

    def jobs(self) -> list[dict]:
        """Every job the JobManager knows: `jid`, `name`, `state`, `start-time`, task counts by state."""
        return self.call("/jobs/overview")["jobs"]

    def job(self, jid: str) -> dict:
        """One job: `state` and its `vertices` with their `parallelism`, `status` and record counts."""
        return self.call(f"/jobs/{jid}")

    def root_exception(self, jid: str) -> str | None:
        """The text of the job's latest failure (Flink's `root-exception`), or None if it never failed."""
        return self.call(f"/jobs/{jid}/exceptions?maxExceptions=1").get("root-exception")

    def checkpoint_counts(self, jid: str) -> dict:
        """`completed`, `failed`, `in_progress` ... checkpoint counts of a job."""
        return self.call(f"/jobs/{jid}/checkpoints")["counts"]

    def active_job(self, name: str) -> dict | None:
        """The unfinished job called `name` (the newest, should there be several), or None."""
        active = [job for job in self.jobs() if job["name"] == name and job["state"] in ACTIVE_STATES]
        return max(active, key=lambda job: job.get("start-time", 0), default=None)

    def running_job(self, name: str | None = None) -> str | None:
        """The id of the one RUNNING job (of that name, if given), else None."""
        running = [job for job in self.jobs()
                   if job["state"] == "RUNNING" and (name is None or job["name"] == name)]
        return running[0]["jid"] if len(running) == 1 else None

    def wait_ended(self, jid: str, timeout_s: float) -> str | None:
        """Until the job is FINISHED, CANCELED or FAILED: that state, or None after `timeout_s`."""
        def ended() -> str | None:
            try:
                state = self.job(jid)["state"]
            except UNREACHABLE:  # a JobManager busy stopping a job answers late
                return None
            return state if state in TERMINAL_STATES else None

        return wait_until(ended, timeout_s)

    def cancel(self, jid: str, timeout_s: float = 60.0) -> str:
        """Cancel a job and wait until it has ended; return its final state.

        Cancelling through Flink is what stops a streaming Beam job on a
        cluster: the Python client and the job server only observe it.
        """
        self.call(f"/jobs/{jid}?mode=cancel", method="PATCH")
        state = self.wait_ended(jid, timeout_s)
        if state is None:
            raise RuntimeError(f"job {jid} was not cancelled within {timeout_s:.0f}s")
        return state

    def stop_with_savepoint(self, jid: str, directory: Path, timeout_s: float = 90.0) -> Path | None:
        """Stop the job with a savepoint into `directory` (Flink's stop, not drain); return the savepoint, or None.

        The sources stop at the savepoint barrier and the job ends FINISHED: the
        output topics hold everything up to the savepoint and nothing after, so
        a job started from it continues with the next offsets and the same
        state. None (with a warning) when the savepoint fails or does not
        complete in `timeout_s`; the job then runs on, and the caller decides
        (cancel, as a rule). Raises UNREACHABLE errors when REST does not answer.
        """
        request = self.call(f"/jobs/{jid}/stop", method="POST",
                            body={"targetDirectory": f"file://{directory}", "drain": False})
        log.info("stopping job %s with a savepoint into %s", jid, directory)

        def completed() -> dict | None:
            status = self.call(f"/jobs/{jid}/savepoints/{request['request-id']}")
            return status if status["status"]["id"] == "COMPLETED" else None

        status = wait_until(completed, timeout_s)
        if status is None:
            log.warning("savepoint not complete after %.0fs", timeout_s)
            return None
        operation = status.get("operation", {})
        if "location" in operation:
            location = Path(operation["location"].removeprefix("file:").removeprefix("//"))
            log.info("savepoint complete: %s", location)
            return location
        log.warning("savepoint failed: %s", str(operation.get("failure-cause", operation))[:2000])
        return None
