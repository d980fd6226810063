"""`mnistlab recipes`, `mnistlab train` and `mnistlab compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnistlab.datasets import DATASETS
from mnistlab.errors import MnistlabError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `recipes`, `train` and `compare` commands."""
    recipes = subparsers.add_parser("recipes", help="list the named experiments")
    recipes.set_defaults(func=cmd_recipes)

    train = subparsers.add_parser(
        "train",
        help="train a recipe into a run directory",
        description="Train a named recipe (see `mnistlab recipes`) and write its run "
        "directory: config, model, history, metrics, plots and report.md. A checkpoint is "
        "saved after every epoch; --resume continues an interrupted run.",
    )
    what = train.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", help="recipe name")
    what.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    train.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    train.add_argument("--engine", default="numpy", choices=["numpy", "torch"])
    train.add_argument("--device", help="torch device: cpu or cuda (default: cuda if present)")
    train.add_argument("--epochs", help="override the recipe's epochs")
    train.add_argument("--batch-size", help="override the recipe's batch size")
    train.add_argument("--lr", help="override the recipe's learning rate")
    train.add_argument("--seed", help="override the recipe's seed")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe setting (repeatable), e.g. --set limit=2000",
    )
    train.add_argument("--out", type=Path, help="run directory (default: runs/<recipe>-<time>)")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=cmd_train)

    compare = subparsers.add_parser(
        "compare",
        help="compare runs in one table and one plot",
        description="Compare finished runs (run directories), or train the named recipes "
        "first (--recipes a,b,c with any --set overrides) and compare those.",
    )
    compare.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR")
    compare.add_argument("--recipes", help="comma-separated recipe names to train and compare")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    compare.add_argument("--engine", default="numpy", choices=["numpy", "torch"])
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), help="output dir")
    compare.set_defaults(func=cmd_compare)


def cmd_recipes(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mnistlab.cli.output import console
    from mnistlab.experiments.recipes import RECIPES

    table = Table(title="mnistlab recipes")
    for column in ("name", "experiment", "reference", "settings"):
        table.add_column(column, overflow="fold")
    for recipe in RECIPES.values():
        settings = ", ".join(f"{k}={v}" for k, v in recipe.defaults.items())
        table.add_row(recipe.name, recipe.title, recipe.reference, settings)
    console().print(table)
    return 0


def overrides_from(args: argparse.Namespace) -> dict[str, str]:
    """The command line's recipe overrides as strings, keyed by setting name."""
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MnistlabError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip().replace("-", "_")] = value.strip()
    for flag in ("epochs", "batch_size", "lr", "seed"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from mnistlab.experiments.runner import resume_run, train_recipe

    verbose = 0 if args.quiet else 1
    if args.resume:
        resume_run(args.resume, verbose=verbose)
    else:
        train_recipe(
            args.recipe,
            overrides_from(args),
            dataset=args.dataset,
            engine=args.engine,
            device=args.device,
            out=args.out,
            verbose=verbose,
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mnistlab.cli.output import console
    from mnistlab.experiments.runner import train_recipe
    from mnistlab.reporting.plots import compare_curves

    run_dirs = list(args.run_dirs)
    if args.recipes:
        for name in [n.strip() for n in args.recipes.split(",") if n.strip()]:
            run_dirs.append(train_recipe(name, overrides_from(args), engine=args.engine).run_dir)
    if not run_dirs:
        raise MnistlabError("nothing to compare: give RUN_DIRs or --recipes a,b,c")
    table = Table(title="mnistlab compare (test accuracy on the full test split)")
    for column in (
        "run",
        "recipe",
        "params",
        "epochs",
        "train s",
        "test acc",
        "errors",
        "reference",
    ):
        table.add_column(
            column, justify="left" if column in ("run", "recipe", "reference") else "right"
        )
    curves = {}
    for run_dir in run_dirs:
        metrics = _read_json(run_dir / "metrics.json")
        history = _read_json(run_dir / "history.json", required=False)
        table.add_row(
            run_dir.name,
            str(metrics.get("recipe", "?")),
            f"{metrics.get('params', 0):,}",
            str(metrics.get("epochs_run", "")),
            f"{metrics.get('training_time_s', 0):.1f}",
            f"{metrics['accuracy']:.4f}",
            str(metrics.get("errors", "")),
            _reference(metrics),
        )
        if history:
            curves[run_dir.name] = history
    console().print(table)
    if curves:
        path = compare_curves(curves, args.out / "compare_curves.png")
        print(f"curves: {path}")
    return 0


def _reference(metrics: dict) -> str:
    value, metric = metrics.get("reference_accuracy"), metrics.get("reference_metric", "")
    return "" if value is None else f"{value:.4f} {metric.split('_')[0]}"


def _read_json(path: Path, required: bool = True) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise MnistlabError(
                f"{path.parent}: not a finished run ({path.name} missing)"
            ) from None
        return None
    except ValueError as error:
        raise MnistlabError(f"{path}: not valid JSON ({error})") from error
