"""Creating and deleting Kafka topics: the one admin helper of runners, benchmarks and tests.

Partition counts come from `market.config.TOPICS` (DESIGN.md §2) unless a
caller names its own; topics are created with replication factor 1 (one
broker here; a production cluster creates its topics itself).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from market import config
from market.kafka_security import KafkaSecurity


def _admin(bootstrap: str, security: KafkaSecurity | None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **(security or KafkaSecurity()).librdkafka()})


def create_topics(bootstrap: str, partitions: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None,
                  security: KafkaSecurity | None = None, exist_ok: bool = False) -> list[str]:
    """Create topic `name` with `partitions[name]` partitions (and `configs[name]`); return the ones created.

    With `exist_ok` a topic that is already there is left as it is; otherwise
    its creation error is raised, as is any other.
    """
    if not partitions:
        return []
    new = [NewTopic(name, num_partitions=count, replication_factor=1, config=dict((configs or {}).get(name, {})))
           for name, count in partitions.items()]
    admin = _admin(bootstrap, security)     # held until the futures are done: its end would fail them
    created = []
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except Exception as exc:
            if not (exist_ok and "TOPIC_ALREADY_EXISTS" in str(exc)):
                raise
    return created


def create_market_topics(bootstrap: str, suffix: str = "", security: KafkaSecurity | None = None,
                         exist_ok: bool = False) -> list[str]:
    """The four topics of DESIGN.md §2, each named `<name><suffix>`, with their partition counts."""
    return create_topics(bootstrap, {spec.name + suffix: spec.partitions for spec in config.TOPICS},
                         security=security, exist_ok=exist_ok)


def delete_topics(bootstrap: str, names: Iterable[str], security: KafkaSecurity | None = None) -> None:
    """Delete `names`, best effort: callers delete topics whose names are unique to them."""
    names = list(names)
    if not names:
        return
    admin = _admin(bootstrap, security)
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except Exception:  # already gone, or the broker is: nothing of anyone else's is touched
            pass


@dataclass(frozen=True)
class TopicSet:
    """The four topics of one pipeline (DESIGN.md §2), named `<default name>_<suffix>`, for a test or a run."""

    ticks: str
    trends: str
    alerts: str
    dlq: str

    @classmethod
    def named(cls, suffix: str, ticks: str | None = None) -> "TopicSet":
        """The names only; `ticks` names an input topic of the caller's instead."""
        names = [f"{spec.name}_{suffix}" for spec in config.TOPICS]
        return cls(ticks or names[0], *names[1:])

    @classmethod
    def create(cls, bootstrap: str, suffix: str, ticks: str | None = None,
               configs: Mapping[str, Mapping[str, str]] | None = None) -> "TopicSet":
        """Create the set (but the caller's `ticks` topic, if given); `configs` by role ("trends": {...})."""
        topics = cls.named(suffix, ticks)
        by_role = {"ticks": (topics.ticks, config.TICKS), "trends": (topics.trends, config.TRENDS),
                   "alerts": (topics.alerts, config.ALERTS), "dlq": (topics.dlq, config.DLQ)}
        wanted = {role: named for role, named in by_role.items() if not (role == "ticks" and ticks)}
        create_topics(bootstrap, {name: spec.partitions for name, spec in wanted.values()},
                      {wanted[role][0]: conf for role, conf in (configs or {}).items() if role in wanted})
        return topics

    def outputs(self) -> list[str]:
        return [self.trends, self.alerts, self.dlq]

    def pipeline_args(self) -> list[str]:
        """The pipeline's topic flags for this set."""
        return [f"--input_topic={self.ticks}", f"--output_topic={self.trends}",
                f"--alerts_topic={self.alerts}", f"--dlq_topic={self.dlq}"]

    def delete(self, bootstrap: str) -> None:
        delete_topics(bootstrap, [self.ticks, *self.outputs()])
