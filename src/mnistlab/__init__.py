"""mnistlab: MNIST-style handwritten digit recognition, from first principles to fast."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Top-level names, imported on first use so that `import mnistlab` (and the CLI) stays
# fast: name -> module that defines it.
_LAZY = {
    "Sequential": "mnistlab.nn.model",
    "load_model": "mnistlab.io",
    "save_model": "mnistlab.io",
    "import_weights": "mnistlab.legacy",
    "load_mnist": "mnistlab.datasets",
    "load_data": "mnistlab.datasets",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
