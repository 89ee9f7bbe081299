"""`--help` on every command lists its flags with their defaults and nothing else on screen."""
from __future__ import annotations

import subprocess
import sys

import pytest

from market import config, settings
from runners.local import paths

COMMANDS = ("pipelines.market", "runners.compose", "serving", "producer", "runners.local",
            "runners.flink_cluster")


def help_of(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=paths.PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_prints_usage_and_no_warnings(module):
    result = help_of(module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
    assert result.stderr == "", "third-party warnings on screen"


def test_pipeline_help_lists_every_market_flag_with_its_default():
    # The flags' section, lines unwrapped (argparse wraps them).
    text = " ".join(help_of("pipelines.market").stdout.split("\noptions:", 1)[1].split())
    for flag, default in (("bootstrap_servers", settings.BOOTSTRAP_SERVERS.value()),
                          ("input_topic", config.TICKS_TOPIC),
                          ("output_topic", config.TRENDS_TOPIC), ("alerts_topic", config.ALERTS_TOPIC),
                          ("dlq_topic", config.DLQ_TOPIC), ("consumer_group", config.PIPELINE_CONSUMER_GROUP),
                          ("window_size_s", config.WINDOW_SIZE_S),
                          ("allowed_lateness_s", config.ALLOWED_LATENESS_S),
                          ("early_firing_s", config.EARLY_FIRING_S), ("max_future_s", config.MAX_FUTURE_S),
                          ("volatility_threshold_pct", config.VOLATILITY_THRESHOLD_PCT),
                          ("zscore_threshold", config.ZSCORE_THRESHOLD),
                          ("volume_spike_ratio", config.VOLUME_SPIKE_RATIO)):
        section = text.split(f"--{flag} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {default})" in section, (flag, section)
    for switch in ("--no_resume", "--security_protocol", "--sasl_mechanism", "--sasl_username",
                   "--sasl_password", "--ssl_ca_location"):
        assert f"{switch} " in text, switch
    # Beam's own options are named once, not listed (they would fill screens).
    assert "--flink_master" in text and "--flink_job_server_jar" not in text


def test_compose_help_lists_the_submitters_own_flag_with_its_default():
    from runners.compose import submit
    text = " ".join(help_of("runners.compose").stdout.split("\noptions:", 1)[1].split())
    section = text.split("--kafka_expansion_service ", 1)[1].split(" --", 1)[0]
    assert f"(default: {submit.DEFAULT_EXPANSION_SERVICE})" in section, section
    assert "--no_resume " in text
