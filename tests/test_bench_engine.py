"""The engine benchmark's two processes take turns to the end and report every row,
round after round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
    wake_up = json.loads(out.read_text())["thread_wake_up"]
    assert set(wake_up) == {"right_after_s", "after_3ms_asleep_s"}
    assert all(0 < seconds < 1 for seconds in wake_up.values())
    assert "waking a sleeping thread" in done.stdout
    if Path("/proc/stat").exists():  # the host's share of CPU time, each round
        assert len(epoch["round_steal"]) == 2
        assert all(0 <= share <= 1 for share in epoch["round_steal"])
        assert "steal" in done.stdout


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/bench_engine.py, imported as a module."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_engine
    finally:
        sys.path.remove(str(BENCH.parent))
    return bench_engine


def test_steal_is_the_hosts_share_of_cpu_time_between_two_readings(bench: ModuleType) -> None:
    assert bench.steal_share((10, 1000), (40, 1200)) == pytest.approx(0.15)
    assert bench.steal_share(None, (40, 1200)) is None  # not reported here
    assert bench.steal_share((10, 1000), (10, 1000)) is None  # no time passed


def test_a_wake_up_is_timed_from_the_call_to_the_answer(bench: ModuleType) -> None:
    seconds = bench.wake_up_s(0.05, repeat=3)
    assert 0 < seconds < 0.05  # not counting the 50 ms spent busy before each call


def test_rounds_with_1_5_percent_steal_or_more_are_called_noisy(bench: ModuleType) -> None:
    assert bench.noisy_rounds([0.0, 0.05, 0.015, 0.0149]) == [2, 3]
    assert bench.noisy_rounds([0.0, 0.01]) == []


def test_the_report_names_the_noisy_rounds(bench: ModuleType,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    epoch = {"name": "mlp epoch", "numpy_s": 5.0, "torch_s": 5.0, "ratio": 1.0,
             "round_ratios": [0.9, 1.1], "round_steal": [0.0, 0.04]}
    inference = {"name": "mlp inference", "numpy_s": 0.1, "torch_s": 0.1, "ratio": 1.0,
                 "round_ratios": [1.0, 1.0], "numpy_calls_s": [0.1], "torch_calls_s": [0.1],
                 "n_train": 60000, "n_test": 10000, "accuracy_numpy": 0.97,
                 "accuracy_torch": 0.97}
    args = bench.parse_args(["--rounds", "2"])
    wake_up = {"right_after_s": 1e-4, "after_3ms_asleep_s": 2e-4}
    bench.report([epoch, inference], args, wake_up)
    out = capsys.readouterr().out
    assert "by round: 0.0% 4.0%" in out
    assert "noisy: round 2 (>= 1.5% taken back)" in out
    assert "compare the engines by the others" in out
    epoch["round_steal"] = [0.02, 0.04]  # every round noisy: nothing to compare by
    bench.report([epoch, inference], args, wake_up)
    assert "noisy: rounds 1, 2" in (out := capsys.readouterr().out)
    assert "rerun when the host is quieter" in out
