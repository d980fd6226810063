"""`mnistlab bench ...`: the benchmarks the textbook and the course show, as tables.

- ``bench inference``: the textbook's pretrained 784-50-100-10 sigmoid net on the 10,000 test
  images, image by image, in batches of 100 and in one batch: time, speed-up over image by
  image, and accuracy (0.9352 in every mode).
- ``bench numgrad``: per-sample numerical-gradient training of the course's 784-30-10 net, the
  naive loop against the vectorized one; ``--epoch`` runs the course's one-epoch experiment.

The scripts in ``benchmarks/`` call the same functions.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistlab.cli.args import about, int_range, positive_int, random_seed
from mnistlab.errors import ModelFileError

if TYPE_CHECKING:
    from mnistlab.engines.numpy import Sequential

TEXTBOOK_CORRECT = 9_352  # of the 10,000 MNIST test images, as the textbook prints
COURSE_ACCURACY = 0.924  # the course's 784-30-10 net after one epoch of numerical gradients
TRAIN_SIZE = 60_000


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` command group."""
    bench = subparsers.add_parser("bench", help="benchmarks: inference modes, numerical gradients")
    commands = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)

    inference = commands.add_parser(
        "inference",
        help="the textbook net on the test set: image by image, in batches, in one batch",
    )
    inference.add_argument(
        "--weights",
        type=Path,
        help="the textbook's sample_weight.pkl or a mnistlab .safetensors model "
        "(default: $MNISTLAB_SAMPLE_WEIGHT, else ./sample_weight.pkl)",
    )
    inference.add_argument("--batch-size", type=positive_int, default=100, help="(default: 100)")
    inference.add_argument("--repeat", type=positive_int, default=3,
                           help="best of N runs (default: 3)")
    inference.add_argument("--limit", type=positive_int,
                           help="only the first N test images (smoke test)")
    inference.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    inference.set_defaults(func=cmd_inference)

    numgrad = commands.add_parser(
        "numgrad", help="numerical-gradient training: naive loop vs vectorized, per sample"
    )
    numgrad.add_argument("--naive-samples", type=positive_int, default=3, help="(default: 3)")
    numgrad.add_argument("--fast-samples", type=positive_int, default=300, help="(default: 300)")
    numgrad.add_argument("--hidden", type=int_range(1, 4096), default=30,
                         help="hidden units, 1 to 4096 (default: 30)")
    numgrad.add_argument("--seed", type=random_seed, default=0, help="(default: 0)")
    numgrad.add_argument(
        "--epoch", action="store_true", help="also run the course's one-epoch experiment (fast)"
    )
    numgrad.add_argument(
        "--train-limit", type=positive_int, help="samples in the --epoch run (default: all 60,000)"
    )
    numgrad.set_defaults(func=cmd_numgrad)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table (plain text when not a terminal); the first column left-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


# ---- inference --------------------------------------------------------------------------------


@dataclass
class InferenceResult:
    """One inference mode: the best wall time of its runs and what it predicted."""

    mode: str
    batch_size: int
    calls: int
    seconds: float
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def resolve_weights(path: Path | None) -> Path:
    """The weight file to use: ``path``, else $MNISTLAB_SAMPLE_WEIGHT, else ./sample_weight.pkl."""
    candidates = [path] if path is not None else []
    if path is None:
        if os.environ.get("MNISTLAB_SAMPLE_WEIGHT"):
            candidates.append(Path(os.environ["MNISTLAB_SAMPLE_WEIGHT"]))
        candidates.append(Path("sample_weight.pkl"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelFileError(
        f"no weight file at {', '.join(map(str, candidates))}: pass --weights PATH to the "
        "textbook's sample_weight.pkl (or set MNISTLAB_SAMPLE_WEIGHT)"
    )


def load_benchmark_model(path: Path, dtype: str = "float32") -> Sequential:
    """A .pkl goes through the safe legacy importer; anything else is a mnistlab model file."""
    if path.suffix == ".pkl":
        from mnistlab.engines.legacy import import_weights

        return import_weights(path, dtype=dtype)
    from mnistlab.engines import load_model

    return load_model(path)


def time_inference(
    model: Sequential, x: np.ndarray, t: np.ndarray, batch_size: int = 100, repeat: int = 3
) -> list[InferenceResult]:
    """Predict all of ``x`` image by image, in batches of ``batch_size``, and in one batch."""
    results = []
    model.predict(x, batch_size=len(x))  # untimed warm-up: BLAS threads, first-touch memory
    modes = [("image by image", 1), (f"batches of {batch_size}", batch_size), ("one batch", len(x))]
    for mode, size in modes:
        best, y = float("inf"), None
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            y = model.predict(x, batch_size=size)
            best = min(best, time.perf_counter() - start)
        correct = int(np.sum(np.argmax(y, axis=1) == t))
        calls = -(-len(x) // size)
        results.append(InferenceResult(mode, size, calls, best, correct, len(x)))
    return results


def cmd_inference(args: argparse.Namespace) -> int:
    """Time the three inference modes; exit 1 when their accuracies differ (or miss 0.9352)."""
    from mnistlab.datasets import load_mnist

    path = resolve_weights(args.weights)
    with about("--weights" if args.weights else None):
        model = load_benchmark_model(path, args.dtype)
    (_, _), (x_test, t_test) = load_mnist(normalize=True, flatten=True, one_hot_label=False)
    if args.limit is not None:
        x_test, t_test = x_test[: args.limit], t_test[: args.limit]
    x_test = np.ascontiguousarray(x_test, dtype=model.dtype)
    results = time_inference(model, x_test, t_test, args.batch_size, args.repeat)
    base = results[0].seconds
    rows = [
        (
            r.mode,
            f"{r.calls:,}",
            f"{r.seconds * 1e3:.1f}",
            f"{r.seconds / r.total * 1e6:.2f}",
            f"{base / r.seconds:.1f}x",
            f"{r.correct:,}",
            f"{r.accuracy:.4f}",
        )
        for r in results
    ]
    print_table(
        f"{path.name} on {len(x_test):,} MNIST test images ({model.dtype}, best of {args.repeat})",
        ("mode", "forward calls", "time (ms)", "per image (µs)", "speed-up", "correct", "accuracy"),
        rows,
    )
    status = 0
    if len({r.correct for r in results}) != 1:
        print("accuracy differs between modes: " + ", ".join(f"{r.accuracy:.4f}" for r in results))
        status = 1
    textbook = path.suffix == ".pkl" and len(x_test) == 10_000
    if textbook and results[0].correct != TEXTBOOK_CORRECT:
        print(
            f"expected {TEXTBOOK_CORRECT:,} correct (accuracy 0.9352), got {results[0].correct:,}"
        )
        status = 1
    elif textbook:
        print("accuracy 0.9352 in every mode, as the textbook prints")
    return status


# ---- numerical gradients ------------------------------------------------------------------


@dataclass
class NumgradTiming:
    """Per-sample training time of one method."""

    method: str
    samples: int
    seconds: float

    @property
    def per_sample(self) -> float:
        return self.seconds / self.samples


def time_numgrad(
    x: np.ndarray, t: np.ndarray, naive_samples: int, fast_samples: int, hidden: int, seed: int
) -> tuple[list[NumgradTiming], float]:
    """Train fresh course nets on the first samples, naive and fast; also return how far the
    two nets' weights are apart (max relative difference) after the same ``naive_samples``."""
    from mnistlab.experiments.course import course_model
    from mnistlab.nn.numgrad import train_numerical

    timings, weights = [], {}
    for method, count in (("naive", naive_samples), ("fast", fast_samples)):
        model = course_model(hidden, seed)
        if method == "fast":  # the same samples as the naive run first, for the weight check
            train_numerical(model, x[:naive_samples], t[:naive_samples], 0.01, method="fast")
            weights["fast"] = model.get_weights()
            model = course_model(hidden, seed)
        start = time.perf_counter()
        train_numerical(model, x[:count], t[:count], 0.01, method=method, log_every=10**9)
        timings.append(NumgradTiming(method, count, time.perf_counter() - start))
        if method == "naive":
            weights["naive"] = model.get_weights()
    gap = max(
        float(np.max(np.abs(weights["fast"][k] - v) / (np.abs(v) + 1e-12)))
        for k, v in weights["naive"].items()
    )
    return timings, gap


def run_course_epoch(
    x: np.ndarray,
    t: np.ndarray,
    x_test: np.ndarray,
    labels_test: np.ndarray,
    hidden: int = 30,
    seed: int = 0,
) -> tuple[float, float, list[tuple[int, float]]]:
    """The course's experiment: one epoch of per-sample numerical-gradient SGD (lr 0.01, fast),
    then test accuracy. Returns (seconds, accuracy, [(step, loss) every 200 samples])."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mnistlab.experiments.course import course_model
    from mnistlab.nn.numgrad import train_numerical

    model = course_model(hidden, seed)
    columns = (
        TextColumn("epoch 1"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("train", total=len(x), loss=float("nan"))

        def report(record: dict) -> None:
            progress.update(task, completed=record["step"], loss=record["loss"])

        start = time.perf_counter()
        history = train_numerical(model, x, t, 0.01, callback=report, log_every=200)
        seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(model.predict(x_test), axis=1) == labels_test))
    return seconds, accuracy, list(zip(history.steps, history.loss, strict=True))


def cmd_numgrad(args: argparse.Namespace) -> int:
    """Naive vs fast per-sample time; with --epoch, the course's one-epoch run and its accuracy."""
    from mnistlab.datasets import load_data
    from mnistlab.experiments.course import course_inputs, course_targets

    (x_train, t_train), (x_test, t_test) = load_data()
    count = max(args.naive_samples, args.fast_samples)
    x, t = course_inputs(x_train[:count]), course_targets(t_train[:count])
    timings, gap = time_numgrad(x, t, args.naive_samples, args.fast_samples, args.hidden, args.seed)
    naive = timings[0].per_sample
    rows = [
        (
            f"{r.method}",
            f"{r.samples:,}",
            f"{r.per_sample * 1e3:.3f}",
            _duration(r.per_sample * TRAIN_SIZE),
            f"{naive / r.per_sample:,.0f}x",
        )
        for r in timings
    ]
    print_table(
        f"numerical-gradient SGD, 784-{args.hidden}-10 sigmoid, float64, per training sample",
        ("method", "samples", "per sample (ms)", "projected epoch (60,000)", "speed-up"),
        rows,
    )
    print(
        f"weights after {args.naive_samples} samples, fast vs naive: "
        f"max relative difference {gap:.1e}"
    )
    if not args.epoch:
        return 0
    limit = args.train_limit or TRAIN_SIZE
    x_all, t_all = course_inputs(x_train[:limit]), course_targets(t_train[:limit])
    seconds, accuracy, steps = run_course_epoch(
        x_all, t_all, course_inputs(x_test), t_test, args.hidden, args.seed
    )
    shown = steps[:: max(1, len(steps) // 10)]
    print_table(
        "loss every 200 samples (every tenth shown)",
        ("samples", "mean loss"),
        [(f"{s:,}", f"{loss:.4f}") for s, loss in shown],
    )
    print_table(
        "the course's experiment: 1 epoch, lr 0.01, sequential updates",
        ("train samples", "time", "test accuracy", "course"),
        [(f"{len(x_all):,}", _duration(seconds), f"{accuracy:.4f}", f"{COURSE_ACCURACY}")],
    )
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
