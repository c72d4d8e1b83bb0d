"""`make bench` and `make chaos` are measurements, run on demand; this keeps their runners working in CI:
one quick figure end to end (table, JSON file), the summary's targets, the delaying proxy P8 runs through,
and the chaos runner's verdict on a failing scenario."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.chaos import ChaosFailure
from bench.chaos import __main__ as chaos_main
from tests.kit.database import ROOT
from tests.tcp_proxy import FlakyProxy


def test_the_bench_runner_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    ran = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "P7", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(output.read_text())
    assert result["P7"]["most_running_at_once"] == 8
    assert result["P7"]["busy_peak_mib"] > 10
    assert {"cpu", "cores", "postgres"} <= set(result["machine"])
    header, row = ran.stdout.splitlines()[:2]
    assert header.split() == ["FIGURE", "MEASURED", "VALUE", "BASELINE", "RATIO", "TARGET"]
    assert row.startswith("P7")
    assert "MiB" in row
    assert "P7: worker peak RSS" in ran.stderr, "progress is shown while it runs"


def test_an_unknown_figure_is_refused() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "P9"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 2
    assert "unknown figure(s) P9" in ran.stderr


def test_the_chaos_runner_exits_non_zero_when_a_scenario_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> dict[str, object]:
        raise ChaosFailure("R4: 6 accepted against a quota of 5")

    monkeypatch.setattr(chaos_main, "scenarios", lambda full: {"R4": broken, "R5": lambda: {"fired_once": 12}})
    assert chaos_main.main(["--short"]) == 1
    table = capsys.readouterr().out
    assert "R4        FAILED" in table
    assert "6 accepted against a quota of 5" in table
    assert "R5        ok" in table


def test_the_summary_prints_issue_15s_targets_next_to_their_figures() -> None:
    p1 = {"raw_jobs_per_s": 8000.0, "sql_steps_per_s": 1300.0, "sql_ratio": 0.16, "steps_per_s": 500.0}
    results = {
        "P1": {"rows": [{**p1, "workers": 4, "ratio": 0.06, "batch_steps_per_s": 900.0, "batch_ratio": 0.11}]},
        "P2": {
            "rows": [
                {
                    "workers": 4,
                    "procrastinate_jobs_per_s": 780.0,
                    "pgqueuer_jobs_per_s": 990.0,
                    "procrastinate_best_jobs_per_s": 450.0,
                    "pgqueuer_best_jobs_per_s": 1800.0,
                }
            ],
            "configs": {
                "procrastinate": {"one": {"label": "--concurrency 1"}, "best": {"label": "--concurrency 16"}},
                "pgqueuer": {"one": {"label": "batch size 1"}, "best": {"label": "batch size 10"}},
            },
        },
        "P3": {"rows": [{"clients": 4, "proposals_per_s": 550.0, "raw_inserts_per_s": 11000.0, "ratio": 0.05}]},
        "P8": {
            "concurrency": 32,
            "rows": [
                {"transport": "direct", "added_rtt_ms": ms, "steps_per_s": rate, "ratio": rate / 1000}
                for ms, rate in ((0.0, 1000.0), (5.0, 600.0), (30.0, 120.0))
            ],
        },
    }
    rows = {(r["figure"], r["measured"]): r for r in bench_main.summary(results)}
    assert rows["P1", "steps/s, 4 worker(s), batch of 16"]["target"] == "≥ 0.50"
    vs_pgqueuer = rows["P2", "agent-ops best vs pgqueuer, 4 worker(s)"]
    assert (vs_pgqueuer["ratio"], vs_pgqueuer["target"]) == ("0.50", "≥ 1.50")
    assert vs_pgqueuer["value"] == "900 steps/s (batch of 16)"
    assert vs_pgqueuer["baseline"] == "pgqueuer batch size 10 1,800 jobs/s"
    vs_procrastinate = rows["P2", "agent-ops best vs procrastinate, 4 worker(s)"]
    assert vs_procrastinate["baseline"] == "procrastinate --concurrency 1 780 jobs/s", "its faster configuration"
    assert (vs_procrastinate["ratio"], vs_procrastinate["target"]) == ("1.15", "≥ 2.00")
    assert rows["P2", "agent-ops 1 at a time vs pgqueuer, 4 worker(s)"]["target"] == "≥ 1.00"
    assert rows["P2", "pgqueuer jobs/s, 4 worker(s), batch size 1"]["value"] == "990", "the one-at-a-time rows stay"
    assert rows["P3", "proposals/s, 4 client(s)"]["target"] == "≥ 1,000/s"
    at_30 = rows["P8", "steps/s, direct, +30 ms RTT, 1 worker, concurrency 32"]
    assert (at_30["value"], at_30["ratio"], at_30["target"]) == ("120", "0.12", "≥ 0.50")
    assert at_30["baseline"] == "+0 ms 1,000 steps/s"


def test_the_proxy_delays_each_way_and_keeps_bytes_in_order() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = FlakyProxy("127.0.0.1", listener.getsockname()[1], delay=0.02)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            started = time.perf_counter()
            client.sendall(b"ping")
            assert client.recv(16) == b"ping"
            assert time.perf_counter() - started >= 0.04, "20 ms each way: at least 40 ms per round trip"
            payload = bytes(range(256)) * 2000

            def in_small_pieces() -> None:
                for i in range(0, len(payload), 997):
                    client.sendall(payload[i : i + 997])

            sender = threading.Thread(target=in_small_pieces)
            sender.start()
            received = b""
            while len(received) < len(payload):
                received += client.recv(65536)
            sender.join()
            assert received == payload, "many small writes arrive in order"
    finally:
        proxy.close()
        listener.close()
