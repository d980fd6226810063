"""Keras's ``keras.datasets``: ``mnist`` and ``fashion_mnist``, each with ``load_data()``,
served by mnistlab's data layer (downloaded once with checksums, cached, verified)."""

from mnistlab.keras.datasets import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]
