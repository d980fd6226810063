"""How well preprocessing + the bundled model hold up on digits that look like people's.

    python benchmarks/bench_robustness.py [--model PATH] [--count 2000] [--seed 0]

Takes the first --count MNIST test digits, turns each into what people feed in (a 280x280
canvas, off-center, black on white, thicker or thinner strokes, small rotations, JPEG at
quality 75, a photo of paper under uneven light), runs `mnistlab.handwriting.preprocess` on it, and
reports the model's accuracy per kind beside its clean accuracy (the same digits fed
directly). Goal: within 1.5 points of clean on every kind.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table
from mnistlab.datasets import load_data
from mnistlab.handwriting.preprocess import preprocess_image
from mnistlab.handwriting.recognizer import Recognizer
from mnistlab.handwriting.robustness import ROBUSTNESS_KINDS, make_robustness_variants

GOAL_POINTS = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model file (default: the bundled one)")
    parser.add_argument("--count", type=int, default=2000, help="test digits (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    recognizer = Recognizer.from_path(args.model)
    _, (x_test, y_test) = load_data()
    digits, labels = x_test[: args.count], y_test[: args.count]
    clean = float(np.mean(recognizer.probabilities(digits).argmax(1) == labels))
    rows = [("clean (MNIST as is)", f"{clean:.4f}", "", "", "")]
    worst = 0.0
    for kind in ("preprocessed only", *ROBUSTNESS_KINDS):
        rng = np.random.default_rng(args.seed)
        started = time.perf_counter()
        seen = np.empty_like(digits)
        for i, digit in enumerate(digits):
            image = (
                digit if kind == "preprocessed only" else make_robustness_variants(digit, kind, rng)
            )
            seen[i] = preprocess_image(image, name=f"{kind}[{i}]")
        per_image_ms = (time.perf_counter() - started) / len(digits) * 1000
        accuracy = float(np.mean(recognizer.probabilities(seen).argmax(1) == labels))
        delta = (accuracy - clean) * 100
        worst = min(worst, delta)
        verdict = "ok" if delta >= -GOAL_POINTS else "MISSES GOAL"
        rows.append((kind, f"{accuracy:.4f}", f"{delta:+.2f}", f"{per_image_ms:.1f}", verdict))
    print_table(
        f"Robustness of {recognizer.name} on {len(digits):,} MNIST test digits "
        f"(goal: within {GOAL_POINTS} points of clean)",
        rows,
        ("input", "accuracy", "points vs clean", "ms/image (make+preprocess)", "goal"),
    )
    print(f"worst kind: {worst:+.2f} points")


if __name__ == "__main__":
    main()
