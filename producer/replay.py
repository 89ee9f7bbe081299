"""CSV replay files: `symbol,timestamp,price,volume[,seq]` with a header row.

Timestamps are epoch milliseconds or ISO-8601 with an offset. A bad row is
logged with its line number and skipped; it never ends the replay.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from market import ticks

log = logging.getLogger(__name__)

CSV_COLUMNS = ("symbol", "timestamp", "price", "volume", "seq")
REQUIRED_COLUMNS = CSV_COLUMNS[:4]
SAMPLE_CSV = Path(__file__).parent / "data" / "sample_ticks.csv"
# Past this many, bad rows are counted but no longer logged one by one.
MAX_LOGGED_BAD_ROWS = 20


class BadRow(ValueError):
    """A CSV row that is not a valid tick."""


def parse_timestamp(text: str) -> int:
    """Epoch ms from `text`: an integer of ms, or ISO-8601 with an offset; years 2000–2100.

    The pipeline's own parser (market/ticks.py) after the CSV's digits become an integer.
    """
    try:
        return ticks.parse_timestamp(_timestamp_value(text))
    except ticks.TickError as exc:
        raise BadRow(exc.detail) from None


# ASCII only: str.isdigit() and int() also take "²", "١٢" or "1_000", which
# are no numbers a tick's JSON could carry (and int("²") raised mid-replay).
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


def _timestamp_value(text: str) -> int | str:
    """A CSV timestamp as the JSON value a tick would carry: digits are epoch ms."""
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else text


def _number(text: str, name: str) -> float | int:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise BadRow(f"{name} {text[:40]!r} is not a number")
    value: float | int = int(text) if _INTEGER.fullmatch(text) else float(text)
    if not math.isfinite(value):
        raise BadRow(f"{name} {text!r} is not finite")
    return value


def parse_row(row: dict[str, str | None]) -> dict[str, Any]:
    """One CSV row (by column name) as a tick; raises `BadRow` saying what is wrong."""
    for column in REQUIRED_COLUMNS:
        if not (row.get(column) or "").strip():
            raise BadRow(f"{column} is empty")
    price = _number(row["price"], "price")  # type: ignore[arg-type]
    volume = _number(row["volume"], "volume")  # type: ignore[arg-type]
    fields: dict[str, Any] = {"symbol": row["symbol"].strip(), "price": price,  # type: ignore[union-attr]
                              "volume": volume, "timestamp": _timestamp_value(row["timestamp"])}  # type: ignore[arg-type]
    seq_text = (row.get("seq") or "").strip()
    if seq_text:
        if not _DIGITS.fullmatch(seq_text):
            raise BadRow(f"seq {seq_text!r} is not a non-negative integer")
        fields["seq"] = int(seq_text)
    # The pipeline's validator (market/ticks.py): a row replayed is a tick the pipeline accepts.
    try:
        symbol, _, _, timestamp, _ = ticks.validate(fields)
    except ticks.TickError as exc:
        raise BadRow(exc.detail) from None
    return {**fields, "symbol": symbol, "price": float(price), "timestamp": timestamp}


class CsvTicks:
    """Iterate the valid ticks of a CSV replay file; `bad_rows` counts the skipped ones.

    Raises `ValueError` at once if the header lacks a required column.
    """

    def __init__(self, source: str | Path | TextIO) -> None:
        self.name = str(getattr(source, "name", source))
        self._source = source
        self.bad_rows = 0
        self.good_rows = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if isinstance(self._source, (str, Path)):
            with open(self._source, newline="", encoding="utf-8") as handle:
                yield from self._rows(handle)
        else:
            yield from self._rows(self._source)

    def _rows(self, handle: TextIO) -> Iterator[dict[str, Any]]:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or ()]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise ValueError(f"{self.name}: header {header} lacks {', '.join(missing)} "
                             f"(expected {','.join(CSV_COLUMNS)}, seq optional)")
        reader.fieldnames = header
        for row in reader:
            try:
                if None in row:
                    raise BadRow(f"{len(row[None]) + len(header)} fields, the header has {len(header)}")
                tick = parse_row(row)
            except BadRow as exc:
                self.bad_rows += 1
                if self.bad_rows <= MAX_LOGGED_BAD_ROWS:
                    log.warning("%s line %d skipped: %s", self.name, reader.line_num, exc)
                elif self.bad_rows == MAX_LOGGED_BAD_ROWS + 1:
                    log.warning("%s: more bad rows; counting them without logging", self.name)
                continue
            self.good_rows += 1
            yield tick


def write_csv(ticks: Iterable[dict[str, Any]], target: str | Path | TextIO) -> int:
    """Write ticks as a replay file (epoch-ms timestamps); returns the number of rows."""
    def write(handle: TextIO) -> int:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        for tick in ticks:
            writer.writerow([tick["symbol"], tick["timestamp"], tick["price"], tick["volume"], tick.get("seq", "")])
            rows += 1
        return rows

    if isinstance(target, (str, Path)):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            return write(handle)
    return write(target)
