"""The Flink configuration of the local session cluster, written under `.cache/flink-cluster/conf`.

One JobManager and one or more TaskManagers on localhost with small memory
budgets: this machine has 2 cores and is shared. The keys are the ones a real
cluster sets in its `config.yaml`; docs/flink_cluster.md says which to change
when the cluster grows.
"""
from __future__ import annotations

from pathlib import Path

from runners.local import paths

HOST = "localhost"
REST_PORT = 8081
RPC_PORT = 6123
SLOTS_PER_TASKMANAGER = 2
JOBMANAGER_MEMORY = "1g"
TASKMANAGER_MEMORY = "3g"
TASKMANAGER_METASPACE = "1g"     # part of TASKMANAGER_MEMORY; see _config_yaml


def cluster_dir() -> Path:
    """Config, checkpoints and scratch space of the local cluster."""
    return paths.cache_dir() / "flink-cluster"


def conf_dir() -> Path:
    return cluster_dir() / "conf"


def checkpoints_dir() -> Path:
    return cluster_dir() / "checkpoints"


def rest_url() -> str:
    return f"http://{HOST}:{REST_PORT}"


def _config_yaml() -> str:
    tmp = cluster_dir() / "tmp"
    return f"""\
# Written by `python -m runners.flink_cluster start`; edits are overwritten.
jobmanager.rpc.address: {HOST}
jobmanager.rpc.port: {RPC_PORT}
jobmanager.bind-host: {HOST}
jobmanager.memory.process.size: {JOBMANAGER_MEMORY}
rest.address: {HOST}
rest.bind-address: {HOST}
rest.port: {REST_PORT}

taskmanager.host: {HOST}
taskmanager.bind-host: {HOST}
taskmanager.numberOfTaskSlots: {SLOTS_PER_TASKMANAGER}
taskmanager.memory.process.size: {TASKMANAGER_MEMORY}
# Each Beam job loads its ~190 shipped jars in a class loader of its own,
# about 50 MB of metaspace, and Beam's threads keep that loader alive after
# the job ends: measured 36 -> 91 -> 137 -> 184 MB over three jobs, nothing
# returned by a full GC. Flink's default 256 MB killed a TaskManager
# (OutOfMemoryError: Metaspace) at its fourth or fifth job; 1 GB lasts about
# 19 jobs, after which the TaskManager wants a restart (docs/flink_cluster.md).
taskmanager.memory.jvm-metaspace.size: {TASKMANAGER_METASPACE}
# Beam's streaming runner keeps state on the heap (no RocksDB here), so the
# managed-memory share Flink reserves by default (0.4) would only shrink the
# heap that Kafka consumers and Beam's bundles live in.
taskmanager.memory.managed.fraction: 0.1
parallelism.default: {SLOTS_PER_TASKMANAGER}

# Beam releases its user-code class loader after Flink closes it; Flink's
# leak check would then fail the job on shutdown (Beam's Flink runner docs).
classloader.check-leaked-classloader: false

state.checkpoints.dir: file://{checkpoints_dir()}
state.savepoints.dir: file://{cluster_dir() / 'savepoints'}
io.tmp.dirs: {tmp}
web.tmpdir: {tmp / 'web'}
blob.storage.directory: {tmp / 'blobs'}
"""


_LOG4J = """\
# Flink's log4j-console.properties, trimmed: everything to stdout, which
# runners.local.process sends to .cache/logs/<process>.log.
monitorInterval = 30
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = ConsoleAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = WARN
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = ERROR
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""


def write() -> Path:
    """Write `config.yaml` and the log4j config; return the config directory."""
    conf = conf_dir()
    conf.mkdir(parents=True, exist_ok=True)
    for folder in ("tmp", "checkpoints", "savepoints"):
        (cluster_dir() / folder).mkdir(parents=True, exist_ok=True)
    (conf / "config.yaml").write_text(_config_yaml())
    (conf / "log4j-console.properties").write_text(_LOG4J)
    return conf
