"""Run directories: everything a training run or an evaluation leaves behind for a person
to look at afterwards, in one folder.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      config.json            what was run                       (write_config)
      history.json/.csv      per-epoch and per-step numbers     (write_history)
      learning_curves.png
      metrics.json           loss, accuracy, per class, confusion matrix, mistakes
      misclassified.json     every mistake                      (write_evaluation)
      confusion_matrix.png  misclassified.png  misclassified_random.png
      first_layer_weights.png  digits.png
      report.md              all of it on one page              (write_report)

Every file is written atomically (``mnistlab.atomic``), so a reader never sees half of
one; JSON is strict (``allow_nan=False``: NaN and infinities become ``null``). A run holds
``locked_run_dir`` for as long as it writes, so two runs never share a directory.

One module, though long: it is the run directory's whole format, each file written by
one function here and read back by ``compare`` and ``--resume``; splitting it would split
that format.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.atomic import atomic_write_text, clean_stale_temporaries
from mnistlab.datasets import scale_pixels
from mnistlab.errors import MnistlabError, ModelFileError
from mnistlab.reporting import plots
from mnistlab.reporting.metrics import (
    Misclassification,
    evaluation_report,
    misclassified,
    most_confident_mistakes,
    sample_mistakes,
)

__all__ = [
    "CONFIG",
    "HISTORY_CSV",
    "HISTORY_JSON",
    "LOCK",
    "METRICS",
    "MISCLASSIFIED",
    "REPORT",
    "Evaluation",
    "check_model_input",
    "cross_entropy",
    "evaluate_model",
    "first_layer_kernel",
    "locked_run_dir",
    "new_run_dir",
    "write_config",
    "write_evaluation",
    "write_history",
    "write_report",
]

PathLike = str | os.PathLike[str]

CONFIG = "config.json"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
LEARNING_CURVES = "learning_curves.png"
METRICS = "metrics.json"
MISCLASSIFIED = "misclassified.json"
CONFUSION_PNG = "confusion_matrix.png"
MISTAKES_PNG = "misclassified.png"
RANDOM_MISTAKES_PNG = "misclassified_random.png"
WEIGHTS_PNG = "first_layer_weights.png"
DIGITS_PNG = "digits.png"
REPORT = "report.md"
LOCK = ".lock"  # held (flock) by the run writing the directory; holds its pid

IMAGE_PIXELS = 28 * 28
GRID_COUNT = 25  # digits per picture
METRICS_MISTAKES = 100  # most confident mistakes in metrics.json; all in misclassified.json
EPS = 1e-7  # probabilities are clipped to [EPS, 1] before log: the course's guard
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")  # history.csv column order
TRAINING_TIME_KEYS = ("training_time_s", "train_time_s", "training_seconds", "train_seconds",
                      "training_time")


# ------------------------------------------------------------------------ the directory


def new_run_dir(name: str, root: PathLike = Path("runs"), *, now: datetime | None = None) -> Path:
    """Create and return ``root/<name>-<YYYYmmdd-HHMMSS>`` (local time).

    Unique even when several runs start in the same second, in one process or many:
    the directory is claimed with an atomic ``mkdir`` and, when taken, the next of
    ``-2``, ``-3``, ... is tried. ``name`` is made filesystem-safe (letters, digits,
    ``.``, ``_``, ``-``); ``now`` fixes the time stamp (tests).
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    if not slug:
        raise ValueError(f"a run needs a name with at least one letter or digit, got {name!r}")
    base = f"{slug}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def locked_run_dir(run_dir: PathLike) -> Iterator[Path]:
    """Hold ``run_dir`` for one run: an exclusive ``flock`` on ``run_dir/.lock`` for the whole
    block, so that a second run (another process, or this one) refuses at once with
    ``MnistlabError: <dir> is in use by another run (pid N)`` instead of mixing its files
    with the first's. On entry, temporaries that killed writers left there are removed
    (``atomic.clean_stale_temporaries``); on exit the lock file is removed. The kernel drops
    the lock when its process dies, however it dies, so a killed run never blocks the next.
    Without ``fcntl`` (Windows) the block runs unlocked.
    """
    run_dir = Path(run_dir)
    fd = _lock(run_dir)
    try:
        clean_stale_temporaries(run_dir)
        yield run_dir
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(run_dir / LOCK)  # while still holding it: see _lock
            os.close(fd)


def _lock(run_dir: Path) -> int | None:
    """The descriptor of ``run_dir/.lock``, exclusively locked and holding this pid."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path = run_dir / LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _attempt in range(100):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise MnistlabError(f"{run_dir}: cannot lock the run directory "
                                f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise MnistlabError(f"{run_dir} is in use by another run (pid "
                                f"{holder if holder.isdigit() else 'unknown'})") from None
        # The run before may have removed the file between our open and our lock: then we hold
        # a lock on a file nobody else will open, and must lock the one now at the path.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise MnistlabError(f"{run_dir}: cannot lock the run directory (its lock file keeps "
                        "changing)")


def write_config(run_dir: PathLike, config: Mapping[str, Any]) -> Path:
    """config.json: what was run (sorted keys, indent 2), so the run can be repeated."""
    return _write_json(Path(run_dir) / CONFIG, dict(config), sort_keys=True)


# ------------------------------------------------------------------------------ history


def write_history(run_dir: PathLike, history: Any) -> dict[str, Any]:
    """history.json, history.csv and learning_curves.png from what fit recorded.

    ``history`` is a ``training.History``, its ``to_dict()`` form, or a Keras-style
    per-epoch dict of lists. history.json keeps the ``to_dict()`` form, step-level
    losses included; history.csv has one row per epoch (``epoch`` counted from 1, as
    the progress lines print it) and a column per recorded key. The picture is drawn
    whenever there is anything to draw, including step-level losses only (one epoch
    of per-sample training). Returns the JSON-safe history dict written.
    """
    run_dir = Path(run_dir)
    data = _history_dict(history)
    _write_json(run_dir / HISTORY_JSON, data)
    atomic_write_text(run_dir / HISTORY_CSV, _history_csv(data))
    if any(data["history"].values()) or data["steps"]:
        plots.learning_curves(data, run_dir / LEARNING_CURVES)
    return _json_safe(data)


def _history_dict(history: Any) -> dict[str, Any]:
    """{"history": {key: [floats]}, "epoch": [ints], "steps": [[step, loss]]} from any form."""
    if hasattr(history, "to_dict") and not isinstance(history, Mapping):
        history = history.to_dict()
    if not isinstance(history, Mapping):
        raise ValueError(f"history must be a History or a dict, got {type(history).__name__}")
    if isinstance(history.get("history"), Mapping):
        epochs_logs, epoch, steps = history["history"], history.get("epoch"), history.get("steps")
    else:  # Keras History.history: the per-epoch lists themselves
        epochs_logs, epoch, steps = history, None, None
    logs: dict[str, list[float]] = {}
    for key, values in epochs_logs.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
            continue  # not a per-epoch series
        logs[str(key)] = [float(v) for v in values]
    n = max((len(v) for v in logs.values()), default=0)
    epoch_list = [int(e) for e in epoch] if epoch else list(range(n))
    if len(epoch_list) < n:
        raise ValueError(f"history has {n} epochs of values but {len(epoch_list)} epoch numbers")
    step_list = [[int(s), float(loss)] for s, loss in (steps or ())]
    return {"history": logs, "epoch": epoch_list, "steps": step_list}


def _history_csv(data: Mapping[str, Any]) -> str:
    logs: dict[str, list[float]] = data["history"]
    keys = [k for k in EPOCH_KEYS if k in logs] + sorted(k for k in logs if k not in EPOCH_KEYS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row, epoch in enumerate(data["epoch"]):
        cells = [repr(logs[k][row]) if row < len(logs[k]) else "" for k in keys]
        writer.writerow([epoch + 1, *cells])
    return out.getvalue()


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """A model's answers on a labelled image set and what they add up to."""

    probabilities: np.ndarray  # (N, C) float64: the model's outputs (probabilities after softmax)
    labels: np.ndarray  # (N,) int64
    loss: float  # NaN when undefined
    loss_name: str  # the compiled loss's name, else "categorical_crossentropy"
    accuracy: float
    report: dict[str, Any]  # metrics.evaluation_report(...): JSON-safe, every mistake listed
    seconds: float = 0.0  # time spent predicting

    @property
    def predictions(self) -> np.ndarray:
        """Predicted classes (N,)."""
        return self.probabilities.argmax(axis=1)

    @property
    def errors(self) -> int:
        return int(self.report["errors"])

    @property
    def num_samples(self) -> int:
        return int(self.report["num_samples"])


def check_model_input(model: Any) -> tuple[int, ...]:
    """The model's input shape (no batch axis), if 28x28 images can fill it; else
    ``ModelFileError`` saying what the model wants instead."""
    spec = model.spec()
    shape = tuple(int(d) for d in spec["input_shape"])
    if math.prod(shape) != IMAGE_PIXELS:
        want = "x".join(map(str, shape))
        raise ModelFileError(f"the model takes inputs of shape {want} ({math.prod(shape)} "
                             f"values), which 28x28 images ({IMAGE_PIXELS} pixels) cannot fill")
    return shape


def evaluate_model(
    model: Any,
    images_uint8: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str],
    batch_size: int | None = None,
) -> Evaluation:
    """Run ``model`` on uint8 images (N, 28, 28) and score its answers against ``labels``.

    The images become model input exactly as in recognition (``datasets.scale_pixels``
    by the spec's preprocess scale, then its input shape). The loss is the model's own when it
    is compiled, else categorical cross-entropy of its outputs (clipped to [1e-7, 1];
    outputs that are not a distribution are first normalized: sigmoid scores divided
    by their sum, anything outside [0, 1] put through softmax).
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(images) or len(y) == 0:
        raise ValueError(f"need one label per image (N > 0), got {y.shape} for {len(images)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer classes, got {y.dtype}")
    y = y.astype(np.int64)
    check_model_input(model)
    spec = model.spec()
    x = scale_pixels(images, spec["preprocess"].get("scale", "unit"))
    x = x.reshape(len(images), *spec["input_shape"])
    started = time.perf_counter()
    outputs = np.asarray(model.predict(x, batch_size=batch_size), dtype=np.float64)
    seconds = time.perf_counter() - started
    k = len(class_names)
    if outputs.shape != (len(images), k):
        raise ModelFileError(f"the model gives outputs of shape {outputs.shape[1:]} per image, "
                             f"but the dataset has {k} classes")
    if not np.isfinite(outputs).all():
        raise ModelFileError("the model's outputs contain NaN or infinite values")
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        loss = float(model.evaluate(x, y, batch_size=batch_size, return_dict=True)["loss"])
        loss_name = str(getattr(compiled, "name", "") or type(compiled).__name__)
    else:
        loss, loss_name = cross_entropy(outputs, y), "categorical_crossentropy"
    report = evaluation_report(y, outputs, loss if math.isfinite(loss) else None,
                               class_names=class_names)
    return Evaluation(probabilities=outputs, labels=y, loss=loss, loss_name=loss_name,
                      accuracy=float(report["accuracy"]), report=report, seconds=seconds)


def cross_entropy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), computed stably from model outputs (see evaluate_model)."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.min() >= 0 and out.max() <= 1:
        sums = out.sum(axis=1, keepdims=True)
        probs = out / np.where(sums > 0, sums, 1.0)
    else:  # logits
        shifted = out - out.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
    picked = np.clip(probs[np.arange(len(out)), labels], EPS, 1.0)
    return float(-np.mean(np.log(picked)))


def first_layer_kernel(model: Any) -> np.ndarray | None:
    """The first weighted layer's W when it can be shown as images: a Dense reading the
    pixels (784 inputs: one 28x28 image per unit) or a Conv2D on one channel. Else None."""
    spec = model.spec()
    for index, layer in enumerate(spec["layers"]):
        kind = layer.get("type")
        if kind not in ("Dense", "Conv2D"):
            if kind in ("Flatten", "Dropout", "Activation"):
                continue
            return None  # a pooling layer first: the weights no longer see pixels
        w = model.named_weights().get(f"{index}.W")
        if w is None:
            return None
        if kind == "Dense" and w.ndim == 2 and w.shape[0] == IMAGE_PIXELS:
            return w
        if kind == "Conv2D" and w.ndim == 4 and w.shape[1] == 1:
            return w
        return None
    return None


def write_evaluation(
    run_dir: PathLike,
    evaluation: Evaluation,
    images_uint8: np.ndarray,
    *,
    class_names: Sequence[str],
    seed: int | None = 0,
    first_layer_W: np.ndarray | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json, misclassified.json and the pictures of an evaluation; returns metrics.

    metrics.json holds loss, accuracy, errors, per-class accuracy, the confusion matrix
    and the ``METRICS_MISTAKES`` most confident mistakes (index, label, prediction,
    confidence; sorted by index), plus ``extra`` (e.g. dataset, split,
    ``training_time_s``); misclassified.json lists every mistake. ``seed`` fixes the
    random pick in misclassified_random.png; first_layer_weights.png is drawn when
    ``first_layer_W`` is given (see ``first_layer_kernel``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images_uint8)
    if len(images) != evaluation.num_samples:
        raise ValueError(f"got {len(images)} images for an evaluation of "
                         f"{evaluation.num_samples} samples")
    names = [str(c) for c in class_names]
    records = misclassified(evaluation.labels, evaluation.probabilities)
    listed = sorted(most_confident_mistakes(records, METRICS_MISTAKES), key=lambda r: r.index)

    metrics: dict[str, Any] = {}
    for key, value in evaluation.report.items():
        metrics[key] = [r.to_dict() for r in listed] if key == "misclassified" else value
        if key == "errors":  # the loss next: null when undefined, and which loss it is
            metrics["loss"] = evaluation.report.get("loss")
            metrics["loss_name"] = evaluation.loss_name
    metrics["misclassified_listed"] = len(listed)
    metrics["eval_seconds"] = round(evaluation.seconds, 4)
    metrics.update(extra or {})
    metrics = _json_safe(metrics)
    _write_json(run_dir / METRICS, metrics)
    _write_json(run_dir / MISCLASSIFIED, {
        "num_samples": evaluation.num_samples,
        "errors": len(records),
        "class_names": names,
        "misclassified": [r.to_dict() for r in records],
    })

    cm = np.asarray(evaluation.report["confusion_matrix"])
    plots.confusion_matrix_plot(cm, run_dir / CONFUSION_PNG, class_names=names)
    confident = most_confident_mistakes(records, GRID_COUNT)
    plots.misclassified_grid(
        images, confident, run_dir / MISTAKES_PNG, count=GRID_COUNT, class_names=names,
        title=f"Most confident mistakes ({len(confident)} of {len(records):,})",
    )
    picked = sample_mistakes(records, GRID_COUNT, seed=seed)
    plots.misclassified_grid(
        images, picked, run_dir / RANDOM_MISTAKES_PNG, count=GRID_COUNT, class_names=names,
        title=f"Random mistakes ({len(picked)} of {len(records):,}, seed {seed})",
    )
    if first_layer_W is not None:
        w = np.asarray(first_layer_W)
        units = w.shape[1] if w.ndim == 2 else w.shape[0]
        shown = min(units, 64)
        plots.first_layer_weights(w, run_dir / WEIGHTS_PNG, count=shown,  # short: few 5x5 tiles
                                  title=f"First-layer weights\n{shown} of {units}; red +, blue −")
    shown = min(GRID_COUNT, evaluation.num_samples)
    plots.digit_grid(
        images, _digit_captions(evaluation, names, GRID_COUNT), run_dir / DIGITS_PNG,
        count=GRID_COUNT, title="First images: label (→ the model's answer if wrong)",
        wrong=evaluation.predictions[:shown] != evaluation.labels[:shown],
    )
    return metrics


def _digit_captions(evaluation: Evaluation, names: list[str], count: int) -> list[str]:
    n = min(count, evaluation.num_samples)
    labels, predicted = evaluation.labels[:n], evaluation.predictions[:n]
    return [names[t] if t == p else f"{names[t]}\n→ {names[p]}"
            for t, p in zip(labels.tolist(), predicted.tolist(), strict=True)]


# ------------------------------------------------------------------------------- report


_CAPTIONS = {
    LEARNING_CURVES: "Loss and accuracy per epoch, training solid and validation dashed: "
    "they should improve together, and a validation curve that turns away from the "
    "training curve means overfitting.",
    "steps": "Training loss per logged step: it should fall and flatten; a curve that "
    "jumps or climbs means the learning rate is too high or the inputs are badly scaled.",
    CONFUSION_PNG: "Rows are the true classes and columns the model's answers: look at the "
    "darkest red cells off the diagonal, the pairs of classes the model mixes up most.",
    MISTAKES_PNG: "The mistakes the model was surest of: these are often ambiguous or "
    "mislabelled images rather than plain model failures.",
    RANDOM_MISTAKES_PNG: "A seeded random sample of the mistakes, a fairer picture of the "
    "typical error than the most confident ones.",
    WEIGHTS_PNG: "Each tile is one first-layer unit's weights on the pixels (red positive, "
    "blue negative): stroke- and blob-like patterns mean the layer learned features, "
    "pure noise means it learned little.",
    DIGITS_PNG: "The first images of the evaluated split with their labels (and the model's "
    "answer where it was wrong): a check that the data and labels look right.",
}
_FIGURES = [
    (CONFUSION_PNG, "Confusion matrix"),
    (MISTAKES_PNG, "Most confident mistakes"),
    (RANDOM_MISTAKES_PNG, "Random mistakes"),
    (WEIGHTS_PNG, "First-layer weights"),
    (DIGITS_PNG, "Sample digits"),
]


def write_report(run_dir: PathLike) -> Path:
    """report.md: the run on one page, from whatever files the run directory holds.

    Title (``title``, ``recipe``, ``name`` or ``model`` of the config), the config as a
    table, the final numbers (accuracy, loss, errors, training time when recorded as
    ``training_time_s`` in metrics or config), per-class accuracy, the most common
    confusions, the pictures with a caption saying what to look for, and links to the
    data files. An eval-only directory simply has no training section.
    """
    run_dir = Path(run_dir)
    config = _read_json(run_dir / CONFIG)
    history = _read_json(run_dir / HISTORY_JSON)
    metrics = _read_json(run_dir / METRICS)
    config = config if isinstance(config, dict) else {}
    metrics = metrics if isinstance(metrics, dict) else {}

    title = next((str(config[k]) for k in ("title", "recipe", "name", "model") if config.get(k)),
                 run_dir.name)
    lines = [f"# {_md(title)}", "", f"Run directory: `{run_dir.name}`", ""]
    lines += _summary_section(config, metrics, history)
    if config:
        lines += ["## Configuration", "", "| setting | value |", "|---|---|"]
        lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _flatten(config)]
        lines.append("")
    lines += _training_section(run_dir, history)
    lines += _class_section(metrics)
    figures = [(f, heading) for f, heading in _FIGURES if (run_dir / f).is_file()]
    if figures:
        lines += ["## Pictures", ""]
        for filename, heading in figures:
            lines += [f"### {heading}", "", f"![{heading}]({filename})", "",
                      f"*{_CAPTIONS[filename]}*", ""]
    data_files = [f for f in (CONFIG, METRICS, MISCLASSIFIED, HISTORY_JSON, HISTORY_CSV)
                  if (run_dir / f).is_file()]
    data_files += sorted(p.name for p in run_dir.glob("*.safetensors") if p.is_file())
    if data_files:
        lines += ["## Files", ""] + [f"- [{f}]({f})" for f in data_files] + [""]
    path = run_dir / REPORT
    atomic_write_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path


def _summary_section(config: dict, metrics: dict, history: Any) -> list[str]:
    rows: list[tuple[str, str]] = []
    if metrics:
        split = metrics.get("split") or config.get("split")
        where = f" ({split} split)" if split else ""
        if metrics.get("dataset"):
            rows.append(("dataset", str(metrics["dataset"])))
        if isinstance(metrics.get("accuracy"), int | float):
            rows.append((f"accuracy{where}", f"{metrics['accuracy']:.4f} "
                                             f"({metrics['accuracy']:.2%})"))
        if isinstance(metrics.get("loss"), int | float):
            name = metrics.get("loss_name")
            rows.append((f"loss{where}", f"{metrics['loss']:.4f}" + (f" ({name})" if name else "")))
        if isinstance(metrics.get("errors"), int):
            total = metrics.get("num_samples")
            rows.append(("errors", f"{metrics['errors']:,}"
                         + (f" of {total:,}" if isinstance(total, int) else "")))
    for source in (metrics, config):
        seconds = next((source[k] for k in TRAINING_TIME_KEYS
                        if isinstance(source.get(k), int | float)), None)
        if seconds is not None:
            rows.append(("training time", _duration(float(seconds))))
            break
    if isinstance(metrics.get("eval_seconds"), int | float):
        rows.append(("prediction time", _duration(float(metrics["eval_seconds"]))))
    if isinstance(history, dict) and history.get("epoch"):
        rows.append(("epochs trained", str(len(history["epoch"]))))
    if not rows:
        return []
    return ["## Results", "", "| result | value |", "|---|---|"] + [
        f"| {_md(k)} | {_md(v)} |" for k, v in rows] + [""]


def _training_section(run_dir: Path, history: Any) -> list[str]:
    if not isinstance(history, dict):
        return []
    logs = history.get("history") if isinstance(history.get("history"), dict) else {}
    lines = ["## Training", ""]
    series = {k: v for k, v in logs.items() if isinstance(v, list) and v}
    if series:
        lines += ["| after the last epoch | value |", "|---|---|"]
        keys = [k for k in EPOCH_KEYS if k in series] + sorted(set(series) - set(EPOCH_KEYS))
        lines += [f"| {_md(k)} | {_number(series[k][-1])} |" for k in keys]
        lines.append("")
    if (run_dir / LEARNING_CURVES).is_file():
        n_epochs = max((len(v) for v in series.values()), default=0)
        caption = _CAPTIONS["steps" if history.get("steps") and n_epochs <= 1
                            else LEARNING_CURVES]
        lines += ["![Learning curves](learning_curves.png)", "", f"*{caption}*", ""]
    return lines if len(lines) > 2 else []


def _class_section(metrics: dict) -> list[str]:
    cm = metrics.get("confusion_matrix")
    per_class = metrics.get("per_class_accuracy")
    if not isinstance(cm, list) or not isinstance(per_class, list) or len(cm) != len(per_class):
        return []
    names = metrics.get("class_names") or [str(i) for i in range(len(cm))]
    lines = ["## Per-class accuracy", "", "| class | samples | correct | accuracy |",
             "|---|---:|---:|---:|"]
    for i, (name, row, acc) in enumerate(zip(names, cm, per_class, strict=True)):
        shown = "n/a" if acc is None else f"{acc:.2%}"
        lines.append(f"| {_md(name)} | {sum(row):,} | {row[i]:,} | {shown} |")
    lines.append("")
    pairs = sorted(((count, t, p) for t, row in enumerate(cm) for p, count in enumerate(row)
                    if t != p and count > 0), key=lambda c: (-c[0], c[1], c[2]))[:5]
    if pairs:
        lines += ["Most common confusions (true → predicted):", ""]
        lines += [f"- {_md(names[t])} → {_md(names[p])}: {count:,}" for count, t, p in pairs]
        lines.append("")
    return lines


# ------------------------------------------------------------------------------ helpers


def _json_safe(value: Any) -> Any:
    """Plain JSON types: numpy values unwrapped, tuples as lists, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, Misclassification):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def _write_json(path: Path, value: Any, sort_keys: bool = False) -> Path:
    text = json.dumps(_json_safe(value), indent=2, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return path


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable (the report skips it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key in sorted(config):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, str):
            rows.append((name, value))
        else:
            rows.append((name, json.dumps(value)))
    return rows


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell or heading."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"
