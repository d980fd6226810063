"""``keras.datasets.fashion_mnist``."""

from __future__ import annotations

import numpy as np

from mnistlab.keras.datasets._load import load


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as Keras gives it: ``(x_train, y_train), (x_test, y_test)``, uint8
    images (N, 28, 28) with uint8 labels 0-9."""
    return load("fashion-mnist")
