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

    def recognize_pixels(self, pixels: np.ndarray) -> Prediction:
        """A 28x28 uint8 image already in MNIST form (white on black, centered)."""
        probs = self.probabilities(pixels[None])[0]
        return Prediction(int(np.argmax(probs)), probs, pixels)

    def recognize_image(self, image: Image.Image | np.ndarray, name: str = "image") -> Prediction:
        """Any picture of one digit: preprocessed to MNIST form first."""
        return self.recognize_pixels(preprocess_image(image, name=name))


def parse_pixel_array(values: Any, *, field: str = "pixels") -> np.ndarray:
    """Validate a 28x28 (or flat 784) list of 0..255 values into a uint8 image."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError(f"{field}: must be numbers in a 28x28 or 784-long array") from None
    if array.shape not in ((28, 28), (784,)):
        raise ImageError(f"{field}: expected shape 28x28 or 784 values, got {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ImageError(f"{field}: values must be finite numbers")
    if array.min() < 0 or array.max() > 255:
        raise ImageError(
            f"{field}: values must lie in 0..255, got {array.min():g}..{array.max():g}"
        )
    return np.rint(array).astype(np.uint8).reshape(28, 28)
