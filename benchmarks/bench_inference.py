"""Inference of the textbook's pretrained net: image by image vs batches of 100 vs one batch.

    python benchmarks/bench_inference.py [--weights sample_weight.pkl] [--repeat 3] [--limit N]

The textbook (ch. 3) shows batching the 10,000 MNIST test images speeds up prediction without
changing it: every mode must classify 9,352 correctly (accuracy 0.9352). Same as
``mnistlab bench inference``; by default the weights are ../shared/reference/sample_weight.pkl.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnistlab.cli.bench import register

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if (SHARED / "datasets").is_dir():  # the official files, served as a mirror (as in CI)
        os.environ.setdefault("MNISTLAB_MIRRORS", (SHARED / "datasets").as_uri())
    sample = SHARED / "reference" / "sample_weight.pkl"
    if "--weights" not in argv and sample.is_file():
        os.environ.setdefault("MNISTLAB_SAMPLE_WEIGHT", str(sample))
    parser = argparse.ArgumentParser(prog="bench_inference.py", description=__doc__.split("\n")[0])
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "inference", *argv])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
