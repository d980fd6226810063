"""mnistlab: MNIST-style handwritten digit recognition, from first principles to fast."""

from __future__ import annotations

import importlib
import os
from typing import Any

# After each matrix product, NumPy's OpenBLAS keeps its worker threads spinning for about
# 0.1 s (2**28 cycles), holding the cores that the engine's elementwise threads (the
# optimizer's update) need next: the MLP's epoch took 1.4x as long. Let them sleep after
# 2**8 cycles instead, unless the user chose. It must be set before NumPy loads OpenBLAS,
# so it applies when mnistlab is imported first (the CLI, the benchmarks).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "8")

__version__ = "0.1.0"

# Top-level names, imported on first use so that `import mnistlab` (and the CLI) stays
# fast: name -> module that defines it.
_LAZY = {
    "Sequential": "mnistlab.engines.numpy",
    "load_model": "mnistlab.engines",
    "save_model": "mnistlab.engines.io",
    "import_weights": "mnistlab.engines.legacy",
    "load_mnist": "mnistlab.datasets",
    "load_data": "mnistlab.datasets",
}

__all__ = ["__version__", "keras", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "keras":  # `import mnistlab as tf; tf.keras.layers.Dense`
        return importlib.import_module("mnistlab.keras")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
