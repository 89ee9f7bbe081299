"""Reading topics from their start in a background thread: the base of the e2e tests' and benchmarks' readers.

A `TopicReader` assigns every partition of its topics from the beginning
(no consumer-group rebalance to wait for: a new group's first rebalance
waits out the broker's initial delay, 3 s by default), hands each poll's
records to `_handle`, and keeps what shows whether it keeps up: records read,
its position, the delay of each poll behind its topics (the poll's time
minus the oldest record timestamp `_handle` returns) and its thread's CPU.
"""
from __future__ import annotations

import os
import threading
import time
from array import array
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from runners.local.supervised import cpu_seconds
from runners.wait import wait_until


def partitions_of(consumer: Consumer, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The partition ids of `topic`, once its metadata has them: a topic created a moment ago may have
    none yet (no leader), and assigning those would read nothing, ever."""
    def known() -> list[int]:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        return sorted(meta.partitions) if meta is not None and meta.error is None else []

    found = wait_until(known, timeout_s, 0.2)
    if not found:
        raise RuntimeError(f"topic {topic} has no partitions with a leader after {timeout_s:.0f}s")
    return found


def assign_from_start(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    """Assign every partition of `topics` from its beginning; return them (offsets unset) for `position()`."""
    assigned = []
    for topic in topics:
        assigned += [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
    consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in assigned])
    return assigned


def thread_cpu_s(tid: int | None) -> float:
    """CPU seconds of one thread of this process (0 before it started)."""
    if tid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return cpu_seconds(fields)


class TopicReader:
    """Reads `topics` from their start in a background thread; subclasses take each poll's records in `_handle`."""

    def __init__(self, bootstrap: str, topics: list[str], group: str, batch: int = 1000,
                 timeout_s: float = 0.2) -> None:
        self.lock = threading.Lock()
        self.topics = topics
        self._batch, self._timeout_s = batch, timeout_s
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "enable.auto.commit": False})
        self._partitions = assign_from_start(self._consumer, topics)
        self.position = 0           # records of the topics read so far (next offsets, summed)
        self.messages = 0
        self.delays = array("q")    # ms, one per poll whose records had timestamps
        self.tid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read-{topics[0]}", daemon=True)
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
