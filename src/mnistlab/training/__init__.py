"""Training: the one fit loop both engines share, its History, and callbacks.

The loop knows a model only through the contract of ``mnistlab.training.loop`` (a fit
session per engine); it knows nothing of reporting or of files beyond checkpoints.
"""

from __future__ import annotations

from mnistlab.training.loop import History, check_batch_size, epoch_order, fit

__all__ = ["History", "check_batch_size", "epoch_order", "fit"]
