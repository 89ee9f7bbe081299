"""Checks before submitting: a missing broker or topic is a clear error, not a hang.

KafkaIO on a runner retries an unreachable broker forever; a person starting
the pipeline wants to hear at once that nothing listens on the address given.
"""
from __future__ import annotations

from pipelines.options import MarketOptions


class PreflightError(RuntimeError):
    """The pipeline cannot start: the message says why and what to do."""


def check_kafka(options: MarketOptions, timeout_s: float = 8.0) -> None:
    """Raise PreflightError unless the broker answers and the input topic exists."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": options.bootstrap_servers,
                         # Don't let librdkafka print every refused connection.
                         "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise PreflightError(
            f"no Kafka broker answered at {options.bootstrap_servers} within {timeout_s:.0f}s ({exc}); "
            f"start one (`python -m runners.local start`) or pass --bootstrap_servers") from exc
    if options.input_topic not in metadata.topics:
        raise PreflightError(
            f"input topic {options.input_topic!r} does not exist on {options.bootstrap_servers}; "
            f"create the topics with `python -m runners.local topics`")
