"""Recognize a person's own handwriting with a saved model: image in, digit and probabilities out.

Shared by `mnistlab predict` and `mnistlab serve`, so a file and a canvas drawing go through
exactly the same preprocessing and model-input scaling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnistlab.datasets.api import scale_pixels
from mnistlab.errors import ImageError, ModelFileError
from mnistlab.handwriting.preprocess import preprocess_image

BUNDLED_MODEL_NAME = "digits.safetensors"


def bundled_model_path() -> Path:
    """The small model shipped inside the package (see README: how it was trained)."""
    return Path(str(resources.files("mnistlab") / "models" / BUNDLED_MODEL_NAME))


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
    """A model plus the input scaling its spec asks for."""

    def __init__(self, model: Any, name: str = "model") -> None:
        self.model = model
        self.name = name
        spec = model.spec()
        self.input_shape = tuple(spec["input_shape"])
        self.scale = spec.get("preprocess", {}).get("scale", "unit")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str] | None = None) -> Recognizer:
        """Load a saved model, or the bundled one when ``path`` is None."""
        from mnistlab.engines import load_model

        model_path = Path(path) if path is not None else bundled_model_path()
        if not model_path.exists():
            hint = (
                " (the bundled model is missing from this installation; pass --model)"
                if path is None
                else ""
            )
            raise ModelFileError(f"{model_path}: no such model file{hint}")
        return cls(load_model(model_path), name=model_path.name)

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) uint8 MNIST-like images -> the model's input array."""
        x = scale_pixels(images, self.scale)
        return x.reshape(len(images), *self.input_shape)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for MNIST-like uint8 images (N, 28, 28)."""
        return np.asarray(self.model.predict(self.model_input(images)), dtype=np.float64)

    def features_and_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, F) float32, probabilities (N, 10)) in one pass: the features are what
        the model's last Dense layer reads (its penultimate representation, where digits
        of one style lie close together), the probabilities exactly ``probabilities``'s."""
        layers = getattr(self.model, "layers", None)
        heads = [i for i, layer in enumerate(layers or []) if type(layer).__name__ == "Dense"]
        if not heads:
            raise ModelFileError(
                f"{self.name}: profiles need a NumPy-engine model that ends in Dense layers"
            )
        h = self.model.prepare_input(self.model_input(images))
        for layer in layers[: heads[-1]]:
            h = layer.forward(h, False)
        features = h.reshape(len(images), -1).astype(np.float32)
        for layer in layers[heads[-1] :]:
            h = layer.forward(h, False)
        return features, np.asarray(h, dtype=np.float64)

    def recognize_pixels(self, pixels: np.ndarray) -> Prediction:
        """A 28x28 uint8 image already in MNIST form (white on black, centered)."""
        probs = self.probabilities(pixels[None])[0]
        return Prediction(int(np.argmax(probs)), probs, pixels)

    def recognize_image(self, image: Image.Image | np.ndarray, name: str = "image") -> Prediction:
        """Any picture of one digit: preprocessed to MNIST form first."""
        return self.recognize_pixels(preprocess_image(image, name=name))


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
