"""`mnistlab eval MODEL`: score a saved model on a dataset split and write a run directory
(metrics.json, misclassified.json, pictures, report.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlab.cli.args import about, check_output_dir, positive_int, random_seed
from mnistlab.datasets import DATASETS
from mnistlab.engines import ENGINES, TORCH_HINT, torch_available
from mnistlab.errors import MnistlabError, ModelFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` command."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a saved model: accuracy, loss, mistakes, plots and a report",
        description="Evaluate a saved model (.safetensors written by mnistlab) on a dataset "
        "split. Writes metrics.json, misclassified.json, the confusion matrix, the mistakes, "
        "sample digits and report.md into --out (default: runs/eval-<model>-<time>/). "
        "An existing config.json in --out (a training run's) is kept.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="saved model file")
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS),
                        help="(default: mnist)")
    parser.add_argument("--split", default="test", choices=["test", "train"],
                        help="(default: test)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="rows per inference chunk (default: automatic)")
    parser.add_argument("--engine", default="numpy", choices=ENGINES,
                        help="engine to run the model on (default: numpy)")
    parser.add_argument("--seed", type=random_seed, default=0,
                        help="seed of the random pick of mistakes (default: 0)")
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Load, evaluate, write the files, print the numbers and where they are."""
    from mnistlab.datasets import get_dataset, load_data
    from mnistlab.engines import load_model
    from mnistlab.reporting import runs

    path: Path = args.model
    if args.out is not None:
        check_output_dir(args.out, "--out")
    if args.engine == "torch" and not torch_available():
        raise MnistlabError(f"--engine torch: torch is not installed; {TORCH_HINT}")
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "no such model file"
        raise ModelFileError(f"MODEL {path}: {what}")
    with about("MODEL"):
        model = load_model(path, engine=args.engine)
        runs.check_model_input(model)

    train, test = load_data(args.dataset)
    images, labels = test if args.split == "test" else train
    class_names = list(get_dataset(args.dataset).class_names)
    evaluation = runs.evaluate_model(model, images, labels, class_names=class_names,
                                     batch_size=args.batch_size)

    out = _output_dir(args.out, path)
    if not (out / runs.CONFIG).exists():  # keep a training run's own config
        runs.write_config(out, {
            "title": f"{path.name} on {args.dataset} ({args.split} split)",
            "command": "eval",
            "model_file": str(path),
            "dataset": args.dataset,
            "split": args.split,
            "engine": args.engine,
            "batch_size": args.batch_size,
            "seed": args.seed,
        })
    extra = {"dataset": args.dataset, "split": args.split, "model_file": str(path),
             "engine": args.engine}
    extra.update(_training_time(out))
    runs.write_evaluation(out, evaluation, images, class_names=class_names, seed=args.seed,
                          first_layer_W=runs.first_layer_kernel(model), extra=extra)
    report = runs.write_report(out)

    n, errors = evaluation.num_samples, evaluation.errors
    print(f"{path.name} on {args.dataset} {args.split} ({n:,} images)")
    print(f"accuracy: {evaluation.accuracy:.4f} ({n - errors:,}/{n:,})")
    print(f"loss:     {evaluation.loss:.4f} ({evaluation.loss_name})")
    print(f"errors:   {errors:,}")
    print(f"output:   {out}")
    print(f"report:   {report}")
    return 0


def _output_dir(out: Path | None, model_path: Path) -> Path:
    from mnistlab.reporting.runs import new_run_dir

    if out is None:
        return new_run_dir(f"eval-{model_path.stem}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MnistlabError(f"--out {out}: exists and is not a directory") from None
    except OSError as exc:
        raise MnistlabError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    return out


def _training_time(out: Path) -> dict[str, float]:
    """The training time a training run's metrics.json recorded, kept when re-evaluating."""
    import json

    from mnistlab.reporting.runs import METRICS, TRAINING_TIME_KEYS

    try:
        old = json.loads((out / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict):
        return {}
    return {k: old[k] for k in TRAINING_TIME_KEYS if isinstance(old.get(k), int | float)}
