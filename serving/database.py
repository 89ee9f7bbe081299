"""The bars of record, alerts and dead letters in a database: SQLite (a file, WAL mode) or PostgreSQL (psycopg 3).

`BarDatabase` is the one interface; `open_database(url)` picks the engine
(DESIGN.md §7: `sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB`). Both
engines run the same SQL (`?` placeholders, `INSERT ... ON CONFLICT`, window
functions); only DDL types and connection set-up differ.

Writes: `write(bars, alerts, offsets, dead_letters)` applies one batch in one
transaction: final bars (a version replaces a stored one only if it is newer
by DESIGN.md §4: pane_index, then is_final, then tick_count), alerts (first
id wins), the newest window per symbol, dead letters (one row per record of
the dead-letter topic, identified by its topic, partition and offset), and
the Kafka positions the batch reaches (never moved back). A crash leaves either all of a batch or none of
it; a replay, a restart or a second process writing the same records
changes nothing. Rows are written in key order so two processes on one
PostgreSQL take their row locks in the same order (no deadlock).
"""
from __future__ import annotations

import logging
import math
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from market import codec
from market.schema import BAR_FIELDS

log = logging.getLogger(__name__)

Bar = dict[str, Any]
Alert = dict[str, Any]
Offsets = dict[tuple[str, int], int]

SCHEMA_VERSION = 1
PANE_ROLLUP = "ROLLUP"
CROSS_WINDOW_FIELDS = ("log_return", "return_zscore", "volume_ratio", "sma_fast", "sma_slow", "trend")

# Every bar field is a column (compact: ~200 bytes a row, where its JSON is
# ~650), plus `extra`: the JSON of fields beyond the contract, if any.
_REAL = ("open", "high", "low", "close", "average_price", "vwap", "volume", "change_pct", "swing_pct")
_REAL_NULL = ("log_return", "return_zscore", "volume_ratio", "sma_fast", "sma_slow")
_BOOL = ("is_volatility_anomaly", "is_final")
BAR_COLUMNS = (*BAR_FIELDS, "extra")
_BAR_FIELD_SET = frozenset(BAR_FIELDS)


class DeadLetterRow(NamedTuple):
    """One record of the dead-letter topic as stored: where it was read, what it is about, its JSON."""

    topic: str
    partition: int
    offset: int
    rejected_at: int
    reason: str
    symbol: str | None      # serving.records.dead_letter_symbol
    key: str | None         # the rejected record's original key, as text
    body: str               # the dead letter's JSON as the pipeline wrote it (checked by serving.records)


class SchemaMismatch(RuntimeError):
    """The database was made by an incompatible version of serving."""


def default_sqlite_path() -> Path:
    """The project's data folder: $MARKET_CACHE_DIR or .cache, then data/serving/market.db."""
    root = Path(os.environ.get("MARKET_CACHE_DIR", Path(__file__).resolve().parents[1] / ".cache"))
    return root / "data" / "serving" / "market.db"


def _ddl(real: str, bigint: str, boolean: str) -> list[str]:
    types = {f: real for f in _REAL + _REAL_NULL}
    types.update({f: boolean for f in _BOOL})
    types.update({"symbol": "TEXT", "window_start": bigint, "window_end": bigint, "tick_count": bigint,
                  "pane": "TEXT", "pane_index": "INTEGER", "trend": "TEXT", "anomalies": "TEXT",
                  "last_tick_ms": bigint, "emitted_at": bigint, "extra": "TEXT"})
    nullable = set(_REAL_NULL) | {"last_tick_ms", "emitted_at", "extra"}
    cols = ", ".join(f"{c} {types[c]}{'' if c in nullable else ' NOT NULL'}" for c in BAR_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS serving_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS bars ({cols}, PRIMARY KEY (symbol, window_start))",
        "CREATE TABLE IF NOT EXISTS symbols (symbol TEXT PRIMARY KEY, last_start "
        f"{bigint} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS alerts (alert_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, type TEXT NOT NULL, "
        f"detected_at {bigint} NOT NULL, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (detected_at)",
        "CREATE INDEX IF NOT EXISTS alerts_by_symbol ON alerts (symbol, detected_at)",
        f"CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset {bigint} "
        "NOT NULL, PRIMARY KEY (topic, part))",
        # Added to schema 1 as a new table: a store made before it gets it on start, nothing else changes.
        f"CREATE TABLE IF NOT EXISTS dead_letters (topic TEXT NOT NULL, part INTEGER NOT NULL, "
        f"kafka_offset {bigint} NOT NULL, rejected_at {bigint} NOT NULL, reason TEXT NOT NULL, symbol TEXT, "
        "record_key TEXT, body TEXT NOT NULL, PRIMARY KEY (topic, part, kafka_offset))",
        # Covering the summary's counts (and the newest-first list): an index scan, no row of text read.
        "CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (rejected_at, reason, symbol)",
        "CREATE INDEX IF NOT EXISTS dead_letters_by_reason ON dead_letters (reason, rejected_at)",
        "CREATE INDEX IF NOT EXISTS dead_letters_by_symbol ON dead_letters (symbol, rejected_at)",
    ]


_PLACEHOLDERS = ", ".join("?" for _ in BAR_COLUMNS)
_NEWER = ("excluded.pane_index > bars.pane_index OR (excluded.pane_index = bars.pane_index AND "
          "(excluded.is_final > bars.is_final OR (excluded.is_final = bars.is_final AND "
          "excluded.tick_count > bars.tick_count)))")
UPSERT_BAR = (f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) VALUES ({_PLACEHOLDERS}) "
              f"ON CONFLICT (symbol, window_start) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in BAR_COLUMNS if c not in ("symbol", "window_start"))
              + f" WHERE {_NEWER}")
INSERT_ALERT = ("INSERT INTO alerts (alert_id, symbol, type, detected_at, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id) DO NOTHING")
UPSERT_SYMBOL = ("INSERT INTO symbols (symbol, last_start) VALUES (?, ?) ON CONFLICT (symbol) DO UPDATE "
                 "SET last_start = excluded.last_start WHERE excluded.last_start > symbols.last_start")
UPSERT_OFFSET = ("INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, ?) ON CONFLICT (topic, part) "
                 "DO UPDATE SET next_offset = excluded.next_offset WHERE excluded.next_offset > offsets.next_offset")
INSERT_DEAD_LETTER = ("INSERT INTO dead_letters (topic, part, kafka_offset, rejected_at, reason, symbol, record_key, "
                      "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (topic, part, kafka_offset) DO NOTHING")
TOP_SYMBOLS = 50    # of the dead-letter summary (DESIGN.md §7)
_SELECT_BARS = f"SELECT {', '.join(BAR_COLUMNS)} FROM bars"

# One row per interval of `?` ms: the first window's open and the last's close
# by window functions, the rest by aggregates; averages are finished in Python.
ROLLUP = """
WITH w AS (
  SELECT (window_start / ?) * ? AS bucket, window_start, high, low, volume, tick_count, vwap, average_price,
         is_volatility_anomaly, last_tick_ms, emitted_at,
         first_value(open) OVER (PARTITION BY (window_start / ?) ORDER BY window_start
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS first_open,
         last_value(close) OVER (PARTITION BY (window_start / ?) ORDER BY window_start
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_close
  FROM bars WHERE symbol = ? AND window_start >= ? AND window_start < ?
)
SELECT bucket, min(first_open), min(last_close), max(high), min(low), sum(volume), sum(tick_count),
       sum(vwap * volume), sum(average_price * tick_count),
       max(CASE WHEN is_volatility_anomaly THEN 1 ELSE 0 END), max(last_tick_ms),
       max(emitted_at), min(window_start), max(window_start)
FROM w GROUP BY bucket ORDER BY bucket DESC LIMIT ?
"""


_ANOMALIES = BAR_FIELDS.index("anomalies")


def bar_row(bar: Bar) -> list[Any]:
    """The `bars` row of a checked bar (on the ingest path: kept cheap)."""
    row = [bar[f] for f in BAR_FIELDS]
    anomalies = row[_ANOMALIES]
    row[_ANOMALIES] = codec.dumps(anomalies).decode() if anomalies else "[]"
    if len(bar) == len(BAR_FIELDS):
        row.append(None)
    else:
        row.append(codec.dumps({k: v for k, v in bar.items() if k not in _BAR_FIELD_SET}).decode())
    return row


_EMPTY: list[str] = []


def row_bar(row: Sequence[Any]) -> Bar:
    """The bar a `bars` row holds (as the pipeline wrote it)."""
    bar = dict(zip(BAR_FIELDS, row))
    anomalies = bar["anomalies"]
    bar["anomalies"] = [] if anomalies == "[]" else codec.loads(anomalies)
    bar["is_final"] = bool(bar["is_final"])
    bar["is_volatility_anomaly"] = bool(bar["is_volatility_anomaly"])
    extra = row[-1]
    if extra:
        bar.update(codec.loads(extra))
    return bar


class Rollup:
    """Sums of consecutive windows of one interval; `bar()` finishes DESIGN.md §7's formulas."""

    __slots__ = ("symbol", "start", "end", "open", "close", "high", "low", "volume", "ticks", "pv", "pt",
                 "anomaly", "last_tick_ms", "emitted_at", "first", "last", "final")

    def __init__(self, symbol: str, start: int, end: int) -> None:
        self.symbol, self.start, self.end = symbol, start, end
        self.open = self.close = self.high = self.low = math.nan
        self.volume = self.pv = self.pt = 0.0
        self.ticks = 0
        self.anomaly = False
        self.last_tick_ms: int | None = None
        self.emitted_at: int | None = None
        self.first = self.last = -1
        self.final = True

    @classmethod
    def from_row(cls, symbol: str, interval_ms: int, row: Sequence[Any]) -> Rollup:
        r = cls(symbol, row[0], row[0] + interval_ms)
        # PostgreSQL sums a BIGINT as NUMERIC (a Decimal): plain numbers here.
        r.open, r.close, r.high, r.low, r.volume, r.pv, r.pt = (float(v) for v in (*row[1:6], *row[7:9]))
        r.ticks = int(row[6])
        r.anomaly, r.last_tick_ms, r.emitted_at, r.first, r.last = bool(row[9]), row[10], row[11], row[12], row[13]
        return r

    def add(self, bar: Bar) -> None:
        """Fold one window in (the open window's latest version, from memory)."""
        start = bar["window_start"]
        if self.first < 0 or start < self.first:
            self.first, self.open = start, bar["open"]
        if start > self.last:
            self.last, self.close = start, bar["close"]
        self.high = bar["high"] if math.isnan(self.high) else max(self.high, bar["high"])
        self.low = bar["low"] if math.isnan(self.low) else min(self.low, bar["low"])
        self.volume += bar["volume"]
        self.ticks += bar["tick_count"]
        self.pv += bar["vwap"] * bar["volume"]
        self.pt += bar["average_price"] * bar["tick_count"]
        self.anomaly = self.anomaly or bool(bar["is_volatility_anomaly"])
        for name in ("last_tick_ms", "emitted_at"):
            value = bar.get(name)
            if value is not None and (getattr(self, name) is None or value > getattr(self, name)):
                setattr(self, name, value)
        self.final = self.final and bool(bar["is_final"])

    def bar(self) -> Bar:
        """The rolled-up bar: same fields as a bar, `pane` ROLLUP, cross-window fields null."""
        average = self.pt / self.ticks if self.ticks else self.close
        vwap = self.pv / self.volume if self.volume else average
        return {
            "symbol": self.symbol, "window_start": self.start, "window_end": self.end,
            "open": self.open, "high": self.high, "low": self.low, "close": self.close,
            "average_price": average, "vwap": vwap, "volume": self.volume, "tick_count": self.ticks,
            "change_pct": (self.close - self.open) / self.open * 100, "swing_pct": (self.high - self.low) / self.low * 100,
            "is_volatility_anomaly": self.anomaly, "pane": PANE_ROLLUP, "pane_index": 0, "is_final": self.final,
            **{f: None for f in CROSS_WINDOW_FIELDS}, "anomalies": [],
            "last_tick_ms": self.last_tick_ms, "emitted_at": self.emitted_at,
        }


class BarDatabase:
    """The store's interface, over one DB-API connection per thread (SQLite) or a shared one (PostgreSQL)."""

    engine = "?"

    MAX_READERS = 8     # connections shared by the request threads (gunicorn may run a thousand)

    def __init__(self) -> None:
        self._lock = threading.Lock()   # one writer at a time in this process
        self._writer: Any = None
        self._readers: queue.LifoQueue[Any] = queue.LifoQueue()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()

    # --- engine specifics ------------------------------------------------------
    def _connect(self, writer: bool) -> Any:
        raise NotImplementedError

    def _conn(self) -> Any:
        """The writer connection (use under `_lock`)."""
        if self._writer is None:
            self._writer = self._open(writer=True)
        return self._writer

    def _open(self, writer: bool) -> Any:
        conn = self._connect(writer)
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    def _borrow(self) -> Any:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._opened_lock:
            room = len(self._opened) < self.MAX_READERS + 1
        return self._open(writer=False) if room else self._readers.get(timeout=60)

    def close(self) -> None:
        with self._opened_lock:
            for conn in self._opened:
                try:
                    conn.close()
                except Exception:
                    pass
            self._opened.clear()
        self._writer = None

    def _sql(self, sql: str) -> str:
        return sql

    def _ddl(self) -> list[str]:
        raise NotImplementedError

    def _schema_lock(self) -> list[str]:
        """Statements that make concurrent schema set-ups of one store wait for each other."""
        return []

    def describe(self) -> str:
        raise NotImplementedError

    # --- set-up ------------------------------------------------------------------
    def init_schema(self) -> None:
        """Create the tables if absent; raise SchemaMismatch for a store of another schema version."""
        conn = self._conn()
        with self._lock, self._transaction(conn) as cur:
            for statement in self._schema_lock() + self._ddl():
                cur.execute(statement)
            cur.execute(self._sql("SELECT value FROM serving_meta WHERE key = ?"), ("schema_version",))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql("INSERT INTO serving_meta (key, value) VALUES (?, ?)"),
                            ("schema_version", str(SCHEMA_VERSION)))
            elif row[0] != str(SCHEMA_VERSION):
                raise SchemaMismatch(
                    f"{self.describe()} holds serving schema version {row[0]}, this serving needs "
                    f"{SCHEMA_VERSION}: point DATABASE_URL at a new database (or delete this one: it is rebuilt "
                    f"from --history_hours of the topics)")

    def _transaction(self, conn: Any) -> Any:
        raise NotImplementedError

    # --- writes ----------------------------------------------------------------
    def write(self, bars: Iterable[Bar], alerts: Iterable[Alert], offsets: Offsets,
              dead_letters: Iterable[DeadLetterRow] = ()) -> None:
        """One batch in one transaction: final bars, alerts, newest window per symbol, dead letters,
        Kafka positions."""
        bars = sorted(bars, key=lambda b: (b["symbol"], b["window_start"]))
        alerts = sorted(alerts, key=lambda a: a["alert_id"])
        letters = sorted(dead_letters, key=lambda d: (d.topic, d.partition, d.offset))
        newest: dict[str, int] = {}
        for b in bars:
            newest[b["symbol"]] = max(b["window_start"], newest.get(b["symbol"], b["window_start"]))
        conn = self._conn()
        with self._lock:
            for attempt in range(5):
                try:
                    with self._transaction(conn) as cur:
                        if bars:
                            cur.executemany(self._sql(UPSERT_BAR), [bar_row(b) for b in bars])
                        if alerts:
                            cur.executemany(self._sql(INSERT_ALERT), [
                                (a["alert_id"], a["symbol"].upper(), a["type"], a["detected_at"],
                                 codec.dumps(a).decode()) for a in alerts])
                        if newest:
                            cur.executemany(self._sql(UPSERT_SYMBOL), sorted(newest.items()))
                        if letters:
                            cur.executemany(self._sql(INSERT_DEAD_LETTER), letters)
                        if offsets:
                            cur.executemany(self._sql(UPSERT_OFFSET),
                                            [(t, p, o) for (t, p), o in sorted(offsets.items())])
                    return
                except Exception as exc:
                    if attempt == 4 or not self._retryable(exc):
                        raise
                    log.info("retrying a write batch after %s", exc)

    def _retryable(self, exc: Exception) -> bool:
        return False

    def prune(self, before_ms: int, symbols_per_transaction: int = 500) -> int:
        """Delete bars with window_start < before_ms and alerts and dead letters from before it, a few symbols at a time
        (through the primary key, so no index on time alone is needed); the number of bars deleted."""
        conn = self._conn()
        with self._lock, self._transaction(conn) as cur:
            cur.execute("SELECT symbol FROM symbols ORDER BY symbol")
            symbols = [r[0] for r in cur.fetchall()]
        deleted = 0
        for i in range(0, len(symbols), symbols_per_transaction):
            with self._lock, self._transaction(conn) as cur:
                for symbol in symbols[i:i + symbols_per_transaction]:
                    cur.execute(self._sql("DELETE FROM bars WHERE symbol = ? AND window_start < ?"), (symbol, before_ms))
                    deleted += max(0, cur.rowcount)
                cur.execute(self._sql("DELETE FROM symbols WHERE last_start < ?"), (before_ms,))
        with self._lock, self._transaction(conn) as cur:
            cur.execute(self._sql("DELETE FROM alerts WHERE detected_at < ?"), (before_ms,))
        with self._lock, self._transaction(conn) as cur:
            cur.execute(self._sql("DELETE FROM dead_letters WHERE rejected_at < ?"), (before_ms,))
        return deleted

    # --- reads -------------------------------------------------------------------
    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        conn = self._borrow()
        try:
            with self._read(conn) as cur:
                cur.execute(self._sql(sql), args)
                return cur.fetchall()
        finally:
            self._readers.put(conn)

    def _read(self, conn: Any) -> Any:
        return self._transaction(conn)

    def offsets(self) -> Offsets:
        """The stored Kafka positions: (topic, partition) -> next offset to read."""
        return {(t, p): o for t, p, o in self._query("SELECT topic, part, next_offset FROM offsets")}

    def latest_bars(self) -> list[Bar]:
        """The newest stored window of every symbol (what serving starts from)."""
        # Driven by `symbols` (one primary-key read per symbol): a join let SQLite scan all of `bars`
        # (11.7 s at 14.4 million bars).
        rows = self._query(f"{_SELECT_BARS} WHERE (symbol, window_start) IN (SELECT symbol, last_start FROM symbols) "
                           "ORDER BY symbol")
        return [row_bar(r) for r in rows]

    def has_symbol(self, symbol: str) -> bool:
        """True if any bar of `symbol` is stored."""
        return bool(self._query("SELECT 1 FROM symbols WHERE symbol = ?", (symbol,)))

    def bars(self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Bar]:
        """Stored bars of `symbol` with start_ms <= window_start <= end_ms, the newest `limit`, oldest first."""
        rows = self._query(f"{_SELECT_BARS} WHERE symbol = ? AND window_start >= ? AND window_start <= ? "
                           "ORDER BY window_start DESC LIMIT ?",
                           (symbol, -(2**62) if start_ms is None else start_ms,
                            2**62 if end_ms is None else end_ms, limit))
        return [row_bar(r) for r in reversed(rows)]

    def rollups(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, limit: int) -> list[Rollup]:
        """Intervals of `interval_ms` over the stored bars with start_ms <= window_start < end_ms, newest first."""
        rows = self._query(ROLLUP, (interval_ms, interval_ms, interval_ms, interval_ms, symbol, start_ms, end_ms,
                                    limit))
        return [Rollup.from_row(symbol, interval_ms, r) for r in rows]

    def alerts(self, symbol: str | None = None, alert_type: str | None = None, since_ms: int | None = None,
               limit: int = 100) -> list[Alert]:
        """Stored alerts newest first (by detected_at), filtered by symbol, type and detected_at >= since_ms."""
        where, args = ["detected_at >= ?"], [-(2**62) if since_ms is None else since_ms]
        if symbol is not None:
            where.append("symbol = ?")
            args.append(symbol.upper())
        if alert_type is not None:
            where.append("type = ?")
            args.append(alert_type)
        rows = self._query(f"SELECT body FROM alerts WHERE {' AND '.join(where)} "
                           "ORDER BY detected_at DESC, alert_id LIMIT ?", (*args, limit))
        return [codec.loads(r[0]) for r in rows]

    @staticmethod
    def _dead_letter_filter(start_ms: int | None, end_ms: int | None, reason: str | None = None,
                            symbol: str | None = None) -> tuple[str, list[Any]]:
        where = ["rejected_at >= ?", "rejected_at <= ?"]
        args: list[Any] = [-(2**62) if start_ms is None else start_ms, 2**62 if end_ms is None else end_ms]
        if reason is not None:
            where.append("reason = ?")
            args.append(reason)
        if symbol is not None:
            where.append("symbol = ?")
            args.append(symbol.upper())
        return " AND ".join(where), args

    def dead_letters(self, reason: str | None = None, symbol: str | None = None, start_ms: int | None = None,
                     end_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Stored dead letters newest first (by rejected_at, then topic position), filtered by reason, symbol
        and start_ms <= rejected_at <= end_ms; each as the pipeline wrote it plus its `key` and `symbol`."""
        where, args = self._dead_letter_filter(start_ms, end_ms, reason, symbol)
        rows = self._query(f"SELECT record_key, symbol, body FROM dead_letters WHERE {where} "
                           "ORDER BY rejected_at DESC, topic DESC, part DESC, kafka_offset DESC LIMIT ?",
                           (*args, limit))
        return [{**codec.loads(body), "key": key, "symbol": sym} for key, sym, body in rows]

    def dead_letter_summary(self, start_ms: int | None = None) -> dict[str, Any]:
        """Dead letters with rejected_at >= start_ms: the total, the count per reason, the TOP_SYMBOLS symbols
        with the most (ties by symbol)."""
        where, args = self._dead_letter_filter(start_ms, None)
        by_reason = {r: int(n) for r, n in self._query(
            f"SELECT reason, count(*) FROM dead_letters WHERE {where} GROUP BY reason ORDER BY reason", args)}
        by_symbol = [{"symbol": s, "n": int(n)} for s, n in self._query(
            f"SELECT symbol, count(*) AS n FROM dead_letters WHERE {where} AND symbol IS NOT NULL "
            "GROUP BY symbol ORDER BY n DESC, symbol LIMIT ?", (*args, TOP_SYMBOLS))]
        return {"total": sum(by_reason.values()), "by_reason": by_reason, "by_symbol": by_symbol}

    def counts(self) -> dict[str, int]:
        """Rows stored (the bar count is SQLite's or PostgreSQL's estimate where counting would scan)."""
        return {"stored_symbols": self._query("SELECT count(*) FROM symbols")[0][0],
                "stored_alerts": self._query("SELECT count(*) FROM alerts")[0][0]}

class _Tx:
    """`with` block: a cursor, commit on success, rollback on error."""

    def __init__(self, conn: Any, begin: str | None) -> None:
        self.conn, self.begin = conn, begin

    def __enter__(self) -> Any:
        self.cur = self.conn.cursor()
        if self.begin:
            self.cur.execute(self.begin)
        return self.cur

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        try:
            if kind is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.cur.close()


class SqliteDatabase(BarDatabase):
    """An embedded SQLite file in WAL mode: one writer connection, a few reader connections."""

    engine = "sqlite"

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def _connect(self, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL is durable at every checkpoint and never corrupts:
        # a power cut may lose the last transactions, which the stored offsets
        # then re-read from Kafka (they were committed together).
        conn.execute("PRAGMA synchronous=NORMAL")
        # The writer touches one leaf page per symbol of a batch: a large cache
        # and fewer, larger checkpoints keep ingest fast at 10,000 symbols.
        conn.execute(f"PRAGMA cache_size={-262144 if writer else -16384}")    # KiB: 256 MiB, 16 MiB
        if writer:
            conn.execute("PRAGMA wal_autocheckpoint=20000")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _ddl(self) -> list[str]:
        return [s.replace("PRIMARY KEY (symbol, window_start))", "PRIMARY KEY (symbol, window_start)) WITHOUT ROWID")
                for s in _ddl("REAL", "INTEGER", "INTEGER")]

    def _transaction(self, conn: Any) -> _Tx:
        return _Tx(conn, "BEGIN IMMEDIATE")

    def _read(self, conn: Any) -> _Tx:
        return _Tx(conn, "BEGIN")


class PostgresDatabase(BarDatabase):
    """PostgreSQL through psycopg 3: one connection for writes, a small pool of connections for reads."""

    engine = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        import psycopg  # only when a PostgreSQL is named

        self._psycopg = psycopg
        self.url = url

    def describe(self) -> str:
        # Never the password.
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path}"

    def _connect(self, writer: bool) -> Any:
        return self._psycopg.connect(self.url, autocommit=False, connect_timeout=10)

    def _conn(self) -> Any:
        if self._writer is not None and self._writer.closed:
            self._writer = None     # the server went away: the next write reconnects
        return super()._conn()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _ddl(self) -> list[str]:
        return _ddl("DOUBLE PRECISION", "BIGINT", "BOOLEAN")

    def _schema_lock(self) -> list[str]:
        # Two processes starting on a new database at once: CREATE TABLE IF
        # NOT EXISTS is not safe against a concurrent one (a duplicate-key
        # error on pg_type), so the set-up takes a transaction-scoped lock.
        return ["SELECT pg_advisory_xact_lock(7140219)"]

    def _transaction(self, conn: Any) -> _Tx:
        return _Tx(conn, None)

    def _retryable(self, exc: Exception) -> bool:
        errors = self._psycopg.errors
        return isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation))


def open_database(url: str | None) -> BarDatabase:
    """The store DATABASE_URL names (empty: the default SQLite file), schema checked."""
    url = (url or "").strip()
    if not url:
        db: BarDatabase = SqliteDatabase(default_sqlite_path())
    elif url.startswith("sqlite:///"):
        db = SqliteDatabase(url[len("sqlite:///"):] or default_sqlite_path())
    elif url.startswith(("postgresql://", "postgres://")):
        db = PostgresDatabase(url)
    else:
        raise ValueError(f"DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got {url[:40]!r}")
    db.init_schema()
    log.info("store: %s", db.describe())
    return db
