"""What a recipe is given (``Context``: its settings, data access, the engine, the
runner's callbacks) and what it returns (``Trained``); the recipes and the fast path
both build on these, and the runner hands them over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnistlab.datasets import PIXEL_SCALES, load_data, scale_pixels
from mnistlab.datasets.api import load_array, load_unit_images
from mnistlab.engines.numpy import Sequential
from mnistlab.errors import MnistlabError

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class Context:
    """What a recipe gets from the runner: its configuration, data access and the fit loop."""

    config: dict[str, Any]
    dataset: str = "mnist"
    engine: str = "numpy"
    device: str | None = None
    callbacks: list[Any] = field(default_factory=list)
    verbose: int = 1
    model: Any = None  # the model being fit, so the runner can save it if training fails

    def data(self, pixels: str = "unit", layout: str = "flat") -> tuple[Split, Split]:
        """Train and test splits, pixels scaled as ``pixels`` ("unit" [0, 1], "raw" 0..255,
        "0.01-1"), shaped "flat" (N, 784) or "image" (N, 1, 28, 28); ``limit`` and
        ``test_limit`` in the config take the first N samples (for quick runs)."""
        limit, test_limit = self.config.get("limit"), self.config.get("test_limit")
        if pixels == "unit":  # the decoded cache's float copy: scale_pixels' values, mapped
            x, x_test = (np.asarray(load_unit_images(self.dataset, key)[:n])
                         for key, n in (("train_images", limit), ("test_images", test_limit)))
            y, y_test = (load_array(self.dataset, key)[:n]
                         for key, n in (("train_labels", limit), ("test_labels", test_limit)))
            return (_shaped(x, layout), y), (_shaped(x_test, layout), y_test)
        (x, y), (x_test, y_test) = load_data(self.dataset)
        x, y = x[:limit], y[:limit]
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
        return (_inputs(x, pixels, layout), y), (_inputs(x_test, pixels, layout), y_test)

    def on_engine(self, model: Sequential) -> Any:
        """The model on the engine asked for (the NumPy model itself, or its torch twin)."""
        if self.engine == "numpy":
            return model
        from mnistlab.engines.torch import to_torch

        return to_torch(model, self.device or "auto")

    def fit(self, model: Any, x: np.ndarray, y: np.ndarray, **options: Any) -> Any:
        """``model.fit`` with the runner's callbacks and the recipe's epochs/batch/seed."""
        options.setdefault("epochs", self.config["epochs"])
        options.setdefault("batch_size", self.config.get("batch_size", 32))
        options.setdefault("seed", self.config.get("seed"))
        callbacks = [*options.pop("callbacks", []), *self.callbacks]
        self.model = model
        return model.fit(x, y, callbacks=callbacks, verbose=self.verbose, **options)


@dataclass
class Trained:
    """A recipe's result: the model and what training recorded."""

    model: Any
    history: dict[str, Any] | None  # History.to_dict() form, or None (no training)
    train_accuracy: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _inputs(images: np.ndarray, pixels: str, layout: str) -> np.ndarray:
    if pixels not in PIXEL_SCALES:
        raise MnistlabError(f"unknown pixel scaling {pixels!r} (one of {', '.join(PIXEL_SCALES)})")
    return _shaped(scale_pixels(images, pixels), layout)


def _shaped(x: np.ndarray, layout: str) -> np.ndarray:
    return x.reshape(len(x), -1) if layout == "flat" else x.reshape(len(x), 1, 28, 28)
