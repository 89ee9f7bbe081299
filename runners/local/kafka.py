"""A single-node KRaft Kafka broker on localhost:9092 and the topics of DESIGN.md §2."""
from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from market import config
from runners.local import fetch, paths, process, prereqs

log = logging.getLogger(__name__)

NAME = "kafka"
HOST = "localhost"
PORT = 9092
CONTROLLER_PORT = 9093
HEAP = "-Xmx768m"


def _server_properties(log_dir: Path) -> str:
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{HOST}:{PORT}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
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


def _java_cmd(main_class: str, *args: str) -> list[str]:
    java = shutil.which("java") or "java"
    conf = paths.data_dir(NAME).parent / "kafka-conf"
    return [java, HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
            "-cp", str(fetch.kafka_lib() / "*"), main_class, *args]


def _write_config() -> Path:
    conf = paths.data_dir(NAME).parent / "kafka-conf"
    conf.mkdir(parents=True, exist_ok=True)
    props = conf / "server.properties"
    props.write_text(_server_properties(paths.data_dir(NAME)))
    (conf / "log4j2.properties").write_text(_LOG4J2)
    return props


def _format_storage(props: Path) -> None:
    """Format the KRaft log dir once; a formatted dir keeps its data across restarts."""
    data = paths.data_dir(NAME)
    if (data / "meta.properties").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cmd = _java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def is_running() -> bool:
    return process.read_pid(NAME) is not None


def start(timeout_s: float = 90.0) -> None:
    """Start the broker unless it runs, wait until it serves metadata, create the topics."""
    prereqs.require_java()
    if not fetch.kafka_lib().exists():
        raise RuntimeError("Kafka jars are missing: run `python -m runners.local fetch` first")
    if is_running():
        log.info("kafka already running (pid %s)", process.read_pid(NAME))
    else:
        if process.port_open(HOST, PORT):
            raise RuntimeError(f"port {PORT} is taken by another process; stop it or free the port")
        props = _write_config()
        _format_storage(props)
        pid = process.start(NAME, _java_cmd("kafka.Kafka", str(props)))
        log.info("kafka starting (pid %s), log %s", pid, paths.log_file(NAME))
    wait_ready(timeout_s)
    create_topics()


def wait_ready(timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s
    # Wait for the port first: librdkafka logs every refused connection.
    while not process.port_open(HOST, PORT) and time.monotonic() < deadline:
        if not is_running():
            raise RuntimeError(f"kafka exited during start:\n{process.tail(paths.log_file(NAME))}")
        time.sleep(0.3)
    admin = AdminClient({"bootstrap.servers": f"{HOST}:{PORT}"})
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not is_running():
            raise RuntimeError(f"kafka exited during start:\n{process.tail(paths.log_file(NAME))}")
        try:
            meta = admin.list_topics(timeout=2)
            if meta.brokers:
                return
        except Exception as exc:  # KafkaException while the broker boots
            last_error = exc
        time.sleep(0.5)
    raise RuntimeError(f"kafka did not become ready in {timeout_s:.0f}s ({last_error}):\n"
                       f"{process.tail(paths.log_file(NAME))}")


def create_topics(bootstrap: str = f"{HOST}:{PORT}") -> list[str]:
    """Create the topics of DESIGN.md §2 that do not exist yet; return the ones created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
              for t in config.TOPICS if t.name not in existing]
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=30).items() if wanted else []:
        try:
            future.result()
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def stop() -> bool:
    return process.stop(NAME, timeout_s=60)


def reset_data() -> None:
    """Delete the broker's data (it must be stopped)."""
    if is_running():
        raise RuntimeError("stop kafka before deleting its data")
    shutil.rmtree(paths.data_dir(NAME), ignore_errors=True)
