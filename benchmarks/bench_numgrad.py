"""Numerical-gradient training: the textbook loop vs the vectorized one, per training sample.

    python benchmarks/bench_numgrad.py [--naive-samples 3] [--fast-samples 300] [--epoch]

On the course's 784-30-10 sigmoid net (float64, summed binary cross-entropy, inputs in
[0.01, 1], targets 0.01/0.99, lr 0.01): time per sample of each method, the speed-up (goal
>= 1000x) and the projected time of one epoch (60,000 samples). ``--epoch`` runs the course's
full experiment with the fast method and reports test accuracy (course: 0.924; goal about a
minute). Same as ``mnistlab bench numgrad``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnistlab.cli.bench import register

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if SHARED_DATASETS.is_dir():  # the official files, served as a mirror (as in CI)
        os.environ.setdefault("MNISTLAB_MIRRORS", SHARED_DATASETS.as_uri())
    parser = argparse.ArgumentParser(prog="bench_numgrad.py", description=__doc__.split("\n")[0])
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "numgrad", *argv])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
