"""One settings mechanism (market/settings.py): the same name means the same thing in every command.

Producer, pipeline and serving read a flag `--name`, else the environment
variable NAME (Kafka connection settings: KAFKA_NAME), else market/config.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from market import config, kafka_security
from market import settings as ms

ROOT = Path(__file__).resolve().parents[2]


def producer_args(*argv: str):
    from producer.cli import build_parser
    return build_parser().parse_args(list(argv))


def pipeline_options(*argv: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import MarketOptions
    return PipelineOptions(list(argv)).view_as(MarketOptions)


def serving_settings(*argv: str) -> dict:
    from serving import settings
    return settings.parse_args(list(argv))[0]


def serving_app_settings() -> dict:
    """What create_app() (gunicorn: no flags) reads."""
    from serving import settings
    return settings.from_environ()


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the variables they mean; none leaks in from the shell."""
    from pipelines.options import SETTINGS as PIPELINE
    from producer import cli
    from serving import settings
    for s in (*cli.KAFKA, *cli.SOURCE, *cli.FAULTS, *PIPELINE, *settings.SETTINGS, *settings.SERVER):
        monkeypatch.delenv(s.env, raising=False)


def run(module: str, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "WS_"))}
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**environ, "PYTHONPATH": str(ROOT), **env})


# --- the same variable moves every command --------------------------------------

def test_bootstrap_servers_from_the_environment_reach_all_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092")
    assert producer_args().bootstrap_servers == "broker-a:9092"
    assert pipeline_options().bootstrap_servers == "broker-a:9092"
    assert serving_settings()["KAFKA_BOOTSTRAP_SERVERS"] == "broker-a:9092"
    assert serving_app_settings()["KAFKA_BOOTSTRAP_SERVERS"] == "broker-a:9092"


def test_input_topic_moves_producer_and_pipeline_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_TOPIC", "ticks_b")
    assert producer_args().input_topic == "ticks_b"
    assert pipeline_options().input_topic == "ticks_b"


def test_output_and_alerts_topics_move_pipeline_and_serving_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPUT_TOPIC", "bars_b")
    monkeypatch.setenv("ALERTS_TOPIC", "alerts_b")
    options = pipeline_options()
    assert (options.output_topic, options.alerts_topic) == ("bars_b", "alerts_b")
    for values in (serving_settings(), serving_app_settings()):
        assert (values["OUTPUT_TOPIC"], values["ALERTS_TOPIC"]) == ("bars_b", "alerts_b")


def test_pipeline_analytics_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINDOW_SIZE_S", "30")
    monkeypatch.setenv("VOLATILITY_THRESHOLD_PCT", "1.5")
    options = pipeline_options()
    assert (options.window_size_s, options.volatility_threshold_pct) == (30, 1.5)


def test_producer_flags_read_their_plain_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE", "123")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("PRODUCER_COUNT", "7")   # the old prefix means nothing now
    args = producer_args()
    assert (args.rate, args.log_level, args.count) == (123.0, "DEBUG", 0)


def test_flag_beats_environment_beats_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert producer_args().input_topic == config.TICKS_TOPIC
    assert pipeline_options().output_topic == config.TRENDS_TOPIC
    assert serving_settings()["WS_MAX_CONNECTIONS"] == config.WS_MAX_CONNECTIONS
    monkeypatch.setenv("INPUT_TOPIC", "from_env")
    monkeypatch.setenv("OUTPUT_TOPIC", "from_env")
    monkeypatch.setenv("WS_MAX_CONNECTIONS", "5")
    assert producer_args("--input_topic", "from_flag").input_topic == "from_flag"
    assert pipeline_options("--input_topic=from_flag").input_topic == "from_flag"
    assert pipeline_options("--output_topic=from_flag").output_topic == "from_flag"
    assert serving_settings("--output_topic", "from_flag")["OUTPUT_TOPIC"] == "from_flag"
    assert serving_settings("--ws_max_connections", "9")["WS_MAX_CONNECTIONS"] == 9


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_TOPIC", "")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    assert producer_args().input_topic == config.TICKS_TOPIC
    assert pipeline_options().bootstrap_servers == config.DEFAULT_BOOTSTRAP_SERVERS


def test_the_security_password_stays_out_of_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"), ("KAFKA_SASL_MECHANISM", "PLAIN"),
                        ("KAFKA_SASL_USERNAME", "market"), ("KAFKA_SASL_PASSWORD", "s3cret-value")):
        monkeypatch.setenv(name, value)
    assert producer_args().sasl_password is None
    assert "s3cret-value" not in str(pipeline_options().get_all_options())
    assert serving_app_settings()["KAFKA_SASL_PASSWORD"] == "s3cret-value"
    assert serving_settings()["KAFKA_SASL_PASSWORD"] == "s3cret-value"


# --- the one naming rule -----------------------------------------------------------

def test_every_setting_is_named_by_one_rule() -> None:
    from pipelines.options import SETTINGS as PIPELINE
    from producer import cli
    from serving import settings as serving
    every = (*cli.KAFKA, *cli.SOURCE, *cli.FAULTS, *PIPELINE, *serving.SETTINGS, *serving.SERVER)
    for s in every:
        assert s.env == ("KAFKA_" if s.kafka else "") + s.name.upper(), s.name
        assert not s.flag_only or s.name in ("host", "port"), s.name
        assert s.kafka == (s.name == "bootstrap_servers" or s.name in kafka_security.ENV), s.name
    by_name: dict[str, ms.Setting] = {}
    for s in every:
        # A name declared twice must be the same declaration: same default, type, meaning.
        assert by_name.setdefault(s.name, s) is s or by_name[s.name] == s, s.name
    assert ms.BOOTSTRAP_SERVERS.env == "KAFKA_BOOTSTRAP_SERVERS"   # DESIGN.md §9
    assert kafka_security.ENV == {"security_protocol": "KAFKA_SECURITY_PROTOCOL",
                                  "sasl_mechanism": "KAFKA_SASL_MECHANISM",
                                  "sasl_username": "KAFKA_SASL_USERNAME",
                                  "sasl_password": "KAFKA_SASL_PASSWORD",
                                  "ssl_ca_location": "KAFKA_SSL_CA_LOCATION"}


# --- bad values: a usage error naming the variable, not a traceback ---------------

# If a value got through, nothing real is reached: no broker listens on port 1.
NOWHERE = "--bootstrap_servers=localhost:1"


@pytest.mark.parametrize("module, argv, env, name", [
    ("producer", (NOWHERE, "--broker_timeout_s=1", "--count=1"), {"RATE": "abc"}, "RATE"),
    ("producer", (NOWHERE, "--broker_timeout_s=1", "--count=1"), {"LATE_RATE": "2"}, "LATE_RATE"),
    ("serving", (NOWHERE, "--port=0"), {"WS_MAX_CONNECTIONS": "x"}, "WS_MAX_CONNECTIONS"),
    ("serving", (NOWHERE, "--port=0"), {"CONSUME": "maybe"}, "CONSUME"),
    ("pipelines.market", (NOWHERE,), {"WINDOW_SIZE_S": "one minute"}, "WINDOW_SIZE_S"),
    ("pipelines.market", (NOWHERE,), {"START_OFFSET": "middle"}, "START_OFFSET"),
])
def test_a_bad_environment_value_is_a_usage_error_naming_it(module, argv, env, name) -> None:
    result = run(module, *argv, timeout=60, **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"error: .*environment variable {name}=", result.stderr), result.stderr


def test_create_app_names_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving import create_app
    monkeypatch.setenv("HISTORY_HOURS", "a day")
    with pytest.raises(ms.SettingError, match="HISTORY_HOURS='a day': not a number"):
        create_app({"CONSUME": False})


# --- --help names the variables ---------------------------------------------------

@pytest.mark.parametrize("module, names", [
    ("producer", ("KAFKA_BOOTSTRAP_SERVERS", "INPUT_TOPIC", "RATE", "LATE_RATE", "LOG_LEVEL",
                  "KAFKA_SASL_PASSWORD")),
    ("serving", ("KAFKA_BOOTSTRAP_SERVERS", "OUTPUT_TOPIC", "ALERTS_TOPIC", "WS_MAX_CONNECTIONS",
                 "KAFKA_SASL_PASSWORD")),
    ("pipelines.market", ("KAFKA_BOOTSTRAP_SERVERS", "INPUT_TOPIC", "OUTPUT_TOPIC", "ALERTS_TOPIC", "DLQ_TOPIC",
                          "WINDOW_SIZE_S", "KAFKA_SASL_PASSWORD")),
])
def test_help_shows_each_flags_variable(module, names) -> None:
    result = run(module, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name in names:
        assert f"[env {name}]" in text, name


def test_help_shows_the_value_the_environment_gives() -> None:
    text = " ".join(run("producer", "--help", INPUT_TOPIC="ticks_from_env").stdout.split())
    assert "(default: ticks_from_env) [env INPUT_TOPIC]" in text


# --- the docs' tables name what the code declares ---------------------------------

FLAG = re.compile(r"`--(\w+)`")
ENV = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*|[A-Z]{3,})`")


def doc_tables(name: str) -> list[list[str]]:
    """The table rows of docs/<name>, as lists of cells."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in (ROOT / "docs" / name).read_text().splitlines() if line.startswith("|")]


def documented(name: str) -> tuple[set[str], dict[str, str]]:
    """(every flag a table of docs/<name> names, flag -> variable where a row pairs them).

    A row pairs flags with variables when the cell next to its first cell of
    flags names as many variables, in the same order.
    """
    named: set[str] = set()
    paired: dict[str, str] = {}
    for cells in doc_tables(name):
        for cell in cells:
            named.update(FLAG.findall(cell))
        index = next((i for i, cell in enumerate(cells) if FLAG.search(cell)), None)
        if index is None:
            continue
        flags = FLAG.findall(cells[index])
        for neighbour in (index + 1, index - 1):
            envs = ENV.findall(cells[neighbour]) if 0 <= neighbour < len(cells) else []
            if len(envs) == len(flags):
                paired.update(zip(flags, envs))
                break
    return named, paired


def check_docs(doc: str, declared: tuple[ms.Setting, ...]) -> None:
    named, paired = documented(doc)
    by_name = {s.name: s for s in declared}
    unknown = set(paired) - set(by_name)
    assert not unknown, f"docs/{doc} gives variables for flags the code does not have: {sorted(unknown)}"
    for name, env in paired.items():
        assert env == by_name[name].env, f"docs/{doc}: --{name} reads {by_name[name].env}, not {env}"
    missing = set(by_name) - named
    assert not missing, f"docs/{doc} does not document {sorted(missing)}"
    assert len(paired) >= len(declared) // 2, f"docs/{doc}: most flags should have their variable in a table"


def test_producer_docs_match_the_code() -> None:
    from producer import cli
    check_docs("producer.md", (*cli.KAFKA, *cli.SOURCE, *cli.FAULTS, ms.LOG_LEVEL, *kafka_security.SETTINGS))


def test_serving_docs_match_the_code() -> None:
    from serving import settings
    check_docs("serving.md", (*settings.SETTINGS, *settings.SERVER))


def test_pipeline_docs_match_the_code() -> None:
    from pipelines.options import SETTINGS
    check_docs("pipeline.md", (*SETTINGS, *kafka_security.SETTINGS))


def test_the_development_server_listens_where_its_flags_say_never_on_a_shell_host_variable() -> None:
    from serving import settings
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOST", "build-box.example.com")   # tcsh exports the machine's name
        patch.setenv("PORT", "9")
        _, ns = settings.parse_args([])
        assert (ns.host, ns.port) == (config.SERVING_HOST, config.SERVING_PORT)
        _, ns = settings.parse_args(["--host=0.0.0.0", "--port=8123"])
        assert (ns.host, ns.port) == ("0.0.0.0", 8123)
