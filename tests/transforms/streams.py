"""Helpers for the transforms tests: tick records, TestStream runs, captured outputs."""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue


def zero_clock() -> float:
    """Processing time 0, where a TestStream's clock starts (ComputeBars' `clock` in a TestStream run)."""
    return 0.0


# 2025-11-25T09:30:00Z, aligned to the minute.
T0 = 1764063000000
MINUTE = 60_000


def tick_json(symbol: str, price: float, ts: int, seq: int | None = None, volume: float = 100) -> bytes:
    data: dict[str, Any] = {"symbol": symbol, "price": price, "volume": volume, "timestamp": ts}
    if seq is not None:
        data["seq"] = seq
    return json.dumps(data).encode()


def record(symbol: str, price: float, ts: int, seq: int | None = None, volume: float = 100) -> TimestampedValue:
    """A raw tick record stamped with its event time, as the Kafka source gives it."""
    return TimestampedValue(tick_json(symbol, price, ts, seq, volume), ts / 1000)


def at(ms: int) -> float:
    """TestStream takes seconds."""
    return ms / 1000


def streaming_options() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


# Captured outputs by token: matchers are pickled with the pipeline, so they
# write into this module-level dict (the DirectRunner runs in this process).
_CAPTURED: dict[str, list] = {}


class _Capture:
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, actual: list) -> None:
        _CAPTURED.setdefault(self.token, []).extend(actual)


def run(stream: TestStream, build: Callable[[beam.PCollection], dict[str, beam.PCollection]]) -> dict[str, list]:
    """Run `build(input)` on the DirectRunner; return every element of each named output."""
    tokens: dict[str, str] = {}
    with beam.Pipeline(options=streaming_options()) as pipeline:
        outputs = build(pipeline | "Script" >> stream)
        for name, pcoll in outputs.items():
            tokens[name] = uuid.uuid4().hex
            assert_that(pcoll, _Capture(tokens[name]), label=f"Capture{name}")
    return {name: _CAPTURED.pop(token, []) for name, token in tokens.items()}
