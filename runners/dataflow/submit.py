"""What the unchanged market pipeline needs on Dataflow.

    python -m pipelines.market --runner=DataflowRunner --project=PROJECT \
        --region=REGION --temp_location=gs://BUCKET/tmp \
        --bootstrap_servers=BROKERS_REACHABLE_FROM_THE_VPC

KafkaIO keeps Dataflow's defaults (SDF read in Dataflow's Java container):
nothing Flink-specific is passed. The expansion service starts from the same
local class path as on Flink, and stages every jar of that class path so
Dataflow's Java workers get KafkaIO, its dependencies and the project's read
(pipelines/java, compiled into that class path by `python -m runners.local
fetch`).
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.transforms.external import JavaJarExpansionService

from runners.local import fetch, paths


def pipeline_args(argv: list[str]) -> list[str]:
    """`argv` plus the worker packaging Dataflow needs, unless given."""
    args = list(argv)
    options = PipelineOptions(args)
    if options.view_as(SetupOptions).setup_file is None:
        # Workers install the project (transforms, market) from setup.py.
        args.append(f"--setup_file={paths.PROJECT_ROOT / 'setup.py'}")
    if not options.view_as(StandardOptions).streaming:
        args.append("--streaming")
    return args


def expansion_service() -> JavaJarExpansionService:
    """KafkaIO expansion with Dataflow's default environment and every jar staged."""
    jar = fetch.expansion_service_jar()
    fetch.require(jar)
    lib = sorted(str(p) for p in (jar.parent / "lib").glob("*.jar"))
    return JavaJarExpansionService(str(jar), extra_args=["{{PORT}}", "--filesToStage=" + ",".join(lib)])
