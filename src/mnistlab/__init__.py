"""mnistlab: MNIST-style handwritten digit recognition, from first principles to a fast classifier."""

from __future__ import annotations

__version__ = "0.1.0"
