"""The course's Keras jobs: mnistlab.keras (NumPy engine) vs real Keras 3 vs plain PyTorch.

    python benchmarks/bench_keras.py                  # MLP: 1 epoch of 60,000; CNN: 12,000
    python benchmarks/bench_keras.py --rounds 3       # medians of 3 rounds
    python benchmarks/bench_keras.py --full           # the course's jobs: MLP 10 epochs,
                                                      #   CNN 5 epochs, 60,000 images (long)

Each framework runs the same job (``benchmarks/course_jobs.py``: the course's script,
only its imports changed, for mnistlab and Keras; the same model written plainly for
PyTorch; mnistlab's own API as "native") in a fresh process, after an untimed warm-up epoch
on a slice; the frameworks take turns round by round. It prints the best fit seconds of the
rounds (another process starting mid-run slows a run, never speeds it up) and the
ratios mnistlab/Keras (goal <= 0.5), mnistlab/PyTorch (goal <= 1.0) and mnistlab/native
(the facade's cost: ~1.0). Run it on a quiet machine (../shared/tools/wait-quiet waits for
one; the script calls it before each round when it exists).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAMEWORKS = ("mnistlab", "native", "keras", "pytorch")
GOALS = {"keras": 0.5, "pytorch": 1.0}


def run(framework: str, job: str, limit: int, epochs: int) -> float:
    out = subprocess.run(
        [sys.executable, str(HERE / "course_jobs.py"), "--framework", framework, "--job", job,
         "--limit", str(limit), "--epochs", str(epochs)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "KERAS_BACKEND": "torch"})
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def wait_quiet() -> None:
    tool = HERE.parents[1] / "shared" / "tools" / "wait-quiet"
    if tool.exists():
        subprocess.run([str(tool)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="the course's full jobs")
    parser.add_argument("--jobs", default="mlp,cnn")
    parser.add_argument("--cnn-limit", type=int, default=12000)
    args = parser.parse_args()
    plan = {"mlp": (60000, 10 if args.full else 1),
            "cnn": (60000 if args.full else args.cnn_limit, 5 if args.full else 1)}
    jobs = args.jobs.split(",")
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for job in jobs:
            for framework in FRAMEWORKS:
                wait_quiet()
                seconds = run(framework, job, *plan[job])
                times.setdefault((job, framework), []).append(seconds)
                print(f"round {r + 1}: {job} {framework:8s} {seconds:7.2f} s", flush=True)
    print(f"\n{os.cpu_count()} cores; fit seconds (best of {args.rounds}), after a warm-up")
    print(f"{'job':6s}{'images x epochs':>17s}" + "".join(f"{f:>10s}" for f in FRAMEWORKS)
          + f"{'/keras':>9s}{'/pytorch':>10s}{'/native':>9s}")
    failed = False
    for job in jobs:
        med = {f: min(times[(job, f)]) for f in FRAMEWORKS}
        ratios = {f: med["mnistlab"] / med[f] for f in ("keras", "pytorch", "native")}
        limit, epochs = plan[job]
        marks = {f: "" if ratios[f] <= goal else "!" for f, goal in GOALS.items()}
        failed |= any(marks.values())
        print(f"{job:6s}{f'{limit} x {epochs}':>17s}"
              + "".join(f"{med[f]:10.2f}" for f in FRAMEWORKS)
              + f"{ratios['keras']:8.2f}{marks['keras']:1s}"
              + f"{ratios['pytorch']:9.2f}{marks['pytorch']:1s}{ratios['native']:9.2f}")
    print("goals: mnistlab/keras <= 0.5, mnistlab/pytorch <= 1.0 (! marks a miss)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
