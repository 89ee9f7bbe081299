"""What Beam needs to run on the local embedded Flink without downloading anything.

The Python SDK would otherwise fetch the shaded Flink job server and the IO
expansion service from Maven at run time; we point it at the launcher jars
built by `runners.local.fetch` instead.
"""
from __future__ import annotations

from apache_beam.transforms.external import JavaJarExpansionService

from runners.local import fetch

# Without Docker the Java side of KafkaIO cannot run in Beam's default DOCKER
# environment: EMBEDDED runs it inside the Flink job server's JVM
# (apache/beam#20979, #21021, #22809). use_deprecated_read expands KafkaIO to
# the UnboundedSource read, which the Flink runner checkpoints natively: its
# offsets live in Flink checkpoints and its watermark comes from the
# timestamp policy. The expansion service only reads experiments from its own
# command line.
EXPANSION_ARGS = ("--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read")


def expansion_service() -> JavaJarExpansionService:
    """A Kafka IO expansion service started from the local jars, for the Flink runner."""
    jar = fetch.expansion_service_jar()
    fetch.require(jar)
    fetch.current_event_time_read()   # on the launcher's class path: a changed source compiled first
    return JavaJarExpansionService(str(jar), extra_args=["{{PORT}}", *EXPANSION_ARGS])


def flink_job_server_args() -> list[str]:
    """Pipeline arguments that make `--runner=FlinkRunner` use the local job server jar."""
    jar = fetch.job_server_jar()
    fetch.require(jar)
    return [f"--flink_job_server_jar={jar}"]
