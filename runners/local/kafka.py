"""A single-node KRaft Kafka broker and the topics of DESIGN.md §2.

The local broker listens on localhost:9092 without authentication (the
default set-up) and on localhost:9094 with SASL_PLAINTEXT / SCRAM-SHA-512
(DESIGN.md §10), whose user this runner creates after every start. The
user's settings are written to `<conf>/sasl.env` (mode 600) in the
variables every part of the project reads, so

    set -a; . .cache/data/kafka-conf/sasl.env; set +a

points the producer, the pipeline and serving at the authenticated listener.
`Broker` makes ports, name and directories configurable, so tests can run a
second broker of their own next to the shared one.
"""
from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from market import kafka_security
from market.kafka_security import KafkaSecurity
from market.settings import BOOTSTRAP_SERVERS
from runners.local import fetch, paths, prereqs, process
from runners.wait import wait_until

log = logging.getLogger(__name__)

NAME = "kafka"
HOST = "localhost"
PORT = 9092
CONTROLLER_PORT = 9093
SASL_PORT = 9094
SASL_MECHANISM = kafka_security.SCRAM_SHA_512
SASL_USER = "market"
HEAP = "-Xmx768m"
# PBKDF2 rounds of the stored SCRAM credential: Kafka's minimum, this is a
# local development broker.
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class Broker:
    """Where one local broker listens and keeps its files; `DEFAULT` is the shared one."""

    name: str = NAME
    host: str = HOST
    port: int = PORT
    controller_port: int = CONTROLLER_PORT
    sasl_port: int = SASL_PORT
    home: Path | None = None
    """Folder for data and configuration; None: the project's cache (`.cache/data/`)."""
    heap: str = HEAP

    @property
    def data_dir(self) -> Path:
        return self.home / "data" if self.home is not None else paths.data_dir(self.name)

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf" if self.home is not None else paths.data_dir(self.name).parent / "kafka-conf"

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener: no authentication (the local default)."""
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener: SCRAM-SHA-512 users only."""
        return f"{self.host}:{self.sasl_port}"

    @property
    def sasl_env_file(self) -> Path:
        return self.conf_dir / "sasl.env"


DEFAULT = Broker()


def _server_properties(broker: Broker) -> str:
    host = broker.host
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{broker.controller_port}
listeners=PLAINTEXT://{host}:{broker.port},CONTROLLER://{host}:{broker.controller_port},\
SASL_PLAINTEXT://{host}:{broker.sasl_port}
advertised.listeners=PLAINTEXT://{host}:{broker.port},SASL_PLAINTEXT://{host}:{broker.sasl_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# DESIGN.md §10: the SASL listener takes SCRAM users only; the runner creates
# them through the admin API after each start (they live in the metadata log).
sasl.enabled.mechanisms={SASL_MECHANISM}
listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs={broker.data_dir}
num.partitions=3
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# A week of history: serving replays the last 24 h on start (DESIGN.md §7).
log.retention.hours=168
auto.create.topics.enable=true
"""


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def _java_cmd(broker: Broker, main_class: str, *args: str) -> list[str]:
    return [prereqs.java(), broker.heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={broker.conf_dir / 'log4j2.properties'}",
            "-cp", str(fetch.kafka_lib() / "*"), main_class, *args]


def _write_config(broker: Broker) -> Path:
    broker.conf_dir.mkdir(parents=True, exist_ok=True)
    props = broker.conf_dir / "server.properties"
    props.write_text(_server_properties(broker))
    (broker.conf_dir / "log4j2.properties").write_text(_LOG4J2)
    return props


def _cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID) that does not start with '-'.

    One in 64 would, and the storage tool's argument parser then takes it for
    an option ("--cluster-id: expected one argument"): Kafka's own
    Uuid.randomUuid() draws again in that case, and so do we.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(broker: Broker, props: Path) -> None:
    """Format the KRaft log dir once; a formatted dir keeps its data across restarts."""
    data = broker.data_dir
    if (data / "meta.properties").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    cluster_id = _cluster_id()
    cmd = _java_cmd(broker, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def sasl_security(broker: Broker = DEFAULT) -> KafkaSecurity:
    """The credentials of the local SASL listener's user, made once and kept in `sasl_env_file`."""
    env_file = broker.sasl_env_file
    values: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    password = values.get(kafka_security.ENV["sasl_password"])
    if not password:
        password = secrets.token_urlsafe(18)
        env_file.parent.mkdir(parents=True, exist_ok=True)
        # Created private before the secret is written into it.
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{BOOTSTRAP_SERVERS.env}={broker.sasl_bootstrap}\n"
                         f"{kafka_security.ENV['security_protocol']}={kafka_security.SASL_PLAINTEXT}\n"
                         f"{kafka_security.ENV['sasl_mechanism']}={SASL_MECHANISM}\n"
                         f"{kafka_security.ENV['sasl_username']}={SASL_USER}\n"
                         f"{kafka_security.ENV['sasl_password']}={password}\n")
    return KafkaSecurity(kafka_security.SASL_PLAINTEXT, SASL_MECHANISM, SASL_USER, password)


def is_running(broker: Broker = DEFAULT) -> bool:
    return process.read_pid(broker.name) is not None


def start(timeout_s: float = 90.0, broker: Broker = DEFAULT) -> None:
    """Start the broker unless it runs, wait until it serves metadata, create the SASL user and the topics."""
    prereqs.require_java()
    if not fetch.kafka_lib().exists():
        raise RuntimeError("Kafka jars are missing: run `python -m runners.local fetch` first")
    if is_running(broker):
        log.info("%s already running (pid %s)", broker.name, process.read_pid(broker.name))
    else:
        for port in (broker.port, broker.controller_port, broker.sasl_port):
            if process.port_open(broker.host, port):
                raise RuntimeError(f"port {port} is taken by another process; stop it or free the port")
        props = _write_config(broker)
        _format_storage(broker, props)
        pid = process.start(broker.name, _java_cmd(broker, "kafka.Kafka", str(props)))
        log.info("%s starting (pid %s), log %s", broker.name, pid, paths.log_file(broker.name))
    wait_ready(timeout_s, broker)
    if process.port_open(broker.host, broker.sasl_port):
        # A broker started before the SASL listener existed has none until its next start.
        security = create_sasl_user(broker, timeout_s=timeout_s)
        log.info("SASL listener on %s (%s); its settings are in %s", broker.sasl_bootstrap, security.describe(),
                 broker.sasl_env_file)
    create_topics(broker.bootstrap)


def wait_ready(timeout_s: float, broker: Broker = DEFAULT) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s

    def still_running() -> None:
        if not is_running(broker):
            raise RuntimeError(f"kafka exited during start:\n{process.tail(paths.log_file(broker.name))}")

    def port_open() -> bool:
        still_running()
        return process.port_open(broker.host, broker.port)

    # The port first: librdkafka logs every refused connection.
    wait_until(port_open, timeout_s, 0.3)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    errors: list[Exception] = []

    def serves_metadata() -> bool:
        still_running()
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception as exc:  # KafkaException while the broker boots
            errors.append(exc)
            return False

    if not wait_until(serves_metadata, max(0.0, deadline - time.monotonic()), 0.5):
        raise RuntimeError(f"kafka did not become ready in {timeout_s:.0f}s ({errors[-1] if errors else None}):\n"
                           f"{process.tail(paths.log_file(broker.name))}")


def create_sasl_user(broker: Broker = DEFAULT, timeout_s: float = 30.0) -> KafkaSecurity:
    """Create (or reset) the SCRAM user of the SASL listener; wait until it can log in there.

    Done over the unauthenticated PLAINTEXT listener, which the local broker
    trusts (no authorizer). Returns the user's settings.
    """
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    security = sasl_security(broker)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    upsert = UserScramCredentialUpsertion(
        security.username, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
        (security.password or "").encode())
    for future in admin.alter_user_scram_credentials([upsert], request_timeout=timeout_s).values():
        future.result()
    # The credential reaches the listener with the next metadata update.
    client = AdminClient({"bootstrap.servers": broker.sasl_bootstrap, "log_level": 0, **security.librdkafka()})
    errors: list[Exception] = []

    def logs_in() -> bool:
        try:
            client.list_topics(timeout=2)
            return True
        except Exception as exc:  # KafkaException until the user is known to the listener
            errors.append(exc)
            return False

    if not wait_until(logs_in, timeout_s, 0.5):
        raise RuntimeError(f"the SASL user {security.username} cannot log in at "
                           f"{broker.sasl_bootstrap}: {errors[-1] if errors else None}")
    return security


def create_topics(bootstrap: str = f"{HOST}:{PORT}", security: KafkaSecurity | None = None) -> list[str]:
    """Create the topics of DESIGN.md §2 that do not exist yet; return the ones created."""
    from runners import topics  # confluent-kafka: only when topics are made

    return topics.create_market_topics(bootstrap, security=security, exist_ok=True)


def stop(broker: Broker = DEFAULT) -> bool:
    return process.stop(broker.name, timeout_s=60)


def reset_data(broker: Broker = DEFAULT) -> None:
    """Delete the broker's data (it must be stopped)."""
    if is_running(broker):
        raise RuntimeError("stop kafka before deleting its data")
    shutil.rmtree(broker.data_dir, ignore_errors=True)
