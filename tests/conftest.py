"""Shared fixtures: the real Kafka broker, unique topics, and the CI skip rule.

Tests that need Kafka, Java or Flink run against the broker `make test`
starts. Locally a missing prerequisite skips with its reason; with CI=true
such a skip is a failure, so CI can never pass by skipping them.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from market import config
from runners.local import fetch, kafka

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BOOTSTRAP = f"{kafka.HOST}:{kafka.PORT}"


def missing_prerequisite(reason: str) -> None:
    """Skip locally, fail in CI: a prerequisite of this test is absent."""
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of the running local broker (started by `make test`)."""
    from confluent_kafka.admin import AdminClient

    from runners.local import process

    if not process.port_open(kafka.HOST, kafka.PORT):
        missing_prerequisite(f"no Kafka broker on {BOOTSTRAP}: run `python -m runners.local start`")
    try:
        AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10)
    except Exception as exc:  # KafkaException
        missing_prerequisite(f"Kafka on {BOOTSTRAP} does not answer: {exc}")
    return BOOTSTRAP


@pytest.fixture(scope="session")
def flink_jars() -> None:
    """The launcher jars of the Flink job server and the expansion service exist."""
    import shutil

    if shutil.which("java") is None:
        missing_prerequisite("java is not on PATH")
    for jar in (fetch.job_server_jar(), fetch.expansion_service_jar()):
        if not jar.exists():
            missing_prerequisite(f"{jar} is missing: run `python -m runners.local fetch`")


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The next offset `group` has committed on each partition of `topic`; -1001 where none."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    return [tp.offset for tp in committed]


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory for fresh, uniquely named topics; deleted after the test."""
    from runners import topics

    created: list[str] = []

    def make(prefix: str = "test", partitions: int = config.TICKS.partitions) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        topics.create_topics(kafka_bootstrap, {name: partitions})
        created.append(name)
        return name

    yield make
    topics.delete_topics(kafka_bootstrap, created)


@pytest.fixture
def beam_services_end_with_test() -> Iterator[None]:
    """The job server and expansion service JVMs a test's in-process pipeline starts end with the test.

    Beam stops them only when the interpreter exits: they would hold memory
    and CPU through the rest of the run. Found by pid (children of pytest new
    since the test began), not by name.

    Beam also shares a started service between the pipelines of one process
    (apache_beam.utils.subprocess_server.SubprocessServer's cache, keyed by
    command line): an entry ended behind its back would be handed to the next
    test as a dead process ("Service failed to start up with error 143"). So
    each ended service is waited for, however long its JVM takes to exit
    after SIGTERM, and dropped from that cache.
    """
    from runners.local import process

    before = set(process.descendants(os.getpid()))
    yield
    ended = process.terminate([pid for pid in process.descendants(os.getpid()) if pid not in before])
    _forget_beam_services(set(ended))


def _forget_beam_services(pids: set[int]) -> None:
    import subprocess

    from apache_beam.utils.subprocess_server import SubprocessServer

    cache = SubprocessServer._cache
    with cache._lock:
        for key, entry in list(cache._cache.items()):
            started, _ = entry.obj
            if started is None or (started.pid not in pids and started.poll() is None):
                continue
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()
            del cache._cache[key]
