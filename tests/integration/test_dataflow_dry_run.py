"""The unchanged market pipeline builds a complete streaming Dataflow job (dry run).

No credentials or network: `--dry_run=True` (TestOptions) makes the
DataflowRunner build the job and return before submitting it. KafkaIO is
expanded for real by the Java expansion service started from the local jars,
with Dataflow's defaults (no Flink-only arguments): what `python -m
pipelines.market` attaches for Dataflow (runners.launch.prepare).
"""
from __future__ import annotations

import pytest

from pipelines import market
from runners import launch

pytestmark = [pytest.mark.integration]

BROKERS = "kafka-1.internal:9092"


@pytest.fixture(scope="module")
def job(flink_jars):
    # TestOptions.dry_run takes any non-empty string as true: only ever pass True.
    argv = ["--runner=DataflowRunner", "--project=market-data-dry-run", "--region=europe-west1",
            "--temp_location=gs://market-data-dry-run/tmp", "--dry_run=True",
            f"--bootstrap_servers={BROKERS}"]
    prepared = launch.prepare(argv)
    return market.run(prepared.args, prepared.expansion_service).job


def payloads_under(job, prefix: str) -> dict[str, bytes]:
    """unique name → spec payload of every transform whose name starts with `prefix`."""
    return {t.unique_name: t.spec.payload for t in job.proto_pipeline.components.transforms.values()
            if t.unique_name.startswith(prefix)}


def test_job_is_streaming(job):
    from apache_beam.runners.dataflow.internal.clients import dataflow

    assert job.proto.type == dataflow.Job.TypeValueValuesEnum.JOB_TYPE_STREAMING


def test_job_reads_ticks_with_kafka_io(job):
    read = payloads_under(job, "ReadTicks/ReadFromKafka/")
    # Dataflow keeps KafkaIO's default splittable-DoFn read (no use_deprecated_read).
    assert any("ReadFromKafkaViaSDF" in name for name in read), sorted(read)


@pytest.mark.parametrize("write", ["WriteBars", "WriteAlerts", "WriteDeadLetters"])
def test_job_writes_each_output_to_kafka(job, write):
    # Topic and brokers sit in Java-serialized, Snappy-compressed DoFn payloads,
    # so the job's shape is what can be checked here.
    names = payloads_under(job, f"{write}/WriteToKafka/")
    writers = [name for name in names if name.endswith("ParMultiDo(KafkaWriter)")]
    assert len(writers) == 1, sorted(names)


def test_java_transforms_use_dataflow_defaults(job):
    """No Flink-only EMBEDDED environment leaks into the Dataflow job."""
    environments = [env.urn for env in job.proto_pipeline.components.environments.values()]
    assert "beam:env:embedded:v1" not in environments
    assert "beam:env:docker:v1" in environments
