"""The command line: flags, environment variables, exit codes, the broker check."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from market import codec
from producer import ProduceStats, ProducerConfig, ProducerError, create_producer
from producer.cli import (
    EXIT_BROKER, EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, build_parser, build_ticks, fault_rates, main,
)
from producer.records import MALFORMED_KINDS
from producer.replay import CsvTicks
from producer.simulator import DEFAULT_SYMBOLS

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_design() -> None:
    args = build_parser().parse_args([])
    assert args.input_topic == "raw_stock_ticks"
    assert args.rate == 10_000
    assert [spec.symbol for spec in build_ticks(args).specs] == list(DEFAULT_SYMBOLS)   # the 20 well-known
    assert not fault_rates(args).any


def test_environment_variables_set_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("RATE", "2500")
    monkeypatch.setenv("LATE_RATE", "0.01")
    args = build_parser().parse_args([])
    assert (args.bootstrap_servers, args.rate, args.late_rate) == ("kafka:29092", 2500.0, 0.01)
    assert build_parser().parse_args(["--rate", "50000"]).rate == 50_000


def test_malformed_rate_is_shared_unless_a_kind_is_given() -> None:
    rates = fault_rates(build_parser().parse_args(["--malformed_rate", "0.08", "--invalid_json_rate", "0.05"]))
    assert rates.malformed["invalid_json"] == 0.05
    assert all(rates.malformed[kind] == pytest.approx(0.01) for kind in MALFORMED_KINDS if kind != "invalid_json")


def test_rates_outside_zero_one_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--late_rate", "2"])
    assert exit_info.value.code == EXIT_USAGE


def test_to_csv_writes_a_replayable_simulation(tmp_path: Path) -> None:
    path = tmp_path / "sim.csv"
    assert main(["--to_csv", str(path), "--count", "300", "--seed", "1", "--symbols", "AAPL,MSFT"]) == EXIT_OK
    ticks = list(CsvTicks(path))
    assert len(ticks) == 300 and {t["symbol"] for t in ticks} == {"AAPL", "MSFT"}
    assert main(["--to_csv", str(path)]) == EXIT_USAGE  # needs --count


def test_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(ProducerError, match="localhost:1 did not answer within 2 s"):
        create_producer(ProducerConfig(bootstrap_servers="localhost:1", broker_timeout_s=2))
    assert time.monotonic() - started < 4


def test_cli_exits_non_zero_quickly_without_a_broker() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "producer", "--bootstrap_servers", "localhost:1",
                             "--broker_timeout_s", "2", "--count", "10"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == EXIT_BROKER
    assert re.search(r"localhost:1 did not answer within 2 s.*is it running", result.stderr)
    assert time.monotonic() - started < 15  # includes interpreter start-up on a busy machine


def test_exit_status_is_one_and_counts_are_logged_when_records_are_lost(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    def lossy_run(cfg, records, **kwargs):  # a run in which 2 records failed and 3 stayed unconfirmed
        stats = ProduceStats()
        stats.produced["tick"] = 10
        stats.delivered["tick"] = 5
        stats.failed["tick"] = 2
        stats.finished = stats.started + 1
        return stats

    monkeypatch.setattr("producer.cli.run_producer", lossy_run)
    assert main(["--count", "10", "--stats_interval_s", "0"]) == EXIT_UNDELIVERED
    assert "2 records failed and 3 were not confirmed (delivered 5)" in caplog.text
    summary = codec.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["delivered"], summary["failed"], summary["undelivered"]) == (5, 2, 3)


# --- a whole market: --symbol_count ---------------------------------------------

@pytest.mark.parametrize("value", ["0", "-5", "1000001", "many", "2.5"])
def test_a_bad_symbol_count_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([f"--symbol_count={value}"])
    assert exit_info.value.code == EXIT_USAGE
    assert f"--symbol_count: '{value}'" in capsys.readouterr().err


def test_a_bad_symbol_count_from_the_environment_names_the_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SYMBOL_COUNT", "0")
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == EXIT_USAGE
    assert "environment variable SYMBOL_COUNT='0'" in capsys.readouterr().err
    monkeypatch.setenv("SYMBOL_COUNT", "300")
    assert len(build_ticks(build_parser().parse_args([])).specs) == 300


def test_symbol_count_fills_up_after_the_well_known_symbols() -> None:
    specs = build_ticks(build_parser().parse_args(["--symbol_count", "10000"])).specs
    assert len(specs) == 10_000 and len({spec.symbol for spec in specs}) == 10_000
    assert {spec.symbol for spec in specs[:20]} == set(DEFAULT_SYMBOLS)
    assert specs[0].symbol == "NVDA"   # the most active of them first
    few = build_ticks(build_parser().parse_args(["--symbol_count", "3"])).specs
    assert [spec.symbol for spec in few] == ["NVDA", "AAPL", "TSLA"]


def test_symbols_name_the_most_active_and_symbol_count_fills_up() -> None:
    args = build_parser().parse_args(["--symbols", "ZZZ,aapl", "--symbol_count", "50"])
    specs = build_ticks(args).specs
    assert [spec.symbol for spec in specs[:2]] == ["ZZZ", "AAPL"] and len(specs) == 50
    assert "MSFT" not in {spec.symbol for spec in specs}   # made-up names never borrow a well-known one
    # Exactly as many as named is fine; fewer is an error, not a silent cut.
    assert len(build_ticks(build_parser().parse_args(["--symbols", "A,B", "--symbol_count", "2"])).specs) == 2


def test_fewer_symbols_than_named_or_a_count_with_a_replay_is_a_usage_error(
        caplog: pytest.LogCaptureFixture) -> None:
    assert main(["--symbols", "A,B,C", "--symbol_count", "2", "--to_csv", "x.csv", "--count", "5"]) == EXIT_USAGE
    assert "--symbol_count 2 is fewer than the 3 symbols --symbols names" in caplog.text
    assert main(["--replay", "x.csv", "--symbol_count", "10"]) == EXIT_USAGE
    assert "--symbol_count simulates a market" in caplog.text


def test_the_command_exits_two_on_a_bad_symbol_count() -> None:
    result = subprocess.run([sys.executable, "-m", "producer", "--symbol_count", "2000000"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == EXIT_USAGE
    assert "the number of symbols is within 1..1,000,000, got 2000000" in result.stderr


def test_to_csv_writes_a_whole_market(tmp_path: Path) -> None:
    path = tmp_path / "market.csv"
    assert main(["--to_csv", str(path), "--count", "20000", "--seed", "1", "--symbol_count", "1000"]) == EXIT_OK
    ticks = list(CsvTicks(path))
    symbols = Counter(tick["symbol"] for tick in ticks)
    assert len(ticks) == 20_000 and 500 < len(symbols) <= 1_000
    assert symbols.most_common(1)[0][0] == "NVDA"
