"""DESIGN.md §10: one set of security settings, mapped to librdkafka and to the Java client."""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from market import kafka_security
from market.kafka_security import KafkaSecurity, KafkaSecurityError
from producer.cli import build_parser
from producer.publisher import ProducerConfig, admin_config, kafka_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = 'pa"ss\\word-7f3a'
SCRAM_ENV = {"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "scram-sha-512",
             "KAFKA_SASL_USERNAME": "market", "KAFKA_SASL_PASSWORD": SECRET}


def test_plaintext_by_default_adds_no_keys() -> None:
    security = kafka_security.from_env({})
    assert security.protocol == "PLAINTEXT"
    assert security.librdkafka() == {} and security.java() == {}


def test_scram_maps_to_librdkafka_and_java_keys() -> None:
    security = kafka_security.from_env(SCRAM_ENV)
    assert security.librdkafka() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                     "sasl.username": "market", "sasl.password": SECRET}
    java = security.java()
    assert java["security.protocol"] == "SASL_PLAINTEXT" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    # The password's quote and backslash are escaped for the JAAS parser.
    assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                        'username="market" password="pa\\"ss\\\\word-7f3a";')


def test_plain_over_tls_with_a_ca_bundle() -> None:
    security = KafkaSecurity("SASL_SSL", "PLAIN", "u", "p", "/etc/ca.pem")
    assert security.librdkafka() == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                     "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/etc/ca.pem"}
    assert security.java() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required '
                            'username="u" password="p";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": "/etc/ca.pem"}


def test_tls_only() -> None:
    security = KafkaSecurity("SSL", ssl_ca_location="/ca.pem")
    assert security.librdkafka() == {"security.protocol": "SSL", "ssl.ca.location": "/ca.pem"}
    assert security.java() == {"security.protocol": "SSL", "ssl.truststore.type": "PEM",
                               "ssl.truststore.location": "/ca.pem"}


@pytest.mark.parametrize("settings, message", [
    ({"security_protocol": "SASL"}, "unknown Kafka security protocol 'SASL'"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
     "unknown SASL mechanism 'GSSAPI'"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "needs KAFKA_SASL_PASSWORD"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "p"},
     "needs KAFKA_SASL_MECHANISM"),
    ({"sasl_username": "u", "sasl_password": "p"}, "the security protocol is PLAINTEXT"),
    ({"ssl_ca_location": "/ca.pem"}, "does not use TLS"),
])
def test_invalid_settings_are_a_clear_error(settings: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        kafka_security.from_mapping(settings)


def test_the_password_is_in_no_repr_or_description() -> None:
    security = kafka_security.from_env(SCRAM_ENV)
    assert SECRET not in repr(security) and "***" in repr(security)
    assert SECRET not in str(security) and SECRET not in security.describe()
    assert security.describe() == "SASL_PLAINTEXT SCRAM-SHA-512 as market"


def test_a_flag_wins_over_the_environment() -> None:
    parser = argparse.ArgumentParser()
    kafka_security.add_arguments(parser)
    args = parser.parse_args(["--sasl_username", "other"])
    security = kafka_security.from_args(args, SCRAM_ENV)
    assert security.username == "other" and security.password == SECRET


def test_producer_flags_reach_the_producer_and_its_admin_client() -> None:
    args = build_parser().parse_args(["--security_protocol", "SASL_SSL", "--sasl_mechanism", "SCRAM-SHA-256",
                                      "--sasl_username", "u", "--sasl_password", "p",
                                      "--ssl_ca_location", "/ca.pem"])
    cfg = ProducerConfig(security=kafka_security.from_args(args, {}))
    expected = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u",
                "sasl.password": "p", "ssl.ca.location": "/ca.pem"}
    assert expected.items() <= kafka_config(cfg).items()
    assert expected.items() <= admin_config(cfg).items()


def test_producer_help_never_shows_the_password() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **SCRAM_ENV}
    result = subprocess.run([sys.executable, "-m", "producer", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert "--sasl_password" in result.stdout and "KAFKA_SASL_PASSWORD" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_producer_rejects_an_unknown_mechanism_before_connecting(caplog: pytest.LogCaptureFixture) -> None:
    from producer.cli import EXIT_USAGE, main

    with caplog.at_level(logging.ERROR):
        status = main(["--bootstrap_servers", "localhost:1", "--security_protocol", "SASL_PLAINTEXT",
                       "--sasl_mechanism", "OAUTHBEARER", "--sasl_username", "u", "--sasl_password", "p",
                       "--count", "1"])
    assert status == EXIT_USAGE
    assert "unknown SASL mechanism 'OAUTHBEARER'" in caplog.text


def test_pipeline_flags_and_environment_reach_the_kafkaio_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import kafka_io
    from pipelines.options import MarketOptions

    for name, value in SCRAM_ENV.items():
        monkeypatch.setenv(name, value)
    options = PipelineOptions(["--sasl_username=pipeline"]).view_as(MarketOptions)
    # The password stays out of the options shipped to the runner.
    assert SECRET not in str(options.get_all_options())
    security = kafka_security.from_args(options)
    read = kafka_io.ReadTicksFromKafka("b:9094", "ticks", "group", security=security)
    write = kafka_io.WriteToTopic("b:9094", "bars", security=security)
    for conf in (read._consumer_config, write._producer_config):
        assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert 'username="pipeline"' in conf["sasl.jaas.config"]


def test_serving_settings_reach_its_consumers() -> None:
    from serving import settings
    from serving.feed import consumer_config

    values = settings.from_environ(SCRAM_ENV)
    security = kafka_security.from_mapping({name: values[env] for name, env in kafka_security.ENV.items()})
    conf = consumer_config("b:9094", security)
    assert conf["sasl.username"] == "market" and conf["sasl.password"] == SECRET
    assert conf["security.protocol"] == "SASL_PLAINTEXT"


def test_serving_help_never_shows_the_password() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **SCRAM_ENV}
    result = subprocess.run([sys.executable, "-m", "serving", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert "--sasl_password" in result.stdout and SECRET not in result.stdout + result.stderr
