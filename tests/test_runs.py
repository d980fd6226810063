"""Tests for run directories (mnistlab.reporting.runs) and `mnistlab eval`: real MNIST, a tiny
softmax model trained for a few steps, every file checked against a direct computation."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mnistlab import Sequential, cli
from mnistlab.engines import load_model
from mnistlab.errors import MnistlabError, ModelFileError
from mnistlab.nn import Conv2D, Dense, Flatten
from mnistlab.reporting import runs
from mnistlab.training import History

DIGITS = [str(d) for d in range(10)]
N_TRAIN, N_TEST = 2000, 1000
EVAL_FILES = {
    "metrics.json", "misclassified.json", "confusion_matrix.png", "misclassified.png",
    "misclassified_random.png", "digits.png", "report.md",
}
TRAIN_FILES = {"config.json", "history.json", "history.csv", "learning_curves.png"}


def strict_json(path: Path) -> Any:
    """Parse refusing NaN/Infinity, as a strict JSON reader would."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{path.name} contains {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def unit_flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255


@pytest.fixture(scope="module")
def trained(mnist: Any) -> dict[str, Any]:
    """Softmax regression trained 2 epochs on 2,000 real digits (validation on 500)."""
    (x_train, y_train), (x_test, y_test) = mnist
    model = Sequential([Dense(10, activation="softmax", input_shape=(784,))], seed=0)
    model.compile("adam")
    history = model.fit(unit_flat(x_train[:N_TRAIN]), y_train[:N_TRAIN], epochs=2,
                        batch_size=50, validation_data=(unit_flat(x_test[-500:]), y_test[-500:]),
                        verbose=0, seed=0, log_every=10)
    return {"model": model, "history": history, "images": x_test[:N_TEST],
            "labels": y_test[:N_TEST]}


@pytest.fixture(scope="module")
def run(trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A complete training run directory, written once for the tests that read it."""
    model, images, labels = trained["model"], trained["images"], trained["labels"]
    run_dir = runs.new_run_dir("tiny softmax", root=tmp_path_factory.mktemp("runs"))
    runs.write_config(run_dir, {"recipe": "tiny-softmax", "epochs": 2, "lr": 0.001,
                                "optimizer": {"name": "adam"}, "note": "a | b"})
    runs.write_history(run_dir, trained["history"])
    evaluation = runs.evaluate_model(model, images, labels, class_names=DIGITS)
    metrics = runs.write_evaluation(run_dir, evaluation, images, class_names=DIGITS, seed=3,
                                    first_layer_W=runs.first_layer_kernel(model),
                                    extra={"dataset": "mnist", "split": "test",
                                           "training_time_s": 1.25})
    runs.write_report(run_dir)
    return {"dir": run_dir, "evaluation": evaluation, "metrics": metrics, **trained}


# ---------------------------------------------------------------------------- run dirs


def test_new_run_dir_is_unique_within_one_second(tmp_path: Path) -> None:
    now = datetime(2024, 5, 17, 9, 30, 5)
    made = [runs.new_run_dir("cnn/5 epochs", root=tmp_path / "runs", now=now) for _ in range(3)]
    assert [p.name for p in made] == [
        "cnn-5-epochs-20240517-093005", "cnn-5-epochs-20240517-093005-2",
        "cnn-5-epochs-20240517-093005-3",
    ]
    assert all(p.is_dir() and p.parent == tmp_path / "runs" for p in made)
    with pytest.raises(ValueError, match="name"):
        runs.new_run_dir("//", root=tmp_path)


def test_run_dir_layout(run: dict[str, Any]) -> None:
    names = {p.name for p in run["dir"].iterdir()}
    assert names == EVAL_FILES | TRAIN_FILES | {"first_layer_weights.png"}  # no temp files left
    assert re.fullmatch(r"tiny-softmax-\d{8}-\d{6}", run["dir"].name)
    for name in names - {"report.md"}:
        if name.endswith(".png"):
            with Image.open(run["dir"] / name) as img:
                assert img.format == "PNG" and min(img.size) > 100
        elif name.endswith(".json"):
            strict_json(run["dir"] / name)
    config_text = (run["dir"] / "config.json").read_text()
    assert config_text == json.dumps(json.loads(config_text), indent=2, sort_keys=True) + "\n"


def test_history_files(run: dict[str, Any]) -> None:
    history: History = run["history"]
    saved = strict_json(run["dir"] / "history.json")
    assert saved == json.loads(json.dumps(history.to_dict()))
    assert saved["epoch"] == [0, 1] and len(saved["steps"]) == 2 * N_TRAIN // 50 // 10
    with open(run["dir"] / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values


def test_history_with_steps_only_and_nan(tmp_path: Path) -> None:
    steps_only = History()
    steps_only.steps = [(200, 2.1), (400, 1.2), (600, 0.9)]
    data = runs.write_history(tmp_path / "a", steps_only)
    assert data["steps"] == [[200, 2.1], [400, 1.2], [600, 0.9]]
    assert (tmp_path / "a" / "history.csv").read_text() == "epoch\n"
    assert (tmp_path / "a" / "learning_curves.png").stat().st_size > 0

    runs.write_history(tmp_path / "b", {"loss": [0.5, float("nan")], "accuracy": [0.8, 0.1]})
    saved = strict_json(tmp_path / "b" / "history.json")
    assert saved == {"history": {"loss": [0.5, None], "accuracy": [0.8, 0.1]},
                     "epoch": [0, 1], "steps": []}

    runs.write_history(tmp_path / "c", History())  # nothing recorded: files, no picture
    assert not (tmp_path / "c" / "learning_curves.png").exists()


# --------------------------------------------------------------------------- evaluation


def test_metrics_agree_with_a_direct_computation(run: dict[str, Any]) -> None:
    model, images, labels = run["model"], run["images"], run["labels"]
    probs = model.predict(unit_flat(images))
    predicted = probs.argmax(axis=1)
    metrics = strict_json(run["dir"] / "metrics.json")
    assert metrics == run["metrics"]
    assert metrics["num_samples"] == N_TEST
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == labels), abs=1e-12)
    assert metrics["errors"] == int(np.sum(predicted != labels))
    assert 0.6 < metrics["accuracy"] < 0.99  # a few steps of training, on real digits
    assert metrics["loss"] == pytest.approx(model.evaluate(unit_flat(images), labels)[0], rel=1e-6)
    assert metrics["loss_name"] == "categorical_crossentropy"
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == N_TEST
    assert np.trace(cm) == N_TEST - metrics["errors"]
    assert cm.sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()
    for digit in range(10):
        mask = labels == digit
        expected = np.mean(predicted[mask] == digit)
        assert metrics["per_class_accuracy"][digit] == pytest.approx(expected)
    assert metrics["class_names"] == DIGITS
    assert metrics["dataset"] == "mnist" and metrics["split"] == "test"

    wrong = np.flatnonzero(predicted != labels)
    every = strict_json(run["dir"] / "misclassified.json")["misclassified"]
    assert [r["index"] for r in every] == wrong.tolist()
    for record in every:
        i = record["index"]
        assert record["label"] == labels[i] and record["prediction"] == predicted[i]
        assert record["confidence"] == pytest.approx(float(probs[i, predicted[i]]), rel=1e-6)
    listed = metrics["misclassified"]
    assert len(listed) == metrics["misclassified_listed"] == min(100, len(wrong))
    threshold = min(r["confidence"] for r in listed)
    assert sum(r["confidence"] > threshold for r in every) < len(listed)  # the surest ones


def test_uncompiled_model_gets_clipped_cross_entropy(run: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    run["model"].save(path)
    loaded = load_model(path)  # not compiled
    evaluation = runs.evaluate_model(loaded, run["images"], run["labels"], class_names=DIGITS)
    probs = loaded.predict(unit_flat(run["images"]))
    picked = np.clip(probs[np.arange(N_TEST), run["labels"]], 1e-7, 1)
    assert evaluation.loss == pytest.approx(-np.mean(np.log(picked)), rel=1e-6)
    assert evaluation.loss == pytest.approx(run["evaluation"].loss, rel=1e-5)
    assert evaluation.accuracy == run["evaluation"].accuracy
    # logits and sigmoid scores are normalized first; a sure wrong answer stays finite
    assert runs.cross_entropy(np.array([[-3.0, -3.0]]), np.array([0])) == pytest.approx(np.log(2))
    assert runs.cross_entropy(np.array([[1.0, 1.0]]), np.array([1])) == pytest.approx(np.log(2))
    assert runs.cross_entropy(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-np.log(1e-7))


def test_models_that_do_not_fit_are_refused(run: dict[str, Any]) -> None:
    images, labels = run["images"][:20], run["labels"][:20]
    wide = Sequential([Dense(10, activation="softmax", input_shape=(100,))])
    with pytest.raises(ModelFileError, match="28x28"):
        runs.evaluate_model(wide, images, labels, class_names=DIGITS)
    five = Sequential([Dense(5, activation="softmax", input_shape=(784,))])
    with pytest.raises(ModelFileError, match="10 classes"):
        runs.evaluate_model(five, images, labels, class_names=DIGITS)


def test_first_layer_kernel() -> None:
    conv = Sequential([Conv2D(4, 3, activation="relu", input_shape=(1, 28, 28)), Flatten(),
                       Dense(10, activation="softmax")])
    assert runs.first_layer_kernel(conv).shape == (4, 1, 3, 3)
    dense = Sequential([Flatten(input_shape=(1, 28, 28)), Dense(7), Dense(10)])
    assert runs.first_layer_kernel(dense).shape == (784, 7)
    assert runs.first_layer_kernel(Sequential([Dense(10, input_shape=(100,))])) is None


# ------------------------------------------------------------------------------- report


def markdown_links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_report_shows_the_run_and_links_only_existing_files(run: dict[str, Any]) -> None:
    report = (run["dir"] / "report.md").read_text()
    links = markdown_links(report)
    assert {"learning_curves.png", "confusion_matrix.png", "misclassified.png",
            "misclassified_random.png", "first_layer_weights.png", "digits.png",
            "metrics.json", "history.csv"} <= set(links)
    assert all((run["dir"] / link).is_file() for link in links)
    assert report.startswith("# tiny-softmax\n")
    accuracy = run["metrics"]["accuracy"]
    assert f"| accuracy (test split) | {accuracy:.4f} ({accuracy:.2%}) |" in report
    assert f"| errors | {run['metrics']['errors']:,} of 1,000 |" in report
    assert "| training time | 1.25 s |" in report
    assert "| note | a \\| b |" in report and "| optimizer.name | adam |" in report
    class_rows = [line for line in report.splitlines() if re.match(r"\| \d \| \d", line)]
    assert len(class_rows) == 10
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        after = report.split(f"({name})", 1)[1].lstrip("\n")
        assert after.startswith("*") and after.split("\n", 1)[0].endswith(".*")  # a caption


# ---------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`mnistlab ...` through the real entry point, with the eval command registered."""
    modules = list(cli.COMMAND_MODULES)
    if "mnistlab.cli.evaluate" not in modules:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*modules, "mnistlab.cli.evaluate"])
    return cli.main(argv)


def test_eval_cli_writes_the_evaluation(
    run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], mnist: Any,
) -> None:
    model_path = tmp_path / "tiny.safetensors"
    run["model"].save(model_path)
    monkeypatch.chdir(tmp_path)
    assert run_cli(["eval", str(model_path), "--batch-size", "512"], monkeypatch) == 0
    out = capsys.readouterr().out
    (out_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"eval-tiny-\d{8}-\d{6}", out_dir.name)
    assert {p.name for p in out_dir.iterdir()} == EVAL_FILES | {"config.json",
                                                                "first_layer_weights.png"}
    (_, _), (x_test, y_test) = mnist
    predicted = run["model"].predict(unit_flat(x_test)).argmax(axis=1)
    expected = float(np.mean(predicted == y_test))
    metrics = strict_json(out_dir / "metrics.json")
    assert metrics["num_samples"] == 10_000 and metrics["accuracy"] == pytest.approx(expected)
    assert f"accuracy: {expected:.4f}" in out
    assert f"errors:   {metrics['errors']:,}" in out
    assert f"output:   {out_dir.relative_to(tmp_path)}\n" in out
    report = (out_dir / "report.md").read_text()
    assert report.startswith("# tiny.safetensors on mnist (test split)\n")
    assert "## Training" not in report and "learning_curves" not in report
    assert all((out_dir / link).is_file() for link in markdown_links(report))


def test_eval_cli_into_a_training_run_keeps_its_config_and_history(
    run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(run["dir"], run_dir)
    config = (run_dir / "config.json").read_bytes()
    model_path = run_dir / "model.safetensors"
    run["model"].save(model_path)
    assert run_cli(["eval", str(model_path), "--out", str(run_dir)], monkeypatch) == 0
    capsys.readouterr()
    assert (run_dir / "config.json").read_bytes() == config
    assert strict_json(run_dir / "metrics.json")["training_time_s"] == 1.25
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# tiny-softmax\n") and "## Training" in report
    assert "| training time | 1.25 s |" in report and "(model.safetensors)" in report
    assert all((run_dir / link).is_file() for link in markdown_links(report))


@pytest.mark.parametrize("problem", ["missing", "directory", "garbage", "wide"])
def test_eval_cli_bad_model_is_a_clear_error(
    problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "model.safetensors"
    if problem == "directory":
        path.mkdir()
    elif problem == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    elif problem == "wide":
        Sequential([Dense(10, activation="softmax", input_shape=(100,))]).save(path)
    assert run_cli(["eval", str(path), "--out", str(tmp_path / "out")], monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and "Traceback" not in err
    assert {"missing": "no such model file", "directory": "directory",
            "garbage": "safetensors", "wide": "28x28"}[problem] in err
    assert not (tmp_path / "out").exists()  # nothing written for a model that cannot run


# ------------------------------------------------------------- one run per directory


HOLD_LOCK = """
import sys
from mnistlab.reporting.runs import locked_run_dir
with locked_run_dir(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def test_a_second_run_in_the_same_directory_refuses_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: two `mnistlab train --out D` at once both exited 0 and left D mixed (config from
    one, history and model from the other), and `--resume D` then succeeded."""
    import subprocess
    import sys
    import time

    from mnistlab.experiments.runner import train_recipe

    run_dir = tmp_path / "run"
    train_recipe("softmax-regression", {"limit": "300", "epochs": "1", "test_limit": "200"},
                 out=run_dir, verbose=0)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert "checkpoint.safetensors" in before and runs.LOCK not in before  # released
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        for argv in (["train", "--recipe", "softmax-regression", "--set", "limit=300",
                      "--epochs", "1", "--out", str(run_dir), "--quiet"],
                     ["train", "--resume", str(run_dir), "--quiet"]):
            started = time.perf_counter()
            assert cli.main(argv) == 1
            assert time.perf_counter() - started < 5  # at once, not after training
            err = capsys.readouterr().err
            assert err == (f"mnistlab: error: {run_dir} is in use by another run "
                           f"(pid {holder.pid})\n"), err
        with pytest.raises(MnistlabError, match=f"pid {holder.pid}"), \
                runs.locked_run_dir(run_dir):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert after == before  # nothing of the refused runs was written, the lock file is gone
    with runs.locked_run_dir(run_dir):  # the holder has exited: the directory is free again
        assert (run_dir / runs.LOCK).read_text() == f"{os.getpid()}\n"


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    in_use = rf"in use by another run \(pid {os.getpid()}\)"
    with runs.locked_run_dir(tmp_path), pytest.raises(MnistlabError, match=in_use), \
            runs.locked_run_dir(tmp_path):
        pass
    assert not (tmp_path / runs.LOCK).exists()


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    code = ("import os, signal, sys\nfrom mnistlab.reporting.runs import locked_run_dir\n"
            "with locked_run_dir(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / runs.LOCK).exists()  # left behind, but no longer locked
    with runs.locked_run_dir(tmp_path):
        pass


KILLED_WRITER = """
import os, signal, sys
from mnistlab.atomic import atomic_writer
with atomic_writer(sys.argv[1]) as handle:
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_of_killed_writers_are_cleaned_on_the_next_run(tmp_path: Path) -> None:
    """Before: a killed run left 0-byte `.learning_curves.png.XXXX.tmp` files for good."""
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run_dir / "learning_curves.png")],
                   check=False)
    (killed,) = run_dir.iterdir()
    assert killed.name.startswith(".learning_curves.png.") and killed.stat().st_size == 0
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = run_dir / f".metrics.json.{os.getpid()}.abcd_123.tmp"  # a live writer: this one
        alive = run_dir / f".digits.png.{sleeper.pid}.abcdefgh.tmp"  # another live process's
        old = run_dir / ".report.md.zyxwvuts.tmp"  # no pid in the name, two hours old
        recent = run_dir / ".history.csv.qwertyui.tmp"  # no pid, just written
        unrelated = run_dir / ".notes.tmp"
        for path in (mine, alive, old, recent, unrelated):
            path.touch()
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        (run_dir / f".config.json.{os.getpid() + 10**9}.aaaaaaaa").mkdir()  # not a file
        with runs.locked_run_dir(run_dir):
            left = {p.name for p in run_dir.iterdir()}
        assert killed.name not in left and old.name not in left
        assert {mine.name, alive.name, recent.name, unrelated.name} <= left
    finally:
        sleeper.kill()
        sleeper.wait()
