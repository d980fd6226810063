"""Keras's ``keras.utils``: ``to_categorical`` and ``set_random_seed``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["set_random_seed", "to_categorical"]

_SEED: list[int | None] = [None]


def to_categorical(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Integer labels as float32 one-hot rows, as Keras: (N,) -> (N, num_classes), the
    classes counted from the largest label when ``num_classes`` is None. Labels must be
    whole numbers in [0, num_classes): anything else is an error naming the first one."""
    labels = np.asarray(x)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    if labels.size and (labels.dtype.kind not in "iub"
                        and not np.all(np.isfinite(labels) & (labels == np.round(labels)))):
        bad = int(np.flatnonzero(~(np.isfinite(labels) & (labels == np.round(labels)))
                                 .reshape(-1))[0])
        raise ValueError(f"to_categorical: labels must be whole numbers, got "
                         f"{labels.reshape(-1)[bad]!r} at index {bad}")
    ints = labels.astype(np.int64)
    classes = int(ints.max()) + 1 if num_classes is None and ints.size else int(num_classes or 0)
    bad = np.flatnonzero(((ints < 0) | (ints >= classes)).reshape(-1))
    if bad.size:
        raise ValueError(f"to_categorical: label {ints.reshape(-1)[bad[0]]} at index "
                         f"{bad[0]} is outside [0, {classes}); pass num_classes= or fix the "
                         "labels")
    out = np.zeros((*ints.shape, classes), dtype=np.float32)
    np.put_along_axis(out, ints[..., None], 1.0, axis=-1)
    return out


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's and mnistlab.keras's randomness (the initial weights and
    dropout of models made afterwards), as Keras's ``set_random_seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _SEED[0] = int(seed)


def current_seed() -> int | None:
    """The seed the next model takes: ``set_random_seed``'s, then a fresh one per model, so
    that two models made after one seeding do not start identical (as in Keras)."""
    if _SEED[0] is None:
        return None
    seed = _SEED[0]
    _SEED[0] = int(np.random.default_rng(seed).integers(2**31))
    return seed
