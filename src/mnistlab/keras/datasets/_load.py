"""What ``mnist.load_data`` and ``fashion_mnist.load_data`` share."""

from __future__ import annotations

import numpy as np

from mnistlab.datasets import load_data as load_split


def load(dataset: str, path: str | None = None) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray]]:
    """Keras's ``(x_train, y_train), (x_test, y_test)``: uint8 images (N, 28, 28) and uint8
    labels, writable copies as Keras returns (mnistlab's own loaders give read-only
    memory maps). ``path`` (Keras's cache file name) is accepted and ignored: the files
    live in mnistlab's cache ($MNISTLAB_HOME)."""
    (x_train, y_train), (x_test, y_test) = load_split(dataset)
    return (np.array(x_train), np.array(y_train)), (np.array(x_test), np.array(y_test))
