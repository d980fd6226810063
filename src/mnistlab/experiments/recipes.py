"""The classic experiments, reproducible by name.

Each recipe is a short function that reads top to bottom like the course notes it comes
from: load the data the way that course did, build the model, train it. What it returns is
evaluated on the test set by the runner (`mnistlab.experiments.runner`), which also writes the run
directory. Hyperparameters live in each recipe's ``defaults``; any of them can be
overridden (``mnistlab train --recipe NAME --set lr=0.05``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.datasets import PIXEL_SCALES, one_hot, scale_to_unit
from mnistlab.engines.numpy import Sequential
from mnistlab.errors import MnistlabError
from mnistlab.experiments.context import Context, Trained
from mnistlab.experiments.fast import FAST_CHECKS, FAST_DEFAULTS, fast
from mnistlab.nn import SGD, Adam, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from mnistlab.nn.losses import LOSSES
from mnistlab.training.callbacks import StopAtAccuracy


@dataclass(frozen=True)
class Recipe:
    """A named experiment with its reference figure."""

    name: str
    title: str
    reference: str  # the figure the course reports, in words
    reference_accuracy: float
    reference_metric: str  # "test_accuracy" or "train_accuracy"
    defaults: dict[str, Any]
    train: Callable[[Context], Trained]
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    engines: tuple[str, ...] = ("numpy", "torch")


def _history(history: Any) -> dict[str, Any] | None:
    return history.to_dict() if history is not None else None


# --------------------------------------------------------------------------- the recipes


def pretrained_sigmoid(ctx: Context) -> Trained:
    """The textbook's chapter 3: a 784-50-100-10 sigmoid net with pretrained weights."""
    from mnistlab.engines.legacy import import_weights

    weights = Path(ctx.config["weights"]).expanduser()
    if not weights.exists():
        raise MnistlabError(
            f"{weights}: pretrained weights not found; pass --set weights=PATH/sample_weight.pkl "
            "or set MNISTLAB_SAMPLE_WEIGHT"
        )
    return Trained(ctx.on_engine(import_weights(weights)), history=None)


def one_layer_sigmoid(ctx: Context) -> Trained:
    """Ten sigmoid units on raw 0-255 pixels, W and b from U(-1, 1), full-batch gradient
    descent, stopped as soon as training accuracy passes 80%. Raw pixels saturate the
    sigmoids, so accuracy jumps around from epoch to epoch: the epoch is reported, not fixed."""
    c = ctx.config
    (x, y), _ = ctx.data(pixels="raw")
    model = Sequential(
        [Dense(10, "sigmoid", "uniform", "uniform", input_shape=(784,))],
        seed=c["seed"], preprocess={"scale": "raw"}, name="one-layer-sigmoid",
    )  # fmt: skip
    model = ctx.on_engine(model)
    model.compile(SGD(c["lr"]), c["loss"])
    stop = StopAtAccuracy(c["stop_at_accuracy"])
    history = ctx.fit(model, x, one_hot(y), batch_size=len(x), shuffle=False, callbacks=[stop])
    train_accuracy = history.history["accuracy"][-1]
    return Trained(model, _history(history), train_accuracy, {"stopped_epoch": stop.stopped_epoch})


def softmax_regression(ctx: Context) -> Trained:
    """Softmax regression, plain full-batch gradient descent. The course ran it on raw 0-255
    pixels with N(0, 1) weights: the logits are huge and the cost jumps around, yet training
    accuracy reaches about 0.91. ``--set pixels=unit`` shows the normalized variant."""
    c = ctx.config
    (x, y), _ = ctx.data(pixels=c["pixels"])
    model = Sequential(
        [Dense(10, "softmax", "normal", "normal", input_shape=(784,))],
        seed=c["seed"], preprocess={"scale": c["pixels"]}, name="softmax-regression",
    )  # fmt: skip
    model = ctx.on_engine(model)
    model.compile(SGD(c["lr"]), "categorical_crossentropy")
    history = ctx.fit(model, x, y, batch_size=len(x), shuffle=False)
    _, train_accuracy = model.evaluate(x, y)
    return Trained(model, _history(history), train_accuracy)


def numerical_30(ctx: Context) -> Trained:
    """784-30-10 sigmoid net trained sample by sample with numerical derivatives (central
    differences, delta 1e-4) instead of backprop, in the course's update order. The naive
    loop takes about 18 hours an epoch; the fast one computes the same differences in about
    a minute."""
    from mnistlab.experiments.course import course_model, course_targets
    from mnistlab.nn.numgrad import train_numerical

    c = ctx.config
    (x, y), _ = ctx.data(pixels="0.01-1")
    model = course_model(hidden=30, seed=c["seed"], dtype="float64")
    steps = train_numerical(
        model, x.astype(np.float64), course_targets(y), lr=c["lr"], epochs=c["epochs"],
        method=c["method"], log_every=c["log_every"],
    )  # fmt: skip
    history = {
        "history": {},
        "epoch": [],
        "steps": [[s, l] for s, l in zip(steps.steps, steps.loss, strict=True)],
    }
    return Trained(model, history)


def backprop_30(ctx: Context) -> Trained:
    """The same 784-30-10 net, loss and per-sample SGD as numerical-30, with backprop."""
    from mnistlab.experiments.course import course_model, course_targets

    c = ctx.config
    (x, y), _ = ctx.data(pixels="0.01-1")
    model = ctx.on_engine(course_model(hidden=30, seed=c["seed"], dtype="float64"))
    model.compile(SGD(c["lr"]), "binary_crossentropy_sum")
    history = ctx.fit(
        model, x, course_targets(y), batch_size=1, shuffle=False, log_every=c["log_every"]
    )
    return Trained(model, _history(history))


def keras_mlp(ctx: Context) -> Trained:
    """Keras's MLP example: Dense(1000, relu) -> Dense(10, softmax), Adam, batch 100."""
    c = ctx.config
    (x, y), test = ctx.data(pixels="unit")
    model = Sequential(
        [Dense(1000, "relu", input_shape=(784,)), Dense(10, "softmax")],
        seed=c["seed"], name="keras-mlp",
    )  # fmt: skip
    model = ctx.on_engine(model)
    model.compile(Adam(c["lr"]), "sparse_categorical_crossentropy")
    history = ctx.fit(model, x, y, validation_data=test)
    return Trained(model, _history(history))


def keras_cnn(ctx: Context) -> Trained:
    """The course CNN: conv 5x5x32 - pool - conv 2x2x64 - pool - dropout .25 - dense 1000 -
    dense 10, Adam."""
    c = ctx.config
    (x, y), test = ctx.data(pixels="unit", layout="image")
    model = Sequential(
        [
            Conv2D(32, 5, padding="same", activation="relu", input_shape=(1, 28, 28)),
            MaxPooling2D(2),
            Conv2D(64, 2, padding="same", activation="relu"),
            MaxPooling2D(2),
            Dropout(0.25),
            Flatten(),
            Dense(1000, "relu"),
            Dense(10, "softmax"),
        ],
        seed=c["seed"],
        name="keras-cnn",
    )
    model = ctx.on_engine(model)
    model.compile(Adam(c["lr"]), "sparse_categorical_crossentropy")
    history = ctx.fit(model, x, y, validation_data=test)
    return Trained(model, _history(history))


def handwriting(ctx: Context) -> Trained:
    """The bundled model for people's own digits: a small CNN (conv 3x3x32 - pool - conv
    3x3x64 - pool - dropout - dense 128 - dense 10), Adam with the learning rate decaying
    each epoch, trained on MNIST plus augmented copies. People's digits reach the model
    through `mnistlab.handwriting.preprocess`, which undoes size and position but not slant,
    rotation or stroke width, so the copies vary those (`mnistlab.handwriting.augment`) and
    are normalized the way preprocess normalizes. Before that, in each copy about
    ``styles`` of the 1s get a flag (and half of those a base) and of the 7s a crossbar
    (``augment.add_styles``): the European styles MNIST's writers rarely used; with
    ``lowres`` above 0, that share of each copy is then seen at a low resolution
    (``augment.lower_resolution``; ``lowres=0.25 seed=2`` is the bundled ensemble's second
    model), and with ``binary`` above 0 that share of those is made black and white first,
    as a bitmap scan is. The copies are made once, up front, from the seed."""
    from mnistlab.handwriting.augment import add_styles, augment, lower_resolution

    c = ctx.config
    (x, y), (x_test, y_test) = ctx.data(pixels="raw", layout="image")  # 0..255
    digits = x[:, 0].astype(np.uint8)  # (N, 28, 28)
    copies = [  # each copy: European 1s and 7s added (``styles`` of them), distorted,
        # then ``lowres`` of them seen at a low resolution
        lower_resolution(
            augment(add_styles(digits, y, [c["seed"], k, 1], fraction=c["styles"]),
                    [c["seed"], k], rotation=c["rotation"], shear=c["shear"],
                    stroke=(c["thinner"], c["thicker"])),
            [c["seed"], k, 2], fraction=c["lowres"], binary=c["binary"])
        for k in range(c["copies"])
    ]  # fmt: skip
    x_train = scale_to_unit(np.concatenate([digits, *copies]))[:, None]  # (M, 1, 28, 28)
    y_train = np.concatenate([y] * (1 + c["copies"]))  # M = N * (1 + copies)
    model = Sequential(
        [
            Conv2D(c["filters"], 3, activation="relu", input_shape=(1, 28, 28)),  # 26x26
            MaxPooling2D(2),  # 13x13
            Conv2D(2 * c["filters"], 3, activation="relu"),  # 11x11
            MaxPooling2D(2),  # 5x5
            Dropout(c["dropout"]),
            Flatten(),
            Dense(128, "relu"),
            Dense(10, "softmax"),
        ],
        seed=c["seed"],
        name="handwriting",
    )
    model = ctx.on_engine(model)
    model.compile(Adam(c["lr"]), "sparse_categorical_crossentropy")

    class Decay:  # lr * decay**epoch, set as each epoch begins (a resumed run matches)
        def on_train_begin(self, model: Any, state: dict) -> None:
            self.model = model

        def on_epoch_begin(self, epoch: int, logs: dict) -> None:
            self.model.optimizer.lr = c["lr"] * c["decay"] ** epoch

    history = ctx.fit(
        model, x_train, y_train, validation_data=(scale_to_unit(x_test), y_test),
        callbacks=[Decay()],
    )  # fmt: skip
    return Trained(model, _history(history), notes={"training_images": len(x_train)})


def _sample_weight_default() -> str:
    return os.environ.get("MNISTLAB_SAMPLE_WEIGHT", "sample_weight.pkl")


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            "pretrained-sigmoid", "Textbook pretrained 784-50-100-10 sigmoid net",
            "0.9352 test accuracy", 0.9352, "test_accuracy",
            {"weights": _sample_weight_default()}, pretrained_sigmoid, datasets=("mnist",),
        ),
        Recipe(
            "one-layer-sigmoid", "One-layer sigmoid classifier, raw pixels, full-batch GD",
            "0.8147 train accuracy at epoch 32", 0.8147, "train_accuracy",
            {"epochs": 200, "lr": 0.1, "loss": "sigmoid_crossentropy_sum",
             "stop_at_accuracy": 0.80, "seed": 0},
            one_layer_sigmoid, datasets=("mnist",),
        ),
        Recipe(
            "softmax-regression", "Softmax regression, full-batch GD on raw pixels",
            "0.9092 train accuracy", 0.9092, "train_accuracy",
            {"epochs": 1000, "lr": 0.01, "pixels": "raw", "seed": 0}, softmax_regression,
        ),
        Recipe(
            "numerical-30", "784-30-10 sigmoid net, numerical-derivative SGD",
            "0.924 test accuracy after 1 epoch", 0.924, "test_accuracy",
            {"epochs": 1, "lr": 0.01, "method": "fast", "log_every": 200, "seed": 0},
            numerical_30, engines=("numpy",),
        ),
        Recipe(
            "backprop-30", "784-30-10 sigmoid net, backprop SGD (compare numerical-30)",
            "0.920-0.923 test accuracy after 1 epoch", 0.92, "test_accuracy",
            {"epochs": 1, "lr": 0.01, "log_every": 200, "seed": 0}, backprop_30,
        ),
        Recipe(
            "keras-mlp", "Keras MLP 784-1000(relu)-10, Adam, batch 100",
            "0.9811 test accuracy after 10 epochs", 0.9811, "test_accuracy",
            {"epochs": 10, "batch_size": 100, "lr": 0.001, "seed": 0}, keras_mlp,
        ),
        Recipe(
            "keras-cnn", "Course CNN conv32-pool-conv64-pool-dropout-dense1000-dense10, Adam, "
            "batch 32 (Keras's default, as the course ran it)",
            "0.9904 test accuracy after 5 epochs", 0.9904, "test_accuracy",
            {"epochs": 5, "batch_size": 32, "lr": 0.001, "seed": 0}, keras_cnn,
        ),
        Recipe(
            "fast", "Fastest path to 99%: crop 2, stride-2 conv16-conv32-pool-dense192, 1 epoch",
            ">= 0.99 test accuracy after 1 epoch", 0.99, "test_accuracy",
            dict(FAST_DEFAULTS), fast, datasets=("mnist",),
        ),
        Recipe(
            "handwriting", "Bundled model: small CNN on MNIST + augmented copies, Adam",
            "0.9952 test accuracy after 6 epochs", 0.9952, "test_accuracy",
            {"epochs": 6, "batch_size": 100, "lr": 0.002, "decay": 0.7, "filters": 32,
             "dropout": 0.25, "copies": 3, "rotation": 15.0, "shear": 0.3, "thinner": -1.0,
             "thicker": 1.5, "styles": 0.5, "lowres": 0.0, "binary": 0.0, "seed": 0},
            handwriting, datasets=("mnist",),
        ),
    ]
}  # fmt: skip


def get_recipe(name: str) -> Recipe:
    """A recipe by name, with a clear error listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise MnistlabError(
            f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}"
        ) from None


MAX_SEED = 2**32 - 1  # the seeds NumPy and torch both take
COUNT = "a positive integer"

# The valid values of each setting, in words and as a test of the value (already parsed to
# its default's type); the fast recipe's own settings are checked by fast.FAST_CHECKS.
SETTING_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epochs": ("an integer from 1 to 1000000", lambda v: 1 <= v <= 1_000_000),
    "batch_size": (COUNT, lambda v: v >= 1),
    "lr": ("a positive finite number", lambda v: 0.0 < v < math.inf),
    "seed": (f"an integer from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED),
    "limit": (f"{COUNT} (the first N training images)", lambda v: v >= 1),
    "test_limit": (f"{COUNT} (the first N test images)", lambda v: v >= 1),
    "weights": (
        "an existing file: the textbook's sample_weight.pkl (or set MNISTLAB_SAMPLE_WEIGHT)",
        lambda v: Path(v).expanduser().is_file(),
    ),
    "loss": (f"one of: {', '.join(LOSSES)}", lambda v: v in LOSSES),
    "stop_at_accuracy": ("a fraction above 0, at most 1", lambda v: 0.0 < v <= 1.0),
    "pixels": (f"one of: {', '.join(PIXEL_SCALES)}", lambda v: v in PIXEL_SCALES),
    "method": ("one of: fast, naive", lambda v: v in ("fast", "naive")),
    "log_every": (COUNT, lambda v: v >= 1),
    "decay": ("a factor above 0, at most 1", lambda v: 0.0 < v <= 1.0),
    "filters": ("an integer from 1 to 1024", lambda v: 1 <= v <= 1024),
    "dropout": ("a fraction from 0 to 1 (1 excluded)", lambda v: 0.0 <= v < 1.0),
    "copies": ("an integer from 0 to 20", lambda v: 0 <= v <= 20),
    "rotation": ("degrees from 0 to 180", lambda v: 0.0 <= v <= 180.0),
    "shear": ("a number from 0 to 1", lambda v: 0.0 <= v <= 1.0),
    "thinner": ("pixels from -1 to 2, at most thicker", lambda v: -1.0 <= v <= 2.0),
    "thicker": ("pixels from -1 to 2, at least thinner", lambda v: -1.0 <= v <= 2.0),
    "styles": ("a fraction from 0 to 1", lambda v: 0.0 <= v <= 1.0),
    "lowres": ("a fraction from 0 to 1", lambda v: 0.0 <= v <= 1.0),
    "binary": ("a fraction from 0 to 1", lambda v: 0.0 <= v <= 1.0),
    **FAST_CHECKS,
}
EXTRA_SETTINGS = ("limit", "test_limit")  # every recipe takes these (default: all images)


def resolve_config(
    recipe: Recipe, overrides: dict[str, str], *, options: dict[str, str] | None = None
) -> dict[str, Any]:
    """The recipe's defaults with ``overrides`` (strings from the command line) applied, each
    parsed to the type of the default it replaces and checked against ``SETTING_CHECKS``.

    A bad override raises MnistlabError naming the option the user gave and the valid values;
    ``options`` maps a setting to that option (``{"batch_size": "--batch-size"}``), by default
    ``--set KEY``."""
    config = dict(recipe.defaults)
    for key, text in overrides.items():
        option = (options or {}).get(key, f"--set {key}")
        if key not in config and key not in EXTRA_SETTINGS:
            known = ", ".join([*config, *EXTRA_SETTINGS])
            raise MnistlabError(
                f"{option}: recipe {recipe.name} has no setting {key!r}; its settings: {known}"
            )
        config[key] = _parse(option, key, text, config.get(key))
    for key, value in config.items():  # a default can be wrong here too (a missing file)
        expected, check = SETTING_CHECKS.get(key, ("", lambda v: True))
        if key not in overrides and not check(value):
            option = (options or {}).get(key, f"--set {key}")
            raise MnistlabError(f"{option}: expected {expected}, got {value} (the default)")
    if "thinner" in config and "thicker" in config and config["thinner"] > config["thicker"]:
        key = "thinner" if "thinner" in overrides else "thicker"
        option = (options or {}).get(key, f"--set {key}")
        raise MnistlabError(
            f"{option}: thinner ({config['thinner']}) must be at most thicker "
            f"({config['thicker']}): pixels from -1 to 2"
        )
    return config


def _parse(option: str, key: str, text: Any, default: Any) -> Any:
    """``text`` as the type of ``default`` (None: an int), checked; MnistlabError naming
    ``option`` and the valid values."""
    text = str(text).strip()
    shown = "all" if default is None else repr(default)
    default = 0 if default is None else default
    expected, check = SETTING_CHECKS.get(key, (_type_name(default), lambda v: True))
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            value: Any = text.lower() in ("true", "1", "yes")
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
        else:
            value = text
        if not check(value):
            raise ValueError(text)
    except ValueError:
        raise MnistlabError(
            f"{option}: expected {expected}, got {text or 'nothing'} (default: {shown})"
        ) from None
    return value


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a finite number"
    return "a value"
