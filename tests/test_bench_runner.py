"""`make bench` and `make chaos` are measurements, run on demand; this keeps their runners working in CI:
one quick figure end to end (table, JSON file), and the chaos runner's verdict on a failing scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos import ChaosFailure
from bench.chaos import __main__ as chaos_main
from tests.kit.database import ROOT


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
