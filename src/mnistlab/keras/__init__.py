"""``mnistlab.keras``: Keras 3's public API for what MNIST courses use, so that a course's
Keras code runs with only its imports changed:

    import tensorflow as tf             ->  import mnistlab as tf   (tf.keras.layers, ...)
    import keras                        ->  from mnistlab import keras
    from tensorflow.keras import layers ->  from mnistlab.keras import layers
    from keras.datasets import mnist    ->  from mnistlab.keras.datasets import mnist

Models run on mnistlab's NumPy engine (``mnistlab.keras.models.Sequential`` is
``mnistlab.Sequential`` with Keras's API); images are channels_last (N, H, W, C) by default,
as in Keras. Submodules: activations, backend, callbacks, datasets, initializers, layers,
losses, metrics, models, optimizers, utils.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "3.0.0-mnistlab"  # the Keras API this follows

_SUBMODULES = ("activations", "backend", "callbacks", "datasets", "initializers", "layers",
               "losses", "metrics", "models", "optimizers", "saving", "utils")
_NAMES = {"Sequential": "models", "load_model": "models", "Input": "layers",
          "InputLayer": "layers"}

__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mnistlab.keras.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"mnistlab.keras.{_NAMES[name]}"), name)
    raise AttributeError(f"mnistlab.keras has no {name!r} (see the README's list of the Keras "
                         "names mnistlab provides)")


def __dir__() -> list[str]:
    return sorted(__all__)
