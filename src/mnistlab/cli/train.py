"""`mnistlab recipes`, `mnistlab train` and `mnistlab compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mnistlab.cli.args import DEVICES, check_output_dir, device
from mnistlab.datasets import DATASETS
from mnistlab.engines import ENGINES
from mnistlab.errors import MnistlabError

FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed"}


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
    train.add_argument("--dataset", choices=sorted(DATASETS), help="(default: mnist)")
    train.add_argument("--engine", choices=ENGINES, help="(default: numpy)")
    train.add_argument(
        "--device", type=device, help=f"torch device: {DEVICES} (default: auto, cuda if present)"
    )
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
    compare.add_argument("--engine", default="numpy", choices=ENGINES)
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
    return _overrides(args)[0]


def _overrides(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """The overrides, and the option each came from (``--set batch-size``, ``--lr``)."""
    overrides, options = {}, {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MnistlabError(f"--set {item!r}: expected KEY=VALUE, e.g. --set limit=2000")
        setting = key.strip().replace("-", "_")
        overrides[setting], options[setting] = value.strip(), f"--set {key.strip()}"
    for setting, flag in FLAGS.items():
        value = getattr(args, setting, None)
        if value is not None:
            overrides[setting], options[setting] = value, flag
    return overrides, options


def cmd_train(args: argparse.Namespace) -> int:
    from mnistlab.experiments.runner import resume_run, train_recipe

    verbose = 0 if args.quiet else 1
    if args.resume:
        _check_resume(args)
        resume_run(args.resume, verbose=verbose)
        return 0
    dataset, engine = args.dataset or "mnist", args.engine or "numpy"
    overrides = check_training(args.recipe, args, dataset=dataset, engine=engine)
    _check_device(args.device, engine)
    if args.out is not None:
        check_output_dir(args.out, "--out")
    train_recipe(
        args.recipe,
        overrides,
        dataset=dataset,
        engine=engine,
        device=args.device,
        out=args.out,
        verbose=verbose,
    )
    return 0


def check_training(
    name: str, args: argparse.Namespace, *, dataset: str = "mnist", engine: str = "numpy"
) -> dict[str, str]:
    """Everything about a training request that can be checked before any data is read:
    the recipe, whether it takes this dataset and engine, and every override's value.
    Returns the overrides; MnistlabError names the option at fault."""
    from mnistlab.engines import TORCH_HINT, torch_available
    from mnistlab.experiments.recipes import RECIPES, resolve_config

    recipe = RECIPES.get(name)
    if recipe is None:
        raise MnistlabError(f"--recipe {name}: unknown recipe; known recipes: {', '.join(RECIPES)}")
    if dataset not in recipe.datasets:
        raise MnistlabError(
            f"--dataset {dataset}: recipe {name} trains on {', '.join(recipe.datasets)} only"
        )
    if engine not in recipe.engines:
        raise MnistlabError(
            f"--engine {engine}: recipe {name} runs on {', '.join(recipe.engines)} only"
        )
    if engine == "torch" and not torch_available():
        raise MnistlabError(f"--engine torch: torch is not installed; {TORCH_HINT}")
    overrides, options = _overrides(args)
    config = resolve_config(recipe, overrides, options=options)
    if config.get("precision") == "bfloat16" and engine != "torch":
        option = options.get("precision", "--set precision")
        raise MnistlabError(
            f"{option}: bfloat16 needs --engine torch; the numpy engine takes auto or float32"
        )
    return overrides


def _check_device(name: str | None, engine: str, option: str = "--device") -> None:
    """--device: a device the engine runs on, and one this machine has."""
    if name is None or name in ("cpu", "auto"):
        return
    if engine != "torch":
        raise MnistlabError(
            f"{option} {name}: the {engine} engine runs on the CPU only; use --engine torch "
            f"(devices: {DEVICES})"
        )
    from mnistlab.engines import EngineUnavailableError
    from mnistlab.engines.torch import resolve_device

    try:
        resolve_device(name)
    except (EngineUnavailableError, ValueError) as error:
        raise MnistlabError(f"{option} {name}: {error}") from None


def _check_resume(args: argparse.Namespace) -> None:
    """--resume RUN_DIR: a run with a checkpoint, and no new settings beside it."""
    given = [flag for setting, flag in FLAGS.items() if getattr(args, setting) is not None]
    given += ["--set"] * bool(args.set)
    given += [f"--{name}" for name in ("dataset", "engine", "device", "out")
              if getattr(args, name) is not None]  # fmt: skip
    if given:
        raise MnistlabError(
            f"--resume continues a run with its own settings; it takes no {given[0]} "
            "(start a new run with --recipe to change them)"
        )
    saved = check_run_dir(args.resume, "--resume", need="config.json")
    from mnistlab.experiments.recipes import EXTRA_SETTINGS, RECIPES, resolve_config
    from mnistlab.experiments.runner import CHECKPOINT

    where = f"--resume {args.resume}: config.json"
    if saved["dataset"] not in DATASETS or saved["engine"] not in ENGINES:
        raise MnistlabError(f"{where}: unknown dataset or engine ({saved['dataset']!r}, "
                            f"{saved['engine']!r}); datasets: {', '.join(DATASETS)}, "
                            f"engines: {', '.join(ENGINES)}")  # fmt: skip
    try:
        saved_device = None if saved.get("device") is None else device(str(saved["device"]))
    except argparse.ArgumentTypeError as error:
        raise MnistlabError(f"{where} device: {error}") from None
    _check_device(saved_device, saved["engine"], option=f"{where} device")
    recipe = RECIPES[saved["recipe"]]
    settings = {  # the saved settings, checked as the command line's would be
        key: str(value)
        for key, value in saved["config"].items()
        if (key in recipe.defaults or key in EXTRA_SETTINGS) and value is not None
    }
    resolve_config(recipe, settings, options={key: f"{where} {key}" for key in settings})

    if not (args.resume / CHECKPOINT).is_file():
        raise MnistlabError(
            f"--resume {args.resume}: no checkpoint to resume from ({CHECKPOINT} missing)"
        )


def check_run_dir(path: Path, option: str, need: str) -> dict:
    """``path`` as a run directory whose ``need`` (config.json, metrics.json) is a JSON
    object; that object. MnistlabError names ``option`` and what is wrong."""
    if not path.is_dir():
        what = "no such directory" if not path.exists() else "not a directory"
        raise MnistlabError(f"{option} {path}: {what}; expected a run directory")
    record = _read_json(path / need, option=option)
    if not isinstance(record, dict):
        raise MnistlabError(f"{option} {path}: {need} is not a JSON object")
    if need == "config.json":
        from mnistlab.experiments.recipes import RECIPES

        missing = [k for k in ("recipe", "config", "dataset", "engine") if k not in record]
        if missing or record["recipe"] not in RECIPES or not isinstance(record["config"], dict):
            raise MnistlabError(
                f"{option} {path}: config.json is not a mnistlab run's "
                f"({'no ' + ', '.join(missing) if missing else 'unknown recipe or config'})"
            )
    if need == "metrics.json" and not _is_number(record.get("accuracy")):
        raise MnistlabError(f"{option} {path}: metrics.json has no accuracy; not a finished run")
    return record


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mnistlab.cli.output import console
    from mnistlab.experiments.runner import train_recipe
    from mnistlab.reporting.plots import compare_curves

    names = [n.strip() for n in (args.recipes or "").split(",") if n.strip()]
    if args.recipes is not None and not names:
        raise MnistlabError(f"--recipes {args.recipes!r}: expected recipe names like a,b,c")
    if not args.run_dirs and not names:
        raise MnistlabError("nothing to compare: give RUN_DIRs or --recipes a,b,c")
    if args.set and not names:
        raise MnistlabError("--set applies to --recipes only (finished runs keep their settings)")
    check_output_dir(args.out, "--out")
    for run_dir in args.run_dirs:  # all checked before training anything
        check_run_dir(run_dir, "RUN_DIR", need="metrics.json")
    for name in names:
        check_training(name, args, engine=args.engine)
    run_dirs = list(args.run_dirs)
    for name in names:
        run_dirs.append(train_recipe(name, overrides_from(args), engine=args.engine).run_dir)
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
        metrics = check_run_dir(run_dir, "RUN_DIR", need="metrics.json")
        history = _read_json(run_dir / "history.json", required=False)
        history = history if isinstance(history, dict) else None
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


def _read_json(path: Path, required: bool = True, option: str = "RUN_DIR") -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            what = "a run directory" if path.name == "config.json" else "a finished run"
            raise MnistlabError(
                f"{option} {path.parent}: not {what} ({path.name} missing)"
            ) from None
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise MnistlabError(f"{option} {path.parent}: cannot read {path.name} ({error})") from None
    except ValueError as error:
        raise MnistlabError(
            f"{option} {path.parent}: {path.name} is not valid JSON ({error})"
        ) from None
