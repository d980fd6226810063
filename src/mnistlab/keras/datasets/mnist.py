"""``keras.datasets.mnist``."""

from __future__ import annotations

import numpy as np

from mnistlab.keras.datasets._load import load


def load_data(path: str = "mnist.npz") -> tuple[tuple[np.ndarray, np.ndarray],
                                                tuple[np.ndarray, np.ndarray]]:
    """MNIST as Keras gives it: ``(x_train, y_train), (x_test, y_test)``, 60,000 and 10,000
    uint8 images (N, 28, 28) with uint8 labels 0-9."""
    return load("mnist", path)
