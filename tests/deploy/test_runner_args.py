"""The per-runner set-up reads the pipeline's flags as Beam's PipelineOptions does (runners/args.py)."""
from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, WorkerOptions

from runners import args as runner_args
from runners.args import FlinkJavaOptions, given_options, with_flink_defaults
from runners.compose import submit
from runners.flink_cluster import cluster


def occurrences(argv: list[str], name: str) -> list[str]:
    return [arg for arg in argv if arg == f"--{name}" or arg.startswith(f"--{name}=")]


@pytest.mark.parametrize("job_name", [["--job_name", "market"], ["--job_name=market"]])
def test_job_name_is_seen_in_either_form(job_name, tmp_path, monkeypatch):
    args = submit.pipeline_args(["--runner=FlinkRunner", *job_name])
    assert f"--state_backend_storage_path=file://{submit.CHECKPOINT_ROOT}/market" in args

    monkeypatch.setattr(cluster, "checkpoint_root", lambda name: tmp_path / (name or "unnamed"))
    _, target = cluster.pipeline_args(["--runner=FlinkRunner", "--flink_master=localhost:8081",
                                       "--flink_job_server_jar=/jars/job-server.jar", *job_name])
    assert target.job_name == "market"
    assert target.directory == tmp_path / "market" / "savepoints"


@pytest.mark.parametrize("given", [["--max_bundle_time_mills=100"], ["--max_bundle_time_mills", "100"]])
def test_a_flink_setting_the_user_gives_is_kept_and_not_doubled(given):
    args = with_flink_defaults(["--runner=FlinkRunner", *given])
    assert occurrences(args, "max_bundle_time_mills") == given[:1]
    assert PipelineOptions(args).view_as(FlinkJavaOptions).max_bundle_time_mills == 100
    # The other defaults are still added.
    assert "--object_reuse" in args and "--max_cache_memory_usage_mb=0" in args


def test_a_setting_given_with_beams_default_value_counts_as_given():
    # 0 is Beam's default (the Python state cache off), and the project's too: given, it is not added again.
    args = with_flink_defaults(["--max_cache_memory_usage_mb", "0"])
    assert occurrences(args, "max_cache_memory_usage_mb") == ["--max_cache_memory_usage_mb"]
    assert PipelineOptions(args).view_as(WorkerOptions).max_cache_memory_usage_mb == 0


def test_given_options_are_the_flags_of_argv_and_nothing_else():
    assert given_options(["--job_name", "market", "--object_reuse", "--parallelism=-1", "--fasterCopy"]) == {
        "job_name": "market", "object_reuse": True, "parallelism": -1, "fasterCopy": True}
    assert given_options([]) == {}


def test_options_given_more_than_once_are_read_and_kept():
    # --experiments appends: a marker in place of its default list made every run with it crash.
    argv = ["--experiments=data_buffer_time_limit_ms=20", "--experiments", "use_deprecated_read"]
    assert given_options(argv) == {"experiments": ["data_buffer_time_limit_ms=20", "use_deprecated_read"]}
    args = with_flink_defaults(argv)
    assert PipelineOptions(args).view_as(DebugOptions).experiments == [
        "data_buffer_time_limit_ms=20", "use_deprecated_read"]
    assert occurrences(args, "max_bundle_time_mills") == ["--max_bundle_time_mills=150"]


def test_checkpoint_settings_the_user_gives_are_kept(tmp_path):
    args = submit.pipeline_args(["--job_name=market", "--checkpointing_interval", "5000",
                                 f"--state_backend_storage_path=file://{tmp_path}"])
    assert occurrences(args, "checkpointing_interval") == ["--checkpointing_interval"]
    assert occurrences(args, "state_backend_storage_path") == [f"--state_backend_storage_path=file://{tmp_path}"]
    assert "--retain_externalized_checkpoints_on_cancellation" in args


def test_flink_java_options_left_unset_are_sent_to_no_runner():
    # What the portable runner and Dataflow send: every option whose value is not None.
    sent = {name for name, value in PipelineOptions(["--runner=FlinkRunner"]).get_all_options().items()
            if value is not None}
    declared = set(PipelineOptions([]).view_as(FlinkJavaOptions)._visible_option_list())
    assert declared and not declared & sent
    given = PipelineOptions(runner_args.with_flink_defaults([])).get_all_options()
    assert given["finish_bundle_before_checkpointing"] is True and given["max_bundle_time_mills"] == 150


def test_no_resume_is_honoured_and_kept_from_the_job(tmp_path):
    chk = tmp_path / "job" / "chk-1"
    chk.mkdir(parents=True)
    (chk / "_metadata").write_text("x")
    own, argv = submit.split_flags(["--job_name", "market", "--no_resume",
                                    "--kafka_expansion_service", "x:1",
                                    f"--state_backend_storage_path=file://{tmp_path}"])
    assert own.no_resume and own.kafka_expansion_service == "x:1"
    assert argv == ["--job_name", "market", f"--state_backend_storage_path=file://{tmp_path}"]
    assert not occurrences(submit.pipeline_args(argv, resume=not own.no_resume), "savepoint_path")
    assert occurrences(submit.pipeline_args(argv), "savepoint_path") == [f"--savepoint_path=file://{chk}"]


@pytest.fixture
def submitted(monkeypatch) -> list[tuple[list[str], str]]:
    """What `submit.run` hands to `pipelines.market.run`, which is not called."""
    from pipelines import market
    calls = []
    monkeypatch.setattr(market, "run", lambda argv, expansion_service: calls.append((argv, expansion_service)))
    return calls


def test_without_a_flink_master_there_is_no_cluster_to_ask(submitted, monkeypatch):
    def no_rest(*args, **kwargs):
        raise AssertionError("asked a JobManager that was never named")

    monkeypatch.setattr(submit, "active_job", no_rest)
    submit.run(["--runner=FlinkRunner", "--job_name=market"])
    (argv, expansion), = submitted
    assert expansion == submit.DEFAULT_EXPANSION_SERVICE


def test_a_job_running_under_the_name_is_not_submitted_again(submitted, monkeypatch):
    asked = []
    monkeypatch.setattr(submit, "active_job",
                        lambda master, name: asked.append((master, name)) or {"jid": "a", "state": "RUNNING"})
    assert submit.run(["--flink_master", "flink-jobmanager:8081", "--job_name", "market"]) is None
    assert asked == [("flink-jobmanager:8081", "market")] and not submitted
