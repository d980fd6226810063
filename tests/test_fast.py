"""The `fast` recipe: its learning-rate schedule, label smoothing, and a quick run on each
engine whose model file the other engine loads and runs the same."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from mnistlab.errors import MnistlabError
from mnistlab.experiments.fast import (
    FAST_DEFAULTS,
    LearningRateSchedule,
    fast_model,
    precision,
    scheduled_lr,
    smooth_labels,
)
from mnistlab.experiments.recipes import RECIPES
from mnistlab.experiments.runner import train_recipe
from mnistlab.nn import Adam

QUICK = {"limit": "1024", "test_limit": "300"}  # 8 steps of 128


def test_linear_schedule_decays_from_the_peak_towards_zero():
    lrs = [scheduled_lr(s, 10, 0.01, "linear") for s in range(10)]
    assert lrs[0] == 0.01 and lrs[-1] == pytest.approx(0.001)
    assert np.allclose(np.diff(lrs), -0.001)  # a straight line


def test_linear_schedule_with_warmup_rises_then_decays():
    lrs = [scheduled_lr(s, 10, 1.0, "linear", warmup=0.2) for s in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[-1] == pytest.approx(1 / 8)
    assert max(lrs) == 1.0 and all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_onecycle_schedule_is_torchs_one_cycle():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=0.01)
    total = 47
    torchs = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=total, cycle_momentum=False
    )
    for step in range(total):
        assert scheduled_lr(step, total, 0.01, "onecycle") == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9
        )
        optimizer.step()
        torchs.step()


def test_schedules_reject_unknown_names_and_bad_warmup():
    with pytest.raises(MnistlabError, match="unknown schedule"):
        scheduled_lr(0, 10, 0.01, "cosine")
    with pytest.raises(MnistlabError, match="warmup"):
        LearningRateSchedule(0.01, "linear", warmup=1.0)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_the_callback_sets_the_lr_of_every_step(engine):
    model = fast_model(4, 4, 8, seed=0)
    if engine == "torch":
        pytest.importorskip("torch")
        from mnistlab.engines.torch import to_torch

        model = to_torch(model)
    model.compile(Adam(0.02), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 50)
    schedule = LearningRateSchedule(0.02, "linear")
    model.fit(x, y, epochs=2, batch_size=10, seed=0, verbose=0, callbacks=[schedule])
    total = 10  # 2 epochs of 5 steps
    assert schedule.lrs == pytest.approx([0.02 * (total - s) / total for s in range(total)])
    assert model.optimizer.lr == pytest.approx(0.002)  # clamped to the last step's rate


def test_smoothed_labels_are_distributions_peaking_at_the_label():
    targets = smooth_labels(np.array([3, 0, 9]), 0.1)
    assert targets.dtype == np.float32 and np.allclose(targets.sum(axis=1), 1.0)
    assert np.array_equal(targets.argmax(axis=1), [3, 0, 9])
    assert math.isclose(targets[0, 3], 0.91, rel_tol=1e-6) and targets[0, 0] == np.float32(0.01)
    assert smooth_labels(np.array([1, 2]), 0.0).tolist() == [1, 2]


def test_bfloat16_is_a_torch_engine_setting():
    with (
        pytest.raises(MnistlabError, match="needs --engine torch"),
        precision(None, "numpy", "bfloat16"),
    ):
        pass
    with precision(None, "numpy", "auto") as used:
        assert used == "float32"


def test_the_model_is_small_and_strided():
    model = fast_model()
    model.build()
    shapes = [layer.output_shape for layer in model.layers]
    assert shapes[:4] == [(1, 24, 24), (16, 10, 10), (32, 8, 8), (32, 4, 4)]
    assert model.count_params() == 105_482
    uncropped = fast_model(crop=0, dense=128)
    uncropped.build()
    assert uncropped.layers[1].output_shape == (32, 10, 10)
    assert uncropped.count_params() == 108_874
    assert RECIPES["fast"].defaults == FAST_DEFAULTS


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_fast_recipe_runs_and_its_model_runs_the_same_on_the_other_engine(engine, tmp_path):
    torch = pytest.importorskip("torch")
    from mnistlab.datasets import load_data
    from mnistlab.engines.numpy import load_model as load_numpy
    from mnistlab.engines.torch import load_model as load_torch

    result = train_recipe("fast", QUICK, engine=engine, out=tmp_path / engine, verbose=0)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert result.test_accuracy > 0.6 and metrics["engine"] == engine
    assert metrics["data_seconds"] > 0 and metrics["train_seconds"] > 0
    assert metrics["precision"] in ("float32", "bfloat16")
    history = json.loads((result.run_dir / "history.json").read_text())
    assert len(history["steps"]) == 8  # one epoch of 1,024 images in batches of 128

    _, (x_test, y_test) = load_data("mnist")
    x = (x_test[:300].astype(np.float32) / 255)[:, None]
    on_numpy = load_numpy(result.run_dir / "model.safetensors").predict(x)
    on_torch = load_torch(result.run_dir / "model.safetensors").predict(x)
    assert np.allclose(on_numpy, on_torch, atol=1e-5)
    assert np.mean(on_numpy.argmax(1) == y_test[:300]) == result.test_accuracy
    assert torch.get_num_threads() >= 1  # the recipe put the thread count back
