"""Run a recipe end to end: train, save, evaluate, plot, report — into one run directory.

    runs/<recipe>-<timestamp>/
        config.json  model.safetensors  checkpoint.safetensors  history.json  history.csv
        metrics.json  misclassified.json  *.png  report.md

Nothing is lost on a crash: a checkpoint is written after every epoch (atomically), Ctrl-C
leaves it in place and says how to resume, and a diverging loss stops training with the
last good weights saved.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab import __version__
from mnistlab.atomic import atomic_write_text
from mnistlab.datasets import get_dataset, load_data
from mnistlab.errors import MnistlabError, TrainingDivergedError
from mnistlab.experiments.context import Context
from mnistlab.experiments.recipes import get_recipe, resolve_config
from mnistlab.reporting.runs import (
    evaluate_model,
    first_layer_kernel,
    locked_run_dir,
    new_run_dir,
    write_config,
    write_evaluation,
    write_history,
    write_report,
)
from mnistlab.training.callbacks import Checkpoint, Resume

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
# When set, a file the run writes its phase stamps to (time.time() when each phase ended,
# as JSON, with the recipe's own notes): benchmarks/bench_process.py reads it.
PHASES_ENV = "MNISTLAB_PHASES"
_stamps: dict[str, float] = {}


def _stamp(phase: str) -> None:
    _stamps[phase] = time.time()


def _write_stamps(notes: dict[str, Any]) -> None:
    path = os.environ.get(PHASES_ENV)
    if path:
        Path(path).write_text(json.dumps({"stamps": _stamps, "notes": _json_notes(notes)}))


def _json_notes(notes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in notes.items() if isinstance(v, int | float | str | bool)}


@dataclass
class RunResult:
    """What a finished run measured."""

    run_dir: Path
    recipe: str
    test_accuracy: float
    train_accuracy: float | None
    train_seconds: float
    metrics: dict[str, Any]


def train_recipe(
    name: str,
    overrides: dict[str, str] | None = None,
    *,
    dataset: str = "mnist",
    engine: str = "numpy",
    device: str | None = None,
    out: Path | None = None,
    runs_root: Path = Path("runs"),
    verbose: int = 1,
) -> RunResult:
    """Train recipe ``name`` (with ``overrides``) and write its run directory."""
    _stamp("start")
    recipe = get_recipe(name)
    _check_supported(recipe, dataset, engine)
    config = resolve_config(recipe, overrides or {})
    run_dir = out or new_run_dir(recipe.name, runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    with locked_run_dir(run_dir):  # held until the run ends: a second run refuses at once
        write_config(
            run_dir,
            {
                "recipe": recipe.name,
                "title": recipe.title,
                "reference": recipe.reference,
                "dataset": dataset,
                "engine": engine,
                "device": device,
                "config": config,
                "mnistlab": __version__,
                "python": platform.python_version(),
            },
        )
        return _run(run_dir, resume=False, verbose=verbose)


def resume_run(run_dir: Path, *, verbose: int = 1) -> RunResult:
    """Continue an interrupted run from its last checkpoint (same config, same seed)."""
    if not (run_dir / "config.json").exists():
        raise MnistlabError(f"{run_dir}: not a run directory (no config.json)")
    if not (run_dir / CHECKPOINT).exists():
        raise MnistlabError(f"{run_dir}: no checkpoint to resume from ({CHECKPOINT})")
    with locked_run_dir(run_dir):
        return _run(run_dir, resume=True, verbose=verbose)


def _run(run_dir: Path, *, resume: bool, verbose: int) -> RunResult:
    saved = json.loads((run_dir / "config.json").read_text())
    recipe = get_recipe(saved["recipe"])
    callbacks: list[Any] = [Checkpoint(run_dir / CHECKPOINT)]
    if resume:
        callbacks.insert(0, Resume(run_dir / CHECKPOINT))
    context = Context(
        config=saved["config"],
        dataset=saved["dataset"],
        engine=saved["engine"],
        device=saved["device"],
        callbacks=callbacks,
        verbose=verbose,
    )
    say = print if verbose else (lambda *_: None)
    say(f"{recipe.name}: {recipe.title}  (reference: {recipe.reference})")
    say(f"run directory: {run_dir}")
    _stamp("setup")
    started = time.perf_counter()
    try:
        trained = recipe.train(context)
    except KeyboardInterrupt:
        _write_status(run_dir, "interrupted")
        if (run_dir / CHECKPOINT).exists():
            print(
                f"\nmnistlab: interrupted; the last finished epoch is checkpointed in "
                f"{run_dir / CHECKPOINT}: continue with `mnistlab train --resume {run_dir}`",
                file=sys.stderr,
            )
        else:
            print("\nmnistlab: interrupted before the first epoch ended", file=sys.stderr)
        raise
    except TrainingDivergedError as error:
        _write_status(run_dir, "diverged", str(error))
        if context.model is not None:  # fit stops before applying a non-finite step
            context.model.save(run_dir / MODEL)
        raise MnistlabError(
            f"training diverged: {error}. The last good weights are saved in {run_dir / MODEL}; "
            "try a smaller learning rate (--set lr=...)"
        ) from error
    train_seconds = time.perf_counter() - started
    _stamp("recipe")
    return _finish(run_dir, saved, trained, train_seconds, verbose)


def _finish(run_dir: Path, saved: dict, trained: Any, train_seconds: float, verbose: int):
    recipe = get_recipe(saved["recipe"])
    model = trained.model
    model.save(run_dir / MODEL)
    if trained.history is not None:
        write_history(run_dir, trained.history)
    _stamp("saved")
    dataset = get_dataset(saved["dataset"])
    _, (x_test, y_test) = load_data(dataset.name)
    limit = saved["config"].get("test_limit")
    x_test, y_test = x_test[:limit], y_test[:limit]
    _stamp("test_data")
    evaluation = evaluate_model(model, x_test, y_test, class_names=dataset.class_names)
    _stamp("evaluation")
    metrics = write_evaluation(
        run_dir,
        evaluation,
        x_test,
        class_names=dataset.class_names,
        first_layer_W=first_layer_kernel(model),
        extra={
            "recipe": recipe.name,
            "dataset": dataset.name,
            "split": "test",
            "engine": saved["engine"],
            "reference": recipe.reference,
            "reference_accuracy": recipe.reference_accuracy,
            "reference_metric": recipe.reference_metric,
            "train_accuracy": trained.train_accuracy,
            "training_time_s": round(train_seconds, 3),
            "params": int(model.count_params()),
            "epochs_run": len((trained.history or {}).get("epoch", [])),
            **trained.notes,
        },
    )
    _write_status(run_dir, "finished")
    write_report(run_dir)
    _stamp("written")
    _write_stamps(trained.notes)
    if verbose:
        shown = f"test accuracy {metrics['accuracy']:.4f}"
        if trained.train_accuracy is not None:
            shown += f", train accuracy {trained.train_accuracy:.4f}"
        print(f"{recipe.name}: {shown} in {train_seconds:.1f} s (reference: {recipe.reference})")
        print(f"report: {run_dir / 'report.md'}")
    return RunResult(
        run_dir, recipe.name, metrics["accuracy"], trained.train_accuracy, train_seconds, metrics
    )


def _check_supported(recipe: Any, dataset: str, engine: str) -> None:
    get_dataset(dataset)
    if dataset not in recipe.datasets:
        raise MnistlabError(
            f"recipe {recipe.name} is for {', '.join(recipe.datasets)} only, not {dataset}"
        )
    if engine not in recipe.engines:
        raise MnistlabError(f"recipe {recipe.name} runs on {', '.join(recipe.engines)} only")


def _write_status(run_dir: Path, status: str, detail: str | None = None) -> None:
    record = {"status": status, "detail": detail, "argv": sys.argv}
    atomic_write_text(run_dir / "status.json", json.dumps(record, indent=2))
