"""Guards for what is already fast or small (issue 18, goal 4), each printed PASS/FAIL.

    python benchmarks/bench_guards.py                    # all four guards, as the issue says
    python benchmarks/bench_guards.py --only help,predict
    python benchmarks/bench_guards.py --mlp-epochs 1     # a quicker memory check
    python benchmarks/bench_guards.py --seeds 1          # a quicker training-time ratio

  memory    peak memory (largest resident set of the process tree, or the kernel's max
            RSS when larger) of `mnistlab train --recipe keras-mlp` (10 epochs, 60,000
            images, as the issue measured 341 MiB): <= 600 MiB. --mlp-epochs and
            --mlp-set limit=... make it quicker (not the issue's figure then).
  help      `mnistlab --help`, whole process, median of --repeat: <= 0.20 s (0.13 s when
            the issue was filed); the bare interpreter (`python -c pass`) timed in the
            same run is printed beside it as the floor.
  predict   `mnistlab predict one.png` (a test digit written as a PNG), whole process,
            median of --repeat: <= 0.32 s (0.21 s when filed), with `python -c "import
            numpy"` beside it as the floor of any NumPy command.
  training  the fast recipe's training time against the public recipe in plain PyTorch:
            benchmarks/time_to_accuracy.py --only reference,fast-torch in a subprocess
            (its own ratio and goal, <= 0.5; 0.34 when filed).

Each timed command (each batch of --repeat runs) starts after ../shared/tools/wait-quiet
when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_process  # noqa: E402
from bench_process import mnistlab_command, run_measured, wait_quiet  # noqa: E402

GUARDS = ("memory", "help", "predict", "training")
MEMORY_MIB = 600.0
HELP_S = 0.20
PREDICT_S = 0.32
TRAINING_RATIO = 0.5  # time_to_accuracy.py's goal for fast-torch


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def guard_memory(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    settings = [*args.mlp_set, *([f"epochs={args.mlp_epochs}"] if args.mlp_epochs else [])]
    cmd = [*mnistlab_command(), "train", "--recipe", "keras-mlp", "--quiet",
           "--out", str(work / "keras-mlp"), *(f"--set={s}" for s in settings)]  # fmt: skip
    quiet = wait_quiet(not args.no_wait)
    result = run_measured(cmd)
    if result["rc"] != 0:
        return False, f"mnistlab train failed ({result['rc']}): {result['stderr'][-500:]}"
    ok = result["peak_mib"] <= MEMORY_MIB
    what = "default settings" if not settings else ", ".join(settings) + " (quicker)"
    return ok, (f"keras-mlp peak memory {result['peak_mib']:.0f} MiB ({what}; "
                f"{result['wall_s']:.1f} s whole process; quiet: {quiet}): "
                f"goal <= {MEMORY_MIB:.0f} MiB")  # fmt: skip


def _median_wall(cmd: list[str], repeat: int, wait: bool) -> tuple[float, str]:
    run_measured(cmd)  # warm-up: page cache, .pyc files
    quiet = wait_quiet(wait)  # once: the runs take a second or two together
    times = []
    for _ in range(repeat):
        result = run_measured(cmd)
        if result["rc"] != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({result['rc']}):\n{result['stderr']}")
        times.append(result["wall_s"])
    return statistics.median(times), quiet


def guard_help(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    ours, quiet = _median_wall([*mnistlab_command(), "--help"], args.repeat, not args.no_wait)
    floor, _ = _median_wall([sys.executable, "-c", "pass"], args.repeat, not args.no_wait)
    return ours <= HELP_S, (f"mnistlab --help {ours:.3f} s (bare python {floor:.3f} s, "
                            f"{ours / floor:.1f}x; quiet: {quiet}): goal <= {HELP_S} s")


def digit_png(path: Path, index: int = 0) -> Path:
    """The ``index``-th MNIST test digit as a 28x28 grayscale PNG (white digit on black)."""
    from PIL import Image

    from mnistlab.datasets import load_data

    _, (x_test, _) = load_data("mnist")
    Image.fromarray(x_test[index]).save(path)
    return path


def guard_predict(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    png = digit_png(work / "one.png")
    cmd = [*mnistlab_command(), "predict", str(png)]
    ours, quiet = _median_wall(cmd, args.repeat, not args.no_wait)
    floor, _ = _median_wall([sys.executable, "-c", "import numpy"], args.repeat,
                            not args.no_wait)  # fmt: skip
    answer = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    return ours <= PREDICT_S, (f"mnistlab predict one.png {ours:.3f} s (python -c 'import "
                               f"numpy' {floor:.3f} s; answer: {answer[:60]!r}; quiet: "
                               f"{quiet}): goal <= {PREDICT_S} s")  # fmt: skip


def guard_training(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    out = work / "time_to_accuracy.json"
    cmd = [sys.executable, str(HERE / "time_to_accuracy.py"), "--only", "reference,fast-torch",
           "--seeds", str(args.seeds), "--json", str(out),
           *(["--no-wait"] if args.no_wait else [])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return False, f"time_to_accuracy.py failed ({done.returncode}): {done.stderr[-500:]}"
    runs: dict[str, Any] = json.loads(out.read_text())

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name]["results"])

    ref, fast = median("reference", "train_s"), median("fast-torch", "train_s")
    accuracy = min(r["accuracy"] for r in runs["fast-torch"]["results"])
    ratio = fast / ref
    return ratio <= TRAINING_RATIO, (
        f"fast recipe training time {fast:.2f} s, reference {ref:.2f} s: ratio {ratio:.2f} "
        f"({args.seeds} seed(s), min test accuracy {accuracy:.4f}): goal <= {TRAINING_RATIO}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(GUARDS), help=f"comma list of: {', '.join(GUARDS)}")
    p.add_argument("--repeat", type=int, default=7, help="runs per timed command (median)")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the training-time ratio")
    p.add_argument("--mlp-epochs", type=int, help="epochs of the memory check (default: 10)")
    p.add_argument("--mlp-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a keras-mlp setting for the memory check, e.g. limit=10000")
    p.add_argument("--no-wait", action="store_true", help="do not run wait-quiet first")
    p.add_argument("--wait-timeout", type=int, default=120,
                   help="seconds wait-quiet waits at most before each run (default 120)")
    args = p.parse_args(argv)
    bench_process.WAIT_TIMEOUT[0] = args.wait_timeout
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in GUARDS]
    if unknown:
        p.error(f"unknown guards {unknown}; known: {', '.join(GUARDS)}")
    print(f"cores: os.cpu_count()={os.cpu_count()}", flush=True)
    guards = {"memory": guard_memory, "help": guard_help, "predict": guard_predict,
              "training": guard_training}  # fmt: skip
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-guards-") as tmp:
        for name in names:
            ok, line = guards[name](args, Path(tmp))
            verdicts.append(ok)
            print(f"{_verdict(ok)} {name}: {line}", flush=True)
    print(f"{sum(verdicts)}/{len(verdicts)} guards PASS")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
