"""Keras's ``keras.backend`` for what courses call: ``clear_session``, ``image_data_format``,
``floatx``, ``backend``."""

from __future__ import annotations

from mnistlab.keras.layers import reset_names

__all__ = ["backend", "clear_session", "floatx", "image_data_format"]


def clear_session() -> None:
    """Start layer and model names afresh ("dense", "sequential", ...), as Keras's."""
    reset_names()


def image_data_format() -> str:
    """Where mnistlab.keras's image layers expect the channels: Keras's default."""
    return "channels_last"


def floatx() -> str:
    return "float32"


def backend() -> str:
    """The engine under mnistlab.keras."""
    return "mnistlab-numpy"
