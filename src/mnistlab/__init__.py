"""mnistlab: MNIST-style handwritten digit recognition, from first principles to fast."""

from __future__ import annotations

__version__ = "0.1.0"
