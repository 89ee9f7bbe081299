"""DESIGN.md §10 against a broker that requires SASL: every client connects with credentials, none without.

A second local broker of the project's runner (runners/local/kafka.py) runs
on free ports in a temporary folder, with its SASL_PLAINTEXT listener and
the SCRAM-SHA-512 user the runner creates; the shared broker on 9092 is not
touched. The end-to-end test runs producer -> pipeline (embedded Flink) ->
serving through the SASL listener only.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from market import codec, kafka_security
from market.kafka_security import KafkaSecurity
from market.settings import BOOTSTRAP_SERVERS
from pipelines import preflight
from pipelines.options import MarketOptions
from runners.local import kafka, paths, process
from runners.ports import free_port
from tests.conftest import missing_prerequisite
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration]

ROOT = paths.PROJECT_ROOT
WRONG = KafkaSecurity(kafka_security.SASL_PLAINTEXT, kafka.SASL_MECHANISM, kafka.SASL_USER, "not-the-password")


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.Broker]:
    """A broker of our own whose SASL listener has the runner's SCRAM user; stopped after the module."""
    import shutil

    from runners.local import fetch

    if shutil.which("java") is None:
        missing_prerequisite("java is not on PATH")
    if not fetch.kafka_lib().exists():
        missing_prerequisite("Kafka jars are missing: run `python -m runners.local fetch`")
    broker = kafka.Broker(name="kafka-sasl-test", port=free_port(), controller_port=free_port(),
                          sasl_port=free_port(), home=tmp_path_factory.mktemp("kafka-sasl"), heap="-Xmx512m")
    kafka.stop(broker)  # a leftover of an interrupted run of this module
    try:
        kafka.start(timeout_s=120, broker=broker)
        yield broker
    finally:
        kafka.stop(broker)


def security_env(security: KafkaSecurity, bootstrap: str) -> dict[str, str]:
    """The environment a user sets for the parts: DESIGN.md §9 and §10 variables."""
    env = {k: v for k, v in os.environ.items() if k not in kafka_security.ENV.values()}
    env[BOOTSTRAP_SERVERS.env] = bootstrap
    values = {"security_protocol": security.protocol, "sasl_mechanism": security.mechanism,
              "sasl_username": security.username, "sasl_password": security.password}
    for name, value in values.items():
        if value:
            env[kafka_security.ENV[name]] = value
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_producer(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "producer", "--stats_interval_s", "0", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def count_records(bootstrap: str, security: KafkaSecurity, topic: str, expected: int, timeout_s: float = 30) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **security.librdkafka()})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    seen += 1
    finally:
        consumer.close()
    return seen


def test_producer_publishes_through_the_sasl_listener(sasl_broker: kafka.Broker) -> None:
    security = kafka.sasl_security(sasl_broker)
    env = security_env(security, sasl_broker.sasl_bootstrap)
    # The topic does not exist yet: the producer's admin client creates it, through SASL too.
    result = run_producer(env, "--input_topic", "sasl_ticks", "--count", "500", "--rate", "0")
    assert result.returncode == 0, result.stderr
    assert codec.loads(result.stdout.strip().splitlines()[-1])["delivered"] == 500
    assert "SASL_PLAINTEXT SCRAM-SHA-512 as market" in result.stderr
    assert security.password not in result.stdout + result.stderr
    assert count_records(sasl_broker.sasl_bootstrap, security, "sasl_ticks", 500) == 500


@pytest.mark.parametrize("security, says", [
    (KafkaSecurity(), "closes the connection of a PLAINTEXT client"),
    (WRONG, "Authentication failed"),
    (KafkaSecurity(kafka_security.SASL_PLAINTEXT, kafka_security.PLAIN, kafka.SASL_USER, "x"),
     "Unsupported SASL mechanism"),
], ids=["no credentials", "wrong password", "wrong mechanism"])
def test_producer_without_valid_credentials_is_refused_clearly(sasl_broker: kafka.Broker, security: KafkaSecurity,
                                                               says: str) -> None:
    started = time.monotonic()
    result = run_producer(security_env(security, sasl_broker.sasl_bootstrap), "--input_topic", "sasl_refused",
                          "--count", "10", "--broker_timeout_s", "5")
    assert result.returncode == 3, result.stderr
    assert says in result.stderr
    assert time.monotonic() - started < 30
    assert "not-the-password" not in result.stderr


@pytest.mark.parametrize("security, says", [
    (KafkaSecurity(), "closes the connection of a PLAINTEXT client"),
    (WRONG, "Authentication failed"),
], ids=["no credentials", "wrong password"])
def test_pipeline_start_up_check_refuses_without_valid_credentials(sasl_broker: kafka.Broker,
                                                                   security: KafkaSecurity, says: str) -> None:
    options = MarketOptions([f"--bootstrap_servers={sasl_broker.sasl_bootstrap}"])
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("security_protocol", security.protocol), ("sasl_mechanism", security.mechanism),
                            ("sasl_username", security.username), ("sasl_password", security.password)):
            env.delenv(kafka_security.ENV[name], raising=False)
            if value and security.sasl:
                env.setenv(kafka_security.ENV[name], value)
        with pytest.raises(preflight.PreflightError, match=says) as refused:
            preflight.check_kafka(options, timeout_s=5)
    assert "not-the-password" not in str(refused.value)


def test_pipeline_start_up_check_passes_with_credentials(sasl_broker: kafka.Broker) -> None:
    security = kafka.sasl_security(sasl_broker)
    options = MarketOptions([f"--bootstrap_servers={sasl_broker.sasl_bootstrap}", "--security_protocol=SASL_PLAINTEXT",
                             f"--sasl_mechanism={security.mechanism}", f"--sasl_username={security.username}",
                             f"--sasl_password={security.password}"])
    preflight.check_kafka(options, timeout_s=10)   # the topics exist: the runner created them through SASL


class Serving:
    """`python -m serving` as a user runs it, on a free port, with the environment given."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(self.port)], cwd=ROOT,
                                         env=env, stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, codec.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, codec.loads(exc.read())

    def wait(self, path: str, until, timeout_s: float) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout_s
        last: tuple[int, dict] = (0, {})
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                last = self.get(path)
                if until(*last):
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{path} never matched within {timeout_s:.0f} s; last answer {last}\n"
                             f"{process.tail(self.log_path)}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_serving_with_wrong_credentials_is_not_ready_and_says_why(sasl_broker: kafka.Broker, tmp_path: Path) -> None:
    serving = Serving(security_env(WRONG, sasl_broker.sasl_bootstrap), tmp_path / "serving.log")
    try:
        status, body = serving.wait("/readyz", lambda code, body: "uthentication" in body.get("detail", ""), 30)
        assert status == 503
    finally:
        serving.stop()
    assert "not-the-password" not in serving.log_path.read_text()


@pytest.mark.e2e
@pytest.mark.flink
def test_ticks_reach_serving_through_sasl_only(sasl_broker: kafka.Broker, flink_jars: None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Producer -> pipeline on embedded Flink -> serving, every client on the SASL listener."""
    security = kafka.sasl_security(sasl_broker)
    bootstrap = sasl_broker.sasl_bootstrap
    env = security_env(security, bootstrap)
    serving = Serving(env, tmp_path / "serving.log")
    # The pipeline reads the password from the environment (the documented
    # way) and the rest from its flags.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("security_protocol", "sasl_mechanism", "sasl_username"):
        monkeypatch.delenv(kafka_security.ENV[name])
    pipeline = PipelineProcess([
        f"--bootstrap_servers={bootstrap}", "--security_protocol=SASL_PLAINTEXT",
        f"--sasl_mechanism={security.mechanism}", f"--sasl_username={security.username}",
        "--window_size_s=5", "--allowed_lateness_s=5", "--early_firing_s=1", "--parallelism=1", "--no_resume",
        "--consumer_group=sasl-e2e", f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"],
        tmp_path / "pipeline.log")
    producer = None
    try:
        serving.wait("/readyz", lambda code, body: code == 200, 60)
        pipeline.start()
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer", "--symbols", "AAPL,MSFT,NVDA", "--rate", "30", "--duration_s", "400",
             "--stats_interval_s", "0"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "producer.log", "wb"))
        def bars() -> list:
            pipeline.assert_running()
            assert producer.poll() is None, (tmp_path / "producer.log").read_text()
            _, body = serving.get("/api/v1/trends/latest")
            return [bar for bar in body.get("trends", []) if bar["symbol"] in ("AAPL", "MSFT", "NVDA")]

        wait_for(bars, 360, lambda: (f"a bar reaching serving through SASL; /readyz: {serving.get('/readyz')}\n"
                                     f"{pipeline.tail()}\n{process.tail(serving.log_path)}"), poll_s=2)
    finally:
        if producer is not None:
            producer.terminate()
            producer.wait(timeout=60)
        pipeline.stop()
        serving.stop()
    for log in (tmp_path / "pipeline.log", serving.log_path, tmp_path / "producer.log"):
        assert security.password not in log.read_text(errors="replace"), f"the password is in {log.name}"
