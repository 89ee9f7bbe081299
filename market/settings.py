"""Settings: each declared once, read from its flag, else its environment variable, else market/config.py.

One rule names everything: a setting `input_topic` is the flag `--input_topic`
and the environment variable `INPUT_TOPIC`; Kafka connection settings carry
`KAFKA_` (`--bootstrap_servers` / `KAFKA_BOOTSTRAP_SERVERS`, DESIGN.md §9,
§10). Serving's Flask config keys are the environment variable names.

A small helper rather than pydantic-settings or similar: the pipeline's
settings are Beam `PipelineOptions`, which are declared through argparse
(`_add_argparse_args(parser)`), so the same declarations must feed that hook,
the producer's and serving's argparse parsers, and serving's `create_app()`
under gunicorn, which has no flags and reads the environment alone.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from market import config

KAFKA_PREFIX = "KAFKA_"


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def boolean(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (true or false)")


# Plain words instead of Python's "invalid literal for int() with base 10".
_TYPE_WORDS: dict[Callable[[str], Any], str] = {int: "not an integer", float: "not a number"}


@dataclass(frozen=True)
class Setting:
    """One configurable value: name (= flag without dashes), default, help, type."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    kafka: bool = False
    """A Kafka connection setting: its environment variable carries KAFKA_."""
    deferred: bool = False
    """The environment is read when the client is built (kafka_security.from_args), never made a
    parser default, so a password from the environment shows neither in --help nor in the
    pipeline options shipped to the runner."""
    switch: bool = False
    """A flag without a value and without an environment variable (a one-off decision, e.g.
    --no_resume, that must not stick to every automatic restart)."""
    flag_only: bool = False
    """Read from its flag alone: for names a shell may export with another meaning (tcsh exports
    HOST, the machine's name, on which a development server must not open itself)."""

    @property
    def flag(self) -> str:
        """The command-line flag: `--name`."""
        return f"--{self.name}"

    @property
    def env(self) -> str:
        """The environment variable: the name in upper case, KAFKA_ first for a Kafka connection setting."""
        return (KAFKA_PREFIX if self.kafka else "") + self.name.upper()

    @property
    def key(self) -> str:
        """The Flask config key (serving): the environment variable's name."""
        return self.env

    def parse(self, text: str) -> Any:
        """`text` converted to the setting's type; ValueError with a plain reason if it cannot be."""
        try:
            value = self.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ValueError(_TYPE_WORDS.get(self.type) or str(exc) or "invalid value") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"not one of {', '.join(self.choices)}")
        return value

    def value(self, environ: Mapping[str, str] | None = None) -> Any:
        """The environment variable's value if set (empty counts as unset), else the default.

        Raises SettingError naming the variable if the value is invalid.
        """
        environ = os.environ if environ is None else environ
        raw = "" if self.switch or self.flag_only else environ.get(self.env, "")
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{self.env}={raw!r}: {exc}") from None


class _FromEnv(str):
    """A parser default that came from the environment: its conversion errors name the variable."""

    env: str


class _Converter:
    """argparse `type` of a setting: converts flag values and environment defaults alike.

    argparse converts a string default with `type` only when the flag is not
    given, so a bad environment variable fails exactly when it would be used,
    with argparse's usage error (exit status 2) instead of a traceback.
    """

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.__name__ = getattr(setting.type, "__name__", "value")

    def __call__(self, text: str) -> Any:
        try:
            return self.setting.parse(text)
        except ValueError as exc:
            if isinstance(text, _FromEnv):
                raise argparse.ArgumentTypeError(
                    f"environment variable {text.env}={str(text)!r}: {exc}") from None
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser | Any, settings: Iterable[Setting],
                  environ: Mapping[str, str] | None = None) -> None:
    """Add each setting's flag to an argparse parser, argument group or Beam's parser.

    The default is the environment variable's raw text if set (converted and
    checked by argparse, so flag > environment > market/config.py), else the
    setting's default; the help names both.
    """
    environ = os.environ if environ is None else environ
    for s in settings:
        text = s.help.replace("%", "%%")
        if s.switch:
            parser.add_argument(s.flag, action="store_true", default=False, help=text)
            continue
        default: Any = s.default
        raw = "" if s.deferred or s.flag_only else environ.get(s.env, "")
        if raw:
            default = _FromEnv(raw)
            default.env = s.env
        if s.default is not None:
            text += " (default: %(default)s)"
        if not s.flag_only:
            text += f" [env {s.env}]"
        parser.add_argument(s.flag, type=_Converter(s), default=default, choices=s.choices,
                            metavar=s.metavar, help=text)


def values(args: Any, settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parsed settings by name from an argparse namespace; deferred ones not given from the environment."""
    environ = os.environ if environ is None else environ
    return {s.name: (getattr(args, s.name, None) or s.value(environ)) if s.deferred else getattr(args, s.name)
            for s in settings}


def from_environ(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings by name from the environment alone (no flags: gunicorn); raises SettingError."""
    environ = os.environ if environ is None else environ
    return {s.name: s.value(environ) for s in settings}


# --- Shared by producer, pipeline and serving (DESIGN.md §9) -------------------
BOOTSTRAP_SERVERS = Setting("bootstrap_servers", config.DEFAULT_BOOTSTRAP_SERVERS, "Kafka bootstrap servers",
                            kafka=True)
INPUT_TOPIC = Setting("input_topic", config.TICKS_TOPIC,
                      "topic of raw ticks (the producer creates it with 3 partitions if missing)")
OUTPUT_TOPIC = Setting("output_topic", config.TRENDS_TOPIC, "topic of bars (the pipeline's output)")
ALERTS_TOPIC = Setting("alerts_topic", config.ALERTS_TOPIC, "topic of alerts")
DLQ_TOPIC = Setting("dlq_topic", config.DLQ_TOPIC, "topic of dead letters (rejected ticks)")
LOG_LEVEL = Setting("log_level", config.LOG_LEVEL, "logging level")
