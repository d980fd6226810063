"""Engines: the same model spec runs on the NumPy engine or on PyTorch.

    from mnistlab.engines import build_model
    model = build_model(spec, engine="torch", device="cuda", seed=0)

The NumPy engine (``mnistlab.nn``) is always there. The PyTorch engine
(``mnistlab.engines.torch``) is an optional extra and is imported only when asked
for, so ``import mnistlab`` and everything NumPy never import torch.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from mnistlab.errors import MnistlabError

ENGINES = ("numpy", "torch")
TORCH_HINT = "pip install 'mnistlab[torch]' (tested with torch==2.13.0)"

__all__ = [
    "ENGINES",
    "EngineUnavailableError",
    "build_model",
    "load_model",
    "torch_available",
]


class EngineUnavailableError(MnistlabError, RuntimeError):
    """The engine or device asked for cannot run here (torch not installed, no CUDA)."""


def torch_available() -> bool:
    """True if torch is installed; checks without importing it."""
    return importlib.util.find_spec("torch") is not None


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    return engine


def _torch_engine() -> Any:
    """The mnistlab.engines.torch module (EngineUnavailableError without torch)."""
    from mnistlab.engines import torch as torch_engine

    return torch_engine


def build_model(spec: dict, engine: str = "numpy", device: str | None = None,
                seed: int | None = 0, **options: Any) -> Any:
    """An uncompiled model for ``spec`` on ``engine``; same seed, same initial weights.

    ``device`` ("cpu", "cuda", "cuda:N"; None means "auto": CUDA where there is one) and
    ``options`` (e.g. ``channels_last=True``) apply to the torch engine only; the NumPy
    engine always runs on the CPU.
    """
    if _check_engine(engine) == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy engine runs on the CPU only, not {device!r}; "
                             "use engine='torch' for other devices")
        if options:
            raise ValueError(f"options {sorted(options)} apply to the torch engine only")
        from mnistlab.engines.numpy import model_from_spec

        return model_from_spec(spec, seed=seed)
    return _torch_engine().TorchSequential.from_spec(spec, seed=seed,
                                                     device=device or "auto", **options)


def load_model(path: str | os.PathLike[str], engine: str = "numpy",
               device: str | None = None, **options: Any) -> Any:
    """Load a model saved by either engine (``mnistlab.engines.io`` format) onto ``engine``
    (``device`` as in ``build_model``)."""
    if _check_engine(engine) == "numpy":
        if device not in (None, "cpu") or options:
            raise ValueError("device and options apply to the torch engine only")
        from mnistlab.engines.numpy import load_model as load_numpy

        return load_numpy(path)
    return _torch_engine().load_model(path, device=device or "auto", **options)
