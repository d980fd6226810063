"""Every recipe runs end to end on a small slice; runs survive Ctrl-C, kills and divergence."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mnistlab.cli import main
from mnistlab.engines import load_model, torch_available
from mnistlab.errors import MnistlabError
from mnistlab.experiments.recipes import RECIPES, get_recipe, resolve_config
from mnistlab.experiments.runner import resume_run, train_recipe

SAMPLE_WEIGHT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sample_weight.pkl"

# Small enough to run in seconds, large enough that learning shows.
QUICK = {
    "pretrained-sigmoid": {"weights": str(SAMPLE_WEIGHT)},
    "one-layer-sigmoid": {"limit": "2000", "epochs": "60", "test_limit": "1000"},
    "softmax-regression": {"limit": "2000", "epochs": "30", "test_limit": "1000"},
    "numerical-30": {"limit": "300", "test_limit": "1000", "log_every": "50"},
    "backprop-30": {"limit": "2000", "test_limit": "1000", "log_every": "200"},
    "keras-mlp": {"limit": "2000", "epochs": "2", "test_limit": "1000"},
    "keras-cnn": {"limit": "1000", "epochs": "1", "test_limit": "500"},
    "fast": {"limit": "2000", "test_limit": "500"},
    "handwriting": {"limit": "1000", "epochs": "1", "copies": "1", "test_limit": "500"},
}
FLOORS = {  # test accuracy a quick run must beat (10 classes: chance is 0.1)
    "pretrained-sigmoid": 0.93,
    "one-layer-sigmoid": 0.5,
    "softmax-regression": 0.6,
    "numerical-30": 0.3,
    "backprop-30": 0.6,
    "keras-mlp": 0.85,
    "keras-cnn": 0.6,
    "fast": 0.5,
    "handwriting": 0.5,
}


def test_every_recipe_has_a_quick_configuration():
    assert set(QUICK) == set(RECIPES)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_recipe_trains_evaluates_and_writes_its_run_directory(name, tmp_path):
    result = train_recipe(name, QUICK[name], out=tmp_path / name, verbose=0)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "report.md"} <= files
    assert {"confusion_matrix.png", "misclassified.png", "digits.png"} <= files
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == result.test_accuracy > FLOORS[name]
    assert metrics["recipe"] == name and metrics["reference_accuracy"] > 0.8
    if name == "pretrained-sigmoid":
        assert metrics["errors"] == 648  # the textbook's 0.9352 exactly
    else:
        assert "learning_curves.png" in files


ENGINES = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not torch_available(), reason="torch is not installed"))]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_one_layer_experiment_stops_past_80_percent_and_reports_the_epoch(tmp_path, engine):
    # raw pixels saturate the sigmoids: only the course's dL/dz = y - t learns (both engines)
    result = train_recipe("one-layer-sigmoid", {"epochs": "200"}, out=tmp_path / "r",
                          verbose=0, engine=engine)
    metrics = result.metrics
    assert result.train_accuracy > 0.80
    assert metrics["stopped_epoch"] == metrics["epochs_run"] < 200


def test_overrides_are_parsed_to_the_defaults_type():
    config = resolve_config(get_recipe("keras-mlp"), {"epochs": "3", "lr": "0.01"})
    assert config["epochs"] == 3 and config["lr"] == 0.01
    with pytest.raises(MnistlabError, match="--set epochs: expected an integer from 1"):
        resolve_config(get_recipe("keras-mlp"), {"epochs": "three"})
    with pytest.raises(MnistlabError, match="no setting 'momentum'"):
        resolve_config(get_recipe("keras-mlp"), {"momentum": "0.9"})


def test_unknown_recipe_lists_the_known_ones(capsys):
    assert main(["train", "--recipe", "nope"]) == 1
    assert "known recipes: pretrained-sigmoid" in capsys.readouterr().err


def test_recipes_command_lists_each_reference(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES) and "0.9811" in out


def test_fashion_mnist_runs_the_same_recipe(tmp_path):
    from conftest import FASHION_DIR

    if not FASHION_DIR.exists():
        pytest.skip("Fashion-MNIST not installed (.ci/run installs it)")
    result = train_recipe(
        "keras-mlp", QUICK["keras-mlp"], dataset="fashion-mnist", out=tmp_path / "f", verbose=0
    )
    assert result.test_accuracy > 0.6
    assert "Ankle boot" in (result.run_dir / "report.md").read_text()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the message, not NumPy's overflow warnings
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("recipe", "limit"), [("softmax-regression", 500), ("keras-mlp", 1000)])
def test_a_diverging_learning_rate_stops_with_a_clear_message_and_good_weights(
        tmp_path, capsys, engine, recipe, limit):
    out = tmp_path / "diverged"
    argv = ["train", "--recipe", recipe, "--lr", "1e37", "--epochs", "3", "--engine", engine,
            "--set", f"limit={limit}", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err
    assert re.search(r"epoch \d+, step \d+", err), err
    assert json.loads((out / "status.json").read_text())["status"] == "diverged"
    saved = sorted(out.glob("*.safetensors"))  # the model and any checkpoint
    assert out / "model.safetensors" in saved
    for path in saved:
        for name, w in load_file(path).items():
            assert np.isfinite(w).all(), f"{path.name}: {name} is not finite"
    load_model(out / "model.safetensors")  # and it loads


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(run_dir / "model.safetensors")


def start_training(out: Path, extra_env: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mnistlab", "train", "--recipe", "keras-cnn", "--epochs", "3",
            "--set", "limit=800", "--set", "test_limit=200", "--out", str(out),
            "--quiet"]  # fmt: skip
    return subprocess.Popen(argv, env={**os.environ, **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_checkpoint(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.safetensors").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, how):
    uninterrupted = tmp_path / "whole"
    whole = start_training(uninterrupted)
    interrupted = tmp_path / "cut"
    cut = start_training(interrupted)
    wait_for_checkpoint(interrupted, cut)
    cut.send_signal(how)
    _, err = cut.communicate(timeout=60)
    assert cut.returncode != 0, "the run was not interrupted"
    if how == signal.SIGINT:
        assert "mnistlab train --resume" in err
    assert not (interrupted / "model.safetensors").exists()

    resumed = resume_run(interrupted, verbose=0)
    assert whole.wait(timeout=300) == 0
    expected, got = final_weights(uninterrupted), final_weights(resumed.run_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    history = json.loads((interrupted / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2]  # epochs from before and after the cut


def test_compare_prints_one_table_and_one_plot(tmp_path, capsys):
    runs = [
        train_recipe(name, QUICK[name], out=tmp_path / name, verbose=0).run_dir
        for name in ("keras-mlp", "pretrained-sigmoid")
    ]
    out = tmp_path / "compare"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "keras-mlp" in table and "795,010" in table and "0.9352" in table
    assert (out / "compare_curves.png").stat().st_size > 0
