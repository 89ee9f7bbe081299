"""Checks before submitting: a missing broker or topic is a clear error, not a hang.

KafkaIO on a runner retries an unreachable broker forever; a person starting
the pipeline wants to hear at once that nothing listens on the address given.
"""
from __future__ import annotations

from market import kafka_security
from pipelines.options import MarketOptions


class PreflightError(RuntimeError):
    """The pipeline cannot start: the message says why and what to do."""


def check_kafka(options: MarketOptions, timeout_s: float = 8.0) -> None:
    """Raise PreflightError unless the security settings are valid, the broker answers and the input topic exists."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        security = kafka_security.from_args(options)
    except kafka_security.KafkaSecurityError as exc:
        raise PreflightError(str(exc)) from exc
    # A refused login or a listener speaking another protocol is only reported
    # to the error callback; the metadata request itself just times out.
    errors: list[KafkaError] = []
    admin = AdminClient({"bootstrap.servers": options.bootstrap_servers,
                         # Don't let librdkafka print every refused connection.
                         "log_level": 0, "error_cb": errors.append, **security.librdkafka()})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0.5)  # serves the error callback
        refused = kafka_security.refusal(errors, options.bootstrap_servers, security)
        if refused is not None:
            raise PreflightError(
                f"Kafka at {options.bootstrap_servers} refused the connection made with "
                f"{security.describe()}: {refused}; check --security_protocol, --sasl_mechanism, "
                f"--sasl_username and --sasl_password (or KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)") from exc
        raise PreflightError(
            f"no Kafka broker answered at {options.bootstrap_servers} within {timeout_s:.0f}s ({exc}); "
            f"start one (`python -m runners.local start`) or pass --bootstrap_servers") from exc
    if options.input_topic not in metadata.topics:
        raise PreflightError(
            f"input topic {options.input_topic!r} does not exist on {options.bootstrap_servers}; "
            f"create the topics with `python -m runners.local topics`")
