"""How long a finished run takes to write what it leaves: plots, metrics and the report.

    python benchmarks/bench_report.py [--repeat 5] [--mistakes 300] [--epochs 1]

Builds a realistic evaluation: the 10,000 MNIST test images with synthetic class
probabilities that get ``--mistakes`` of them wrong (some surely, some barely), a history
like the fast recipe's (``--epochs 1``: one epoch with a loss every 20 steps) or a longer
one (``--epochs 12``), and 16 first-layer conv filters. Then times what the runner calls
(``runs.write_history``, ``runs.write_evaluation``, ``runs.write_report``) into a fresh
directory, with each plot timed on its own. Goal: the total <= 0.3 s.

"first call" is one run in this process before anything was imported for plotting (what
``mnistlab train`` pays: Pillow, the fonts and matplotlib's colour maps are loaded then),
the rest are medians of ``--repeat`` runs after it.

Reference, timed in the same run: the mistake grid the way it used to be drawn, one
matplotlib subplot per digit with its title, in a constrained layout (written out below,
as the old ``plots.misclassified_grid`` did it), against ``plots.misclassified_grid`` now.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, print_table
from mnistlab.datasets import load_data
from mnistlab.reporting import plots, runs
from mnistlab.reporting.metrics import evaluation_report, misclassified, most_confident_mistakes

GOAL_S = 0.3
PLOTS = ("learning_curves", "confusion_matrix_plot", "misclassified_grid", "first_layer_weights",
         "digit_grid")


def synthetic_evaluation(mistakes: int, seed: int = 0) -> tuple[runs.Evaluation, np.ndarray]:
    """The test images and probabilities that are right except on ``mistakes`` of them."""
    _, (x, y) = load_data("mnist")
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    n = len(y)
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), y] += 6.0
    wrong = rng.choice(n, mistakes, replace=False)
    other = (y[wrong] + rng.integers(1, 10, mistakes)) % 10
    logits[wrong, other] += rng.uniform(6.5, 12.0, mistakes)  # barely to surely wrong
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    names = [str(i) for i in range(10)]
    report = evaluation_report(y, probs, 0.05, class_names=names)
    evaluation = runs.Evaluation(probabilities=probs, labels=y, loss=0.05,
                                 loss_name="categorical_crossentropy",
                                 accuracy=float(report["accuracy"]), report=report, seconds=0.3)
    return evaluation, x


def synthetic_history(epochs: int) -> dict[str, Any]:
    steps_per_epoch = 938  # 60,000 images in batches of 64
    steps = [[s, float(2.3 * np.exp(-s / 150) + 0.04)] for s in range(0, epochs * steps_per_epoch,
                                                                      20)]
    e = np.arange(1, epochs + 1)
    logs = {"loss": list(0.3 / e), "accuracy": list(1 - 0.05 / e),
            "val_loss": list(0.06 + 0.2 / e), "val_accuracy": list(0.985 - 0.03 / e)}
    return {"history": logs, "epoch": list(range(epochs)), "steps": steps}


def write_all(run_dir: Path, evaluation: runs.Evaluation, images: np.ndarray,
              history: dict[str, Any], weights: np.ndarray) -> dict[str, float]:
    """What the runner writes at the end of a run; seconds per step."""
    names = [str(i) for i in range(10)]
    t0 = time.perf_counter()
    runs.write_config(run_dir, {"recipe": "fast", "engine": "torch", "epochs": 1})
    runs.write_history(run_dir, history)
    t1 = time.perf_counter()
    runs.write_evaluation(run_dir, evaluation, images, class_names=names, first_layer_W=weights,
                          extra={"recipe": "fast", "dataset": "mnist", "split": "test"})
    t2 = time.perf_counter()
    runs.write_report(run_dir)
    t3 = time.perf_counter()
    return {"history": t1 - t0, "evaluation": t2 - t1, "report": t3 - t2, "total": t3 - t0}


def timed_plots() -> dict[str, list[float]]:
    """Wrap each plot function the runner calls so its calls are timed."""
    spent: dict[str, list[float]] = {name: [] for name in PLOTS}
    for name in PLOTS:
        original = getattr(plots, name)

        def wrapper(*args: Any, _f: Callable[..., Any] = original, _n: str = name,
                    **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_n].append(time.perf_counter() - start)

        setattr(plots, name, wrapper)
    return spent


def reference_mistake_grid(images: np.ndarray, records: list[Any], path: Path) -> None:
    """The old way: one subplot per digit, each titled, constrained layout."""
    from matplotlib.figure import Figure

    chosen = records[:25]
    n = len(chosen)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(cols * 1.75, rows * 1.95 + 0.4), dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        r = chosen[k]
        ax.imshow(images[r.index], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"Label: {r.label}\nPrediction: {r.prediction} ({r.confidence:.0%})",
                     fontsize=8.5, pad=3, color="#8b0000")
    fig.suptitle(f"Most confident mistakes ({n} of {len(records)})", fontsize=12,
                 fontweight="bold")
    with open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, facecolor="white")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mistakes", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    evaluation, images = synthetic_evaluation(args.mistakes)
    history = synthetic_history(args.epochs)
    weights = np.random.default_rng(1).normal(size=(16, 1, 5, 5))
    spent = timed_plots()
    print(f"{evaluation.num_samples:,} test images, {evaluation.errors} mistakes, "
          f"{args.epochs} epoch(s), {len(history['steps'])} logged steps")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first_run = write_all(root / "first", evaluation, images, history, weights)
        first_plots = {name: sum(times) for name, times in spent.items()}
        for times in spent.values():
            times.clear()
        totals = []
        for i in range(args.repeat):
            totals.append(write_all(root / f"run{i}", evaluation, images, history, weights))
        rows = []
        for name in PLOTS:
            calls = len(spent[name]) // args.repeat  # the mistake grid is drawn twice a run
            per_run = [sum(spent[name][i * calls:(i + 1) * calls]) for i in range(args.repeat)]
            label = f"{name} (x{calls})" if calls > 1 else name
            rows.append((label, f"{first_plots[name] * 1e3:.0f} ms",
                         f"{statistics.median(per_run) * 1e3:.0f} ms"))
        for step in ("history", "evaluation", "report"):
            rows.append((f"write_{step} (all of it)", f"{first_run[step] * 1e3:.0f} ms",
                         f"{statistics.median(t[step] for t in totals) * 1e3:.0f} ms"))
        total = statistics.median(t["total"] for t in totals)
        rows.append(("total", f"{first_run['total'] * 1e3:.0f} ms", f"{total * 1e3:.0f} ms"))
        print_table("Writing what a run leaves", rows, ("piece", "first call", "median"))
        print(f"total {total:.3f} s (median of {args.repeat}; first call {first_run['total']:.3f} "
              f"s): goal <= {GOAL_S} s {'met' if total <= GOAL_S else 'NOT met'}")

        records = most_confident_mistakes(misclassified(evaluation.labels,
                                                        evaluation.probabilities), 25)
        new = median_seconds(lambda: plots.misclassified_grid(
            images, records, root / "new.png", count=25, title="Most confident mistakes"),
            repeat=args.repeat)
        old = median_seconds(lambda: reference_mistake_grid(images, records, root / "old.png"),
                             repeat=args.repeat)
        print_table("Mistake grid, 25 digits", [
            ("one subplot per digit (reference)", f"{old * 1e3:.0f} ms", "1.0x"),
            ("one composed image (plots.misclassified_grid)", f"{new * 1e3:.0f} ms",
             f"{old / new:.1f}x faster"),
        ], ("grid", "median", "ratio"))


if __name__ == "__main__":
    main()
