"""Kafka connection security (DESIGN.md §10): one set of settings, mapped for every client.

The producer, serving's consumers, every admin client (librdkafka, through
confluent-kafka) and the pipeline's KafkaIO read and writes (the Java client)
take their security from the same five settings, given as flags or
environment variables:

    KAFKA_SECURITY_PROTOCOL  --security_protocol  PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    KAFKA_SASL_MECHANISM     --sasl_mechanism     PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    KAFKA_SASL_USERNAME      --sasl_username
    KAFKA_SASL_PASSWORD      --sasl_password      never logged, never shown as a default
    KAFKA_SSL_CA_LOCATION    --ssl_ca_location    CA bundle (PEM) that verifies the brokers

A flag given on the command line wins over the environment. The password is
kept out of `repr`, `describe()` and `--help`; prefer the environment
variable to the flag, which other users of the machine can read in `ps`.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from market.settings import Setting, add_arguments as _add_settings

PLAINTEXT = "PLAINTEXT"
SSL = "SSL"
SASL_PLAINTEXT = "SASL_PLAINTEXT"
SASL_SSL = "SASL_SSL"
PROTOCOLS: tuple[str, ...] = (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)

PLAIN = "PLAIN"
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_512 = "SCRAM-SHA-512"
MECHANISMS: tuple[str, ...] = (PLAIN, SCRAM_SHA_256, SCRAM_SHA_512)

# The Java client's login module per SASL mechanism (sasl.jaas.config).
_LOGIN_MODULES = {
    PLAIN: "org.apache.kafka.common.security.plain.PlainLoginModule",
    SCRAM_SHA_256: "org.apache.kafka.common.security.scram.ScramLoginModule",
    SCRAM_SHA_512: "org.apache.kafka.common.security.scram.ScramLoginModule",
}

MASK = "***"

# Deferred: no defaults from the environment in a parser. `from_args` reads
# the environment when the client is built, so the password from
# KAFKA_SASL_PASSWORD never appears in `--help` or in options that are
# serialised and shipped to workers.
SETTINGS: tuple[Setting, ...] = (
    Setting("security_protocol", None, f"Kafka security protocol: {', '.join(PROTOCOLS)} (default PLAINTEXT)",
            type=str.upper, metavar="PROTOCOL", kafka=True, deferred=True),
    Setting("sasl_mechanism", None, f"SASL mechanism: {', '.join(MECHANISMS)}", type=str.upper,
            metavar="MECHANISM", kafka=True, deferred=True),
    Setting("sasl_username", None, "SASL user name", metavar="USER", kafka=True, deferred=True),
    Setting("sasl_password", None, "SASL password; prefer the environment variable, flags are visible in ps",
            metavar="PASSWORD", kafka=True, deferred=True),
    Setting("ssl_ca_location", None, "CA bundle (PEM) that verifies the brokers' certificates",
            metavar="PEM_FILE", kafka=True, deferred=True),
)

# setting name (also the flag without dashes) -> environment variable
ENV: dict[str, str] = {s.name: s.env for s in SETTINGS}


class KafkaSecurityError(ValueError):
    """The security settings are inconsistent or name an unknown protocol or mechanism."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How a client authenticates to the brokers and verifies them; validated on construction."""

    protocol: str = PLAINTEXT
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None

    def __post_init__(self) -> None:
        # Upper case and empty-as-unset, so KAFKA_SASL_MECHANISM=scram-sha-512 works.
        protocol = (self.protocol or PLAINTEXT).strip().upper()
        mechanism = (self.mechanism or "").strip().upper() or None
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "mechanism", mechanism)
        object.__setattr__(self, "username", self.username or None)
        object.__setattr__(self, "password", self.password or None)
        object.__setattr__(self, "ssl_ca_location", self.ssl_ca_location or None)
        if protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"unknown Kafka security protocol {protocol!r} ({ENV['security_protocol']} / "
                f"--security_protocol); expected one of {', '.join(PROTOCOLS)}")
        if mechanism is not None and mechanism not in MECHANISMS:
            raise KafkaSecurityError(
                f"unknown SASL mechanism {mechanism!r} ({ENV['sasl_mechanism']} / --sasl_mechanism); "
                f"expected one of {', '.join(MECHANISMS)}")
        if self.sasl:
            missing = [f"{ENV[name]} / --{name}" for name, value in
                       (("sasl_mechanism", mechanism), ("sasl_username", self.username),
                        ("sasl_password", self.password)) if not value]
            if missing:
                raise KafkaSecurityError(f"security protocol {protocol} needs {'; '.join(missing)}")
        elif mechanism or self.username or self.password:
            # Credentials with a protocol that sends none would connect without
            # them and fail later with a less helpful message.
            raise KafkaSecurityError(
                f"SASL settings are given but the security protocol is {protocol}; set "
                f"{ENV['security_protocol']} (--security_protocol) to SASL_PLAINTEXT or SASL_SSL")
        if self.ssl_ca_location and not self.ssl:
            raise KafkaSecurityError(
                f"a CA location is given but the security protocol is {protocol}, which does not use "
                f"TLS; set {ENV['security_protocol']} (--security_protocol) to SSL or SASL_SSL")

    def __repr__(self) -> str:
        return (f"KafkaSecurity(protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
                f"username={self.username!r}, password={MASK if self.password else None!r}, "
                f"ssl_ca_location={self.ssl_ca_location!r})")

    @property
    def sasl(self) -> bool:
        """True if the client authenticates with SASL."""
        return self.protocol in (SASL_PLAINTEXT, SASL_SSL)

    @property
    def ssl(self) -> bool:
        """True if the connection is encrypted with TLS."""
        return self.protocol in (SSL, SASL_SSL)

    def describe(self) -> str:
        """A log-safe one-liner: protocol, mechanism and user, never the password."""
        if not self.sasl:
            return self.protocol
        return f"{self.protocol} {self.mechanism} as {self.username}"

    def librdkafka(self) -> dict[str, str]:
        """The librdkafka keys (confluent-kafka Producer, Consumer, AdminClient); empty for PLAINTEXT."""
        if self.protocol == PLAINTEXT:
            return {}
        conf = {"security.protocol": self.protocol}
        if self.sasl:
            conf.update({"sasl.mechanism": self.mechanism or "", "sasl.username": self.username or "",
                         "sasl.password": self.password or ""})
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def java(self) -> dict[str, str]:
        """The Java client's keys (KafkaIO consumer_config / producer_config); empty for PLAINTEXT."""
        if self.protocol == PLAINTEXT:
            return {}
        conf = {"security.protocol": self.protocol}
        if self.sasl:
            module = _LOGIN_MODULES[self.mechanism or ""]
            conf["sasl.mechanism"] = self.mechanism or ""
            conf["sasl.jaas.config"] = (f'{module} required username="{_jaas_quote(self.username or "")}" '
                                        f'password="{_jaas_quote(self.password or "")}";')
        if self.ssl_ca_location:
            conf["ssl.truststore.type"] = "PEM"
            conf["ssl.truststore.location"] = self.ssl_ca_location
        return conf


def _jaas_quote(text: str) -> str:
    """Escape a value for a double-quoted JAAS option (Kafka parses it with StreamTokenizer)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def from_mapping(values: Mapping[str, Any]) -> KafkaSecurity:
    """Settings from a mapping keyed by setting name (`security_protocol`, ...); missing ones unset."""
    return KafkaSecurity(protocol=values.get("security_protocol") or PLAINTEXT,
                         mechanism=values.get("sasl_mechanism"), username=values.get("sasl_username"),
                         password=values.get("sasl_password"), ssl_ca_location=values.get("ssl_ca_location"))


def from_env(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """Settings from the KAFKA_* environment variables; raises KafkaSecurityError if invalid."""
    environ = os.environ if environ is None else environ
    return from_mapping({name: environ.get(env) or None for name, env in ENV.items()})


def from_args(args: Any, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """Settings from parsed flags (argparse namespace or Beam options), each unset one from the environment.

    The flags are added by `add_arguments` with no default, so a value shown
    by `--help` or stored in the pipeline options is only ever one that was
    typed; the environment is read here, at the moment the client is built.
    """
    environ = os.environ if environ is None else environ
    values = {}
    for name, env in ENV.items():
        given = getattr(args, name, None)
        values[name] = given if given else environ.get(env) or None
    return from_mapping(values)


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add the five flags of DESIGN.md §10 to an argparse parser or argument group.

    Defaults stay None: `from_args` fills them from the environment.
    """
    _add_settings(parser, SETTINGS)


# Words of librdkafka's error texts when a client speaks another protocol than
# the listener (a SASL handshake at a plain listener, a TLS handshake at a
# plain one); a refused login has its own error code.
_MISMATCH_HINTS = ("security.protocol", "SSL handshake", "SASL", "Authentication")


def refusal(errors: Iterable[Any], bootstrap_servers: str, security: KafkaSecurity) -> str | None:
    """Why the brokers refused a client, or None when the errors look like an absent broker.

    `errors` are the confluent-kafka `KafkaError`s the client's error callback
    received. A refused login or mechanism says so there. A PLAINTEXT client
    at a listener that wants SASL or TLS is only cut off ("brokers are
    down"); it is told apart from a broker that is not there by opening a
    TCP connection to the first bootstrap address.
    """
    from confluent_kafka import KafkaError

    for err in reversed(list(errors)):
        text = err.str()
        if err.code() == KafkaError._AUTHENTICATION or any(hint in text for hint in _MISMATCH_HINTS):
            return text
    if security.protocol == PLAINTEXT and _accepts_tcp(bootstrap_servers):
        return (f"a broker listens at {bootstrap_servers} but closes the connection of a PLAINTEXT client; "
                f"the listener probably requires SASL or TLS")
    return None


def _accepts_tcp(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
    import socket

    first = bootstrap_servers.split(",")[0].strip()
    first = first.split("://")[-1]
    host, _, port = first.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False
