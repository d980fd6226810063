"""Keras's callbacks module: ``keras.callbacks`` for mnistlab's fit (both engines).

Each name is the class in ``mnistlab.training.callbacks`` (``History`` is the one
``training.loop`` fills and fit returns), with Keras 3's constructor arguments, defaults and
behaviour; what differs from Keras (model files are safetensors whatever their name,
``mode="auto"`` decided from the monitored name) is said in each class's docstring.
"""

from __future__ import annotations

from mnistlab.training.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from mnistlab.training.loop import History

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
