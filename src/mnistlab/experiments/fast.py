"""The fastest path to 99%: the ``fast`` recipe, one epoch of a small CNN on a CPU.

    mnistlab train --recipe fast --engine torch     # 3-5 s of training on 2 cores
    mnistlab train --recipe fast --engine numpy     # the same model on NumPy: 6-10 s

Against the public one-epoch 99% net written in plain PyTorch, trained in the same
benchmark run (benchmarks/time_to_accuracy.py), on 2 cores: about 0.45-0.55x its
training time on the torch engine and 0.85-1.15x on the NumPy engine, measured on an
AVX512 CPU without bfloat16 (Ice Lake). Where the CPU has AVX512-BF16 or AMX the torch
engine runs bfloat16 autocast: the earlier, uncropped net measured 0.39-0.53x there.
Test accuracy over seeds 0-9: 0.9902-0.9924 on the torch engine, where the reference
net reaches 0.989-0.990.

What makes one epoch enough, and cheap (each measured; see benchmarks/time_to_accuracy.py):

- the digits fill the middle of the 28x28 images, so the net first crops 2 pixels off
  each side (``Cropping2D``): a third fewer multiply-adds, the same accuracy;
- a small net whose first convolution has stride 2 (no first pooling layer), and
  pooling before the second ReLU (max and ReLU commute, so the ReLU runs on 4x fewer
  values): about a third of the multiply-adds of the well-known 99%-in-one-epoch net;
- batch 128 (more updates in the one epoch than 256: batch 192 or 256 falls below 99%
  on some seeds), Adam lr 0.01 betas (0.7, 0.9), the learning rate decaying linearly to
  0 over the run (``LearningRateSchedule``);
- label smoothing 0.1 (soft targets, which both engines' cross-entropy takes): worth
  about +0.2% test accuracy after one epoch here;
- on the torch engine: batches gathered with ``index_select``, one fused Adam kernel
  per step, channels-last tensors, and bfloat16 autocast where the CPU computes it
  natively (AVX512-BF16 / AMX). The weights stay float32; the saved model is an
  ordinary float32 mnistlab model that both engines load.

The recipe records data loading and training seconds separately (``data_seconds``,
``train_seconds`` in metrics.json); the runner evaluates on the full test set after.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from mnistlab.engines.numpy import Sequential
from mnistlab.errors import MnistlabError
from mnistlab.experiments.context import Trained
from mnistlab.nn import (
    Activation,
    Adam,
    Conv2D,
    Cropping2D,
    Dense,
    Flatten,
    MaxPooling2D,
)

SCHEDULES = ("constant", "linear", "onecycle")
PRECISIONS = ("auto", "float32", "bfloat16")

FAST_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 128,
    "lr": 0.01,
    "beta_1": 0.7,
    "beta_2": 0.9,
    "schedule": "linear",
    "warmup": 0.0,  # fraction of the steps spent warming up (onecycle: its pct_start)
    "label_smoothing": 0.1,
    "crop": 2,  # border pixels cut from each side first (MNIST's digits fill the middle)
    "conv1": 16,  # filters of the 5x5 stride-2 convolution
    "conv2": 32,  # filters of the 3x3 convolution
    "dense": 192,  # hidden units
    "precision": "auto",  # torch: bfloat16 autocast where the CPU has it natively
    "channels_last": True,  # torch only
    "threads": 0,  # torch.set_num_threads; 0 leaves torch's default (all cores)
    "seed": 0,
}

MAX_CROP = 8  # 28 - 2 * 8 = 12 pixels: the smallest input the two convolutions and pool take

# The valid values of the fast recipe's own settings, in words and as a test of the value
# (already parsed to its default's type); `resolve_config` in recipes.py applies them to the
# overrides and names the option in its error. epochs, batch_size, lr, seed: the common checks.
FAST_CHECKS: dict[str, tuple[str, Any]] = {
    "beta_1": ("a number from 0 to 1 (1 excluded)", lambda v: 0.0 <= v < 1.0),
    "beta_2": ("a number from 0 to 1 (1 excluded)", lambda v: 0.0 <= v < 1.0),
    "schedule": (f"one of: {', '.join(SCHEDULES)}", lambda v: v in SCHEDULES),
    "warmup": ("a fraction from 0 to 1 (1 excluded)", lambda v: 0.0 <= v < 1.0),
    "label_smoothing": ("a number from 0 to 1 (1 excluded)", lambda v: 0.0 <= v < 1.0),
    "crop": (f"an integer from 0 to {MAX_CROP}", lambda v: 0 <= v <= MAX_CROP),
    "conv1": ("an integer from 1 to 1024", lambda v: 1 <= v <= 1024),
    "conv2": ("an integer from 1 to 1024", lambda v: 1 <= v <= 1024),
    "dense": ("an integer from 1 to 65536", lambda v: 1 <= v <= 65536),
    "precision": (f"one of: {', '.join(PRECISIONS)}", lambda v: v in PRECISIONS),
    "threads": ("an integer from 0 (torch's default) to 1024", lambda v: 0 <= v <= 1024),
}


# --------------------------------------------------------------------------- the schedule


def scheduled_lr(
    step: int, total: int, peak: float, schedule: str = "linear", warmup: float = 0.0
) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``, peaking at ``peak``.

    - "constant": ``peak`` throughout;
    - "linear": a linear warmup over ``warmup * total`` steps (none by default), then a
      linear decay that would reach 0 one step after the last;
    - "onecycle": ``torch.optim.lr_scheduler.OneCycleLR`` with ``cycle_momentum=False``
      (cosine from peak/25 up to peak over ``warmup`` of the steps, 0.3 when 0, then
      cosine down to peak/25e4 at the last step).
    """
    if schedule not in SCHEDULES:
        raise MnistlabError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if total < 1 or not 0.0 <= warmup < 1.0:
        raise MnistlabError(f"need total >= 1 steps and 0 <= warmup < 1, got {total}, {warmup}")
    step = min(max(step, 0), total - 1)
    if schedule == "constant":
        return peak
    if schedule == "linear":
        warm = int(warmup * total)
        if step < warm:
            return peak * (step + 1) / warm
        return peak * (total - step) / (total - warm)
    initial = peak / 25.0  # OneCycleLR's div_factor 25, final_div_factor 1e4
    lowest = initial / 1e4
    up_end = float(warmup or 0.3) * total - 1  # its phase ends (step numbers)
    down_end = total - 1
    if step <= up_end:
        start, end, fraction = initial, peak, step / up_end if up_end > 0 else 1.0
    else:
        start, end, fraction = peak, lowest, (step - up_end) / (down_end - up_end)
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)


class LearningRateSchedule:
    """A fit callback that sets ``model.optimizer.lr`` before every step (both engines'
    optimizers have a settable ``lr``), following ``scheduled_lr``. The step count is the
    global step, so a run resumed from a checkpoint continues the same schedule.
    ``lrs`` records the rate each step was taken with."""

    def __init__(
        self,
        peak: float,
        schedule: str = "linear",
        warmup: float = 0.0,
        total_steps: int | None = None,
    ) -> None:
        scheduled_lr(0, 1, peak, schedule, warmup)  # checks the arguments
        self.peak, self.schedule, self.warmup = float(peak), schedule, float(warmup)
        self.total_steps = total_steps
        self.lrs: list[float] = []

    def on_train_begin(self, model: Any, state: dict) -> None:
        self.model, self.state = model, state
        if self.total_steps is None:
            self.total_steps = state["steps_per_epoch"] * state["epochs"]

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        self._set(self.state["global_step"])  # after any resume has moved it

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.lrs.append(self.model.optimizer.lr)  # the rate step ``step`` used
        self._set(step)  # steps counted from 1: the next step's 0-based index is ``step``

    def _set(self, step: int) -> None:
        self.model.optimizer.lr = scheduled_lr(
            step, self.total_steps, self.peak, self.schedule, self.warmup
        )


# --------------------------------------------------------------------------- the model


def fast_model(
    conv1: int = FAST_DEFAULTS["conv1"],
    conv2: int = FAST_DEFAULTS["conv2"],
    dense: int = FAST_DEFAULTS["dense"],
    seed: int | None = 0,
    crop: int = FAST_DEFAULTS["crop"],
) -> Sequential:
    """The fast net: crop - 5x5 stride-2 conv - 3x3 conv - 2x2 max pool - dense - 10.

    Shapes with the defaults: (1, 28, 28) -> crop 2 (1, 24, 24) -> (conv1, 10, 10) ->
    (conv2, 8, 8) -> pool (conv2, 4, 4), the ReLU after the pool -> 16 * conv2 -> dense
    -> 10 (softmax): 105,482 weights. Without the crop the convolutions see (1, 28, 28)
    and the pool gives (conv2, 5, 5): 50% more multiply-adds for the same accuracy.
    """
    first = [Cropping2D(crop)] if crop else []
    return Sequential(
        [
            *first,
            Conv2D(conv1, 5, strides=2, activation="relu"),
            Conv2D(conv2, 3),  # linear: the ReLU comes after the pool
            MaxPooling2D(2),
            Activation("relu"),
            Flatten(),
            Dense(dense, "relu"),
            Dense(10, "softmax"),
        ],
        seed=seed,
        input_shape=(1, 28, 28),
        name="fast",
    )


def smooth_labels(labels: np.ndarray, smoothing: float, classes: int = 10) -> np.ndarray:
    """Integer labels as soft targets: 1 - smoothing + smoothing / classes for the true
    class, smoothing / classes for the others (rows sum to 1); plain labels when 0."""
    if smoothing == 0:
        return labels
    if not 0.0 < smoothing < 1.0:
        raise MnistlabError(f"label_smoothing must be in [0, 1), got {smoothing}")
    targets = np.full((len(labels), classes), smoothing / classes, dtype=np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    return targets


def native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where
    bfloat16 autocast is faster than float32 rather than emulated and slower."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


@contextlib.contextmanager
def precision(model: Any, engine: str, setting: str) -> Iterator[str]:
    """Run the block in the precision ``setting`` asks for; yields the one used.

    bfloat16 is autocast on the torch engine (matmuls and convolutions in bfloat16,
    the loss and the float32 weights as they are); the NumPy engine is float32 only.
    """
    if setting not in PRECISIONS:
        raise MnistlabError(f"unknown precision {setting!r}; choose one of {PRECISIONS}")
    if engine != "torch":
        if setting == "bfloat16":
            raise MnistlabError("precision=bfloat16 needs --engine torch")
        yield "float32"
        return
    import torch

    device = model.device.type
    if setting == "auto":
        native = native_bfloat16() if device == "cpu" else torch.cuda.is_bf16_supported()
        setting = "bfloat16" if native else "float32"
    # no weight-cast cache: it lives as long as the block, which spans many updates
    bf16 = setting == "bfloat16"
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        yield setting


# --------------------------------------------------------------------------- the recipe


def fast(ctx: Any) -> Any:
    """One epoch of the fast net: crop 2 - stride-2 conv 16 - conv 32 - pool - dense 192 - 10,
    Adam (0.7, 0.9) at lr 0.01 decaying linearly to 0, batch 128, label smoothing 0.1."""
    c = ctx.config
    if ctx.engine == "torch":  # imports before the clocks start: one-off process costs
        from mnistlab.engines.torch import to_torch  # (torch; not torch._dynamo: see
        # engines/torch_optim.py)
    started = time.perf_counter()
    (x, y), _ = ctx.data(pixels="unit", layout="image")
    targets = smooth_labels(y, c["label_smoothing"])
    loaded = time.perf_counter()

    restore_threads = _set_threads(ctx.engine, c["threads"])
    try:
        model = fast_model(c["conv1"], c["conv2"], c["dense"], seed=c["seed"], crop=c["crop"])
        if ctx.engine == "torch":
            model = to_torch(model, ctx.device or "auto", channels_last=c["channels_last"])
        model.compile(Adam(c["lr"], c["beta_1"], c["beta_2"]), "categorical_crossentropy")
        schedule = LearningRateSchedule(c["lr"], c["schedule"], c["warmup"])
        with precision(model, ctx.engine, c["precision"]) as used:
            history = ctx.fit(model, x, targets, callbacks=[schedule])
    finally:
        restore_threads()
    trained = time.perf_counter()
    notes = {
        "data_seconds": round(loaded - started, 3),
        "train_seconds": round(trained - loaded, 3),
        "precision": used,
    }
    return Trained(model, history.to_dict(), notes=notes)


def _set_threads(engine: str, threads: int) -> Any:
    """Set torch's intra-op threads for the run (``threads`` > 0); returns the undo."""
    if engine != "torch" or threads <= 0:
        return lambda: None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)
