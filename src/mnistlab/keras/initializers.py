"""Keras's ``keras.initializers``: the classes by Keras's names (``HeNormal()``), which layers
take as ``kernel_initializer=`` as they take the names ("he_normal"). Arguments other than
the defaults (a seed aside, which the model's seed replaces) are not implemented."""

from __future__ import annotations

from typing import Any

from mnistlab.nn.initializers import INITIALIZERS

__all__ = ["Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal",
           "LecunUniform", "Ones", "RandomNormal", "RandomUniform", "TruncatedNormal", "Zeros",
           "get"]


class Initializer:
    """An initializer named as the engine names it (``name``); the engine draws from the
    model's seed."""

    name = ""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        if kwargs:
            raise NotImplementedError(f"{type(self).__name__}({', '.join(kwargs)}=...) is not "
                                      "implemented in mnistlab.keras: only the defaults")

    def get_config(self) -> dict:
        return {"name": self.name}


def _initializer(class_name: str, name: str) -> type[Initializer]:
    return type(class_name, (Initializer,), {"name": name, "__doc__": f"Keras's {class_name}."})


GlorotUniform = _initializer("GlorotUniform", "glorot_uniform")
GlorotNormal = _initializer("GlorotNormal", "glorot_normal")
HeUniform = _initializer("HeUniform", "he_uniform")
HeNormal = _initializer("HeNormal", "he_normal")
LecunUniform = _initializer("LecunUniform", "lecun_uniform")
LecunNormal = _initializer("LecunNormal", "lecun_normal")
RandomNormal = _initializer("RandomNormal", "random_normal")
RandomUniform = _initializer("RandomUniform", "random_uniform")
TruncatedNormal = _initializer("TruncatedNormal", "truncated_normal")
Zeros = _initializer("Zeros", "zeros")
Ones = _initializer("Ones", "ones")


class Constant(Initializer):
    """Keras's Constant: only 0 and 1 (Zeros, Ones) are implemented."""

    def __init__(self, value: float = 0.0) -> None:
        if value not in (0, 1):
            raise NotImplementedError("Constant(value) is implemented for 0 and 1 only")
        self.name = "zeros" if value == 0 else "ones"


def get(identifier: str | Initializer) -> str:
    """The engine's name for an initializer name or object."""
    name = getattr(identifier, "name", identifier)
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {identifier!r}; choose one of "
                         f"{sorted(INITIALIZERS)}")
    return name
