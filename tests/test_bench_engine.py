"""The engine benchmark's two processes take turns to the end and report every row,
round after round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"


def test_both_engines_take_turns_through_an_epoch_and_inference(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--synthetic", "--train", "700", "--test", "200",
         "--only", "mlp", "--chunk", "3", "--repeat", "2", "--threads", "1", "--rounds", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"mlp epoch", "mlp inference"}
    epoch = rows["mlp epoch"]
    assert len(epoch["numpy_turns_s"]) == len(epoch["torch_turns_s"]) == 3  # 7 steps, 3 a turn
    assert epoch["numpy_rounds_s"][0] == pytest.approx(sum(epoch["numpy_turns_s"]))  # round 1
    assert len(rows["mlp inference"]["torch_calls_s"]) == 2
    assert len(epoch["round_ratios"]) == 2  # two fresh pairs of processes
    assert epoch["ratio"] == pytest.approx(sum(epoch["round_ratios"]) / 2)  # median of two
    assert epoch["numpy_s"] == pytest.approx(sum(epoch["numpy_rounds_s"]) / 2)
    assert "mlp epoch" in done.stdout and "ratio" in done.stdout
