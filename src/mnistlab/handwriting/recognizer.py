"""Recognize a person's own handwriting with a saved model: image in, digit and probabilities out.

Shared by `mnistlab predict` and `mnistlab serve`, so a file and a canvas drawing go through
exactly the same preprocessing and model-input scaling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnistlab.datasets.api import scale_pixels
from mnistlab.errors import ImageError, ModelFileError
from mnistlab.handwriting.preprocess import preprocess_image
from mnistlab.handwriting.views import reading_views

BUNDLED_MODEL_NAME = "digits.safetensors"
BUNDLED_MODEL_NAMES = (
    BUNDLED_MODEL_NAME,
    "digits-lowres.safetensors",
    "digits-bitmap.safetensors",
)
"""The bundled ensemble: the same small CNN trained on MNIST and its augmented copies; again
with a share of the copies seen at low resolution; and again with half of those made black
and white, as a bitmap scan (README: how, and what each adds)."""


def bundled_model_path() -> Path:
    """The first model of the bundled ensemble (the one whose features profiles keep)."""
    return bundled_model_paths()[0]


def bundled_model_paths() -> list[Path]:
    """Every model file of the bundled ensemble, shipped inside the package."""
    folder = resources.files("mnistlab") / "models"
    return [Path(str(folder / name)) for name in BUNDLED_MODEL_NAMES]


@dataclass(frozen=True)
class Prediction:
    """One recognized digit: the answer, all ten probabilities and the 28x28 image the model saw."""

    digit: int
    probabilities: np.ndarray  # (10,) float
    image: np.ndarray  # (28, 28) uint8, white on black

    def top(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` most probable digits with their probabilities, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(d), float(self.probabilities[d])) for d in order]

    def to_json(self, top_k: int | None = None) -> dict[str, Any]:
        """A JSON-safe dict: digit, probabilities, optionally top-k, and the 28x28 image."""
        out: dict[str, Any] = {
            "digit": self.digit,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
        }
        if top_k:
            out["top"] = [{"digit": d, "probability": round(p, 6)} for d, p in self.top(top_k)]
        out["image"] = self.image.tolist()
        return out


class Recognizer:
    """A model (or an ensemble of models that read the same input) plus the input scaling
    its spec asks for. ``model`` is the first member. Each digit is read in the test-time
    views of ``handwriting.views`` (``views=False``: as it is) and the probabilities are
    averaged over the views and the members."""

    def __init__(
        self, model: Any | Sequence[Any], name: str = "model", *, views: bool = True
    ) -> None:
        members = list(model) if isinstance(model, list | tuple) else [model]
        if not members:
            raise ModelFileError(f"{name}: an ensemble needs at least one model")
        self.members = members
        self.model = members[0]
        self.name = name
        self.views = views
        inputs = [_input_of(m.spec()) for m in members]
        self.input_shape, self.scale = inputs[0]
        for other in inputs[1:]:
            if other != inputs[0]:
                raise ModelFileError(
                    f"{name}: the ensemble's models read different inputs "
                    f"({list(self.input_shape)}, {self.scale} vs {list(other[0])}, {other[1]})"
                )

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str] | None = None, *, views: bool = True
    ) -> Recognizer:
        """Load a saved model, or the bundled ensemble when ``path`` is None."""
        if path is None:
            return cls.from_paths(bundled_model_paths(), views=views, bundled=True)
        return cls.from_paths([path], views=views)

    @classmethod
    def from_paths(
        cls, paths: Sequence[str | os.PathLike[str]], *, views: bool = True, bundled: bool = False
    ) -> Recognizer:
        """Load saved models that read the same input as one ensemble."""
        from mnistlab.engines import load_model

        files = [Path(p) for p in paths]
        for model_path in files:
            if not model_path.exists():
                hint = (
                    " (the bundled model is missing from this installation; pass --model)"
                    if bundled
                    else ""
                )
                raise ModelFileError(f"{model_path}: no such model file{hint}")
        name = " + ".join(p.name for p in files)
        return cls([load_model(p) for p in files], name=name, views=views)

    def count_params(self) -> int:
        """Parameters of every member together."""
        return sum(int(m.count_params()) for m in self.members)

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 MNIST-like images -> the model's input array."""
        x = scale_pixels(images, self.scale)
        return x.reshape(len(images), *self.input_shape)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for MNIST-like uint8 images (N, 28, 28): the mean
        over the views and the members, float64."""
        n = len(images)
        if n == 0:
            return np.zeros((0, *self.model.output_shape))
        return self._mean(self.model_input(self._viewed(images)), n)

    def _viewed(self, images: np.ndarray) -> np.ndarray:
        """The batch the models read: every view of ``images``, view 0 first, or the
        images themselves when views are off."""
        return reading_views(images) if self.views else images

    def _mean(self, x: np.ndarray, n: int) -> np.ndarray:
        """The members' probabilities on the model input ``x`` (the views of ``n`` digits,
        one after another), averaged over members and views: (n, 10) float64."""
        total = sum(np.asarray(m.predict(x), dtype=np.float64) for m in self.members)
        # (views * n, 10) -> (views, n, 10)
        return total.reshape(-1, n, total.shape[-1]).mean(axis=0) / len(self.members)

    def features_and_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, F) float32, probabilities (N, 10)): the features are what the first
        model's last Dense layer reads in view 0 (its penultimate representation,
        where digits of one style lie close together), the probabilities exactly
        ``probabilities``'s."""
        layers = getattr(self.model, "layers", None)
        heads = [i for i, layer in enumerate(layers or []) if type(layer).__name__ == "Dense"]
        if not heads:
            raise ModelFileError(
                f"{self.name}: profiles need a NumPy-engine model that ends in Dense layers"
            )
        n = len(images)
        x = self.model_input(self._viewed(images))  # the views made once, for both
        h = self.model.prepare_input(x[:n])  # view 0
        for layer in layers[: heads[-1]]:
            h = layer.forward(h, False)
        return h.reshape(n, -1).astype(np.float32), self._mean(x, n)

    def recognize_pixels(self, pixels: np.ndarray) -> Prediction:
        """A 28x28 uint8 image already in MNIST form (white on black, centered)."""
        probs = self.probabilities(pixels[None])[0]
        return Prediction(int(np.argmax(probs)), probs, pixels)

    def recognize_image(self, image: Image.Image | np.ndarray, name: str = "image") -> Prediction:
        """Any picture of one digit: preprocessed to MNIST form first."""
        return self.recognize_pixels(preprocess_image(image, name=name))


def _input_of(spec: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    """(input shape, pixel scale) a saved model's spec asks for."""
    return tuple(spec["input_shape"]), spec.get("preprocess", {}).get("scale", "unit")


def parse_pixel_array(values: Any, *, field: str = "pixels") -> np.ndarray:
    """Validate a 28x28 (or flat 784) array of 0..255 numbers into a uint8 image.

    ``values`` is nested lists (as JSON gives) or a numeric numpy array. Every value
    must be a real number: strings ("12"), booleans and null are refused, naming the
    field and the position, rather than converted the way ``np.asarray`` would."""
    if isinstance(values, np.ndarray):
        if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
            raise ImageError(f"{field}: must be numbers, got an array of {values.dtype}")
        if np.iscomplexobj(values):
            raise ImageError(f"{field}: must be real numbers, got an array of {values.dtype}")
        if values.shape not in ((28, 28), (784,)):
            raise ImageError(
                f"{field}: expected shape 28x28 or 784 values, got {list(values.shape)}"
            )
        array = values.astype(np.float64)
    else:
        array = _number_grid(values, field)
    if not np.all(np.isfinite(array)):
        raise ImageError(f"{field}: values must be finite numbers")
    if array.min() < 0 or array.max() > 255:
        raise ImageError(
            f"{field}: values must lie in 0..255, got {array.min():g}..{array.max():g}"
        )
    return np.rint(array).astype(np.uint8).reshape(28, 28)


def _number_grid(values: Any, field: str) -> np.ndarray:
    """784 numbers or 28 rows of 28 numbers (lists or tuples) as a float64 array."""
    if not isinstance(values, (list, tuple)):
        raise ImageError(
            f"{field}: must be numbers in a 28x28 or 784-long array, got {_describe(values)}"
        )
    if len(values) == 28 and all(isinstance(row, (list, tuple)) for row in values):
        lengths = {len(row) for row in values}
        if lengths != {28}:
            got = f"[28, {lengths.pop()}]" if len(lengths) == 1 else "rows of different lengths"
            raise ImageError(f"{field}: expected shape 28x28 or 784 values, got {got}")
        flat = [v for row in values for v in row]
        where = lambda k: f"{field}[{k // 28}][{k % 28}]"  # noqa: E731
    elif len(values) == 784:
        flat = list(values)
        where = lambda k: f"{field}[{k}]"  # noqa: E731
    else:
        shape = [len(values)]
        if values and isinstance(values[0], (list, tuple)):
            shape.append(len(values[0]))
        raise ImageError(f"{field}: expected shape 28x28 or 784 values, got {shape}")
    for k, value in enumerate(flat):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise ImageError(f"{where(k)}: pixel values must be numbers, got {_describe(value)}")
        if isinstance(value, int) and not 0 <= value <= 255:  # also ints too big for a float
            shown = value if abs(value) < 10**15 else "a huge integer"
            raise ImageError(f"{where(k)}: values must lie in 0..255, got {shown}")
    return np.array(flat, dtype=np.float64)


def _describe(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {str(bool(value)).lower()}"
    if isinstance(value, str):
        text = value if len(value) <= 20 else value[:20] + "..."
        return f"the string {text!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
