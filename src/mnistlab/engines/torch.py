"""The PyTorch engine: the model spec of docs/CONTRACTS.md as a ``torch.nn.Module``, with
the Keras-style workflow of the NumPy ``Sequential`` and the same weights and files.

    from mnistlab.engines.torch import TorchSequential, to_numpy, to_torch
    model = TorchSequential.from_spec(spec, seed=0, device="cuda")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=100)
    model.save("model.safetensors")     # mnistlab.engines.io's format: the NumPy engine loads it

What is the same as the NumPy engine, by construction:
- weights are created by the NumPy layers from the same seed, then copied in, so one
  seed gives one set of initial weights on both engines;
- names and layouts at the boundary are the NumPy ones ("0.W" is (in, out));
  inside, Dense is ``nn.Linear`` holding W.T;
- "same" padding is Keras's (the odd pixel goes bottom/right, for any stride), taken
  from the NumPy layer's own computation;
- losses are the NumPy formulas; softmax + cross-entropy runs fused on the logits
  (``F.cross_entropy``) exactly where the NumPy model fuses it;
- Adam follows Keras's formula (epsilon added to sqrt(v) before bias correction);
- the epoch order is ``training.epoch_order(n, epoch, shuffle, seed)``, so both engines
  see the same batches.

Training keeps the data on the device as tensors for the whole fit: one conversion,
then each batch is an index into them; losses and accuracy stay on the device and
are read back once per epoch (or when a live progress bar or a callback asks).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from mnistlab.engines import TORCH_HINT, EngineUnavailableError

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # torch is an optional extra
    raise EngineUnavailableError(
        f"the PyTorch engine needs torch, which is not installed here: {TORCH_HINT}"
    ) from exc

from mnistlab.engines.numpy import DTYPES, SPEC_FORMAT, SPEC_VERSION, Sequential, model_from_spec
from mnistlab.errors import TrainingDivergedError
from mnistlab.nn import layers as np_layers
from mnistlab.nn.losses import (
    EPS,
    BinaryCrossentropySum,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    as_targets,
    class_indices,
    get_loss,
)
from mnistlab.nn.optimizers import SGD, Adam, Momentum, Optimizer, get_optimizer
from mnistlab.training.loop import History, _Progress, check_batch_size, epoch_order

Tensor = torch.Tensor
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

__all__ = [
    "SpecLayer",
    "SpecNet",
    "TorchOptimizer",
    "TorchSequential",
    "load_model",
    "resolve_device",
    "to_numpy",
    "to_torch",
    "torch_layer",
]


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """"cpu", "cuda", "cuda:N" or "auto" (CUDA if present) as a checked ``torch.device``."""
    name = "cpu" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
                         ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise EngineUnavailableError(
                f"device {name!r} asked for, but CUDA is not available here (torch "
                f"{torch.__version__}, {build}); use device='cpu' or device='auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EngineUnavailableError(f"device {name!r} asked for, but only "
                                         f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise EngineUnavailableError(f"device {name!r} is not supported by mnistlab's torch "
                                     "engine; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return dev


# ---- layers: one small module per spec layer ----------------------------------------------
def _softmax(z: Tensor) -> Tensor:
    return torch.softmax(z, dim=-1)  # the last axis, as the NumPy softmax


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda z: z,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": _softmax,
}


class SpecLayer(nn.Module):
    """One spec layer: ``pre_activation`` (the linear part, or the whole layer) then
    ``activation``. ``PARAMS`` maps NumPy names to (torch parameter path, transposed)."""

    activation = "linear"
    PARAMS: ClassVar[dict[str, tuple[str, bool]]] = {}

    def pre_activation(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation](self.pre_activation(x))

    def numpy_params(self) -> dict[str, tuple[nn.Parameter, bool]]:
        """{"W": (parameter, stored transposed?), ...} in the NumPy layer's order."""
        return {k: (self.get_parameter(path), tr) for k, (path, tr) in self.PARAMS.items()}


class TorchDense(SpecLayer):
    """Dense: ``nn.Linear`` whose weight (out, in) is the NumPy W (in, out) transposed."""

    PARAMS: ClassVar = {"W": ("dense.weight", True), "b": ("dense.bias", False)}

    def __init__(self, n_in: int, units: int, activation: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.dense, self.activation = nn.Linear(n_in, units, dtype=dtype), activation

    def pre_activation(self, x: Tensor) -> Tensor:  # (N, in) -> (N, units)
        return self.dense(x)


def _torch_pads(pads: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """NumPy's (top, bottom, left, right) as ``F.pad``'s (left, right, top, bottom)."""
    top, bottom, left, right = pads
    return left, right, top, bottom


class TorchConv2D(SpecLayer):
    """Conv2D: ``nn.Conv2d`` with the NumPy layer's Keras-style pads. Symmetric pads go
    to the convolution itself; uneven ones (even kernels, strided "same") to ``F.pad``."""

    PARAMS: ClassVar = {"W": ("conv.weight", False), "b": ("conv.bias", False)}

    def __init__(self, in_channels: int, filters: int, kernel_size: tuple[int, int],
                 strides: tuple[int, int], pads: tuple[int, int, int, int], activation: str,
                 dtype: torch.dtype) -> None:
        super().__init__()
        top, bottom, left, right = pads
        even = top == bottom and left == right
        self.pad = None if even else _torch_pads(pads)
        self.conv = nn.Conv2d(in_channels, filters, kernel_size, stride=strides,
                              padding=(top, left) if even else 0, dtype=dtype)
        self.activation = activation

    def pre_activation(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, F, OH, OW)
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.conv(x)


class TorchMaxPooling2D(SpecLayer):
    """MaxPooling2D: ``nn.MaxPool2d``; "same" pads with -inf, which never wins the max."""

    def __init__(self, pool_size: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.pad = _torch_pads(pads) if any(pads) else None
        self.pool = nn.MaxPool2d(pool_size, strides)

    def pre_activation(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad, value=-math.inf)
        return self.pool(x)


class TorchCropping2D(SpecLayer):
    """Cropping2D: the same slice of H and W (the NumPy layer's ``kept`` index)."""

    def __init__(self, kept: tuple[slice, ...]) -> None:
        super().__init__()
        self.kept = kept

    def pre_activation(self, x: Tensor) -> Tensor:
        return x[self.kept]


class TorchFlatten(SpecLayer):
    """Flatten in C, H, W order (the logical order, also for channels_last tensors)."""

    def pre_activation(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class TorchDropout(SpecLayer):
    """Inverted dropout (``nn.Dropout``): the identity in eval mode."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(rate)

    def pre_activation(self, x: Tensor) -> Tensor:
        return self.dropout(x)


class TorchActivation(SpecLayer):
    """An activation on its own."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation = activation


def torch_layer(layer: np_layers.Layer, dtype: torch.dtype = torch.float32) -> SpecLayer:
    """A torch module computing what the built NumPy ``layer`` computes, with its weights."""
    kind = layer.get_config()["type"]
    act = layer.activation.name if layer.activation is not None else "linear"
    if layer.output_shape is None:
        raise ValueError(f"build the NumPy layer {layer!r} first (its shapes are needed)")
    if kind == "Dense":
        module: SpecLayer = TorchDense(layer.input_shape[0], layer.units, act, dtype)
    elif kind == "Conv2D":
        module = TorchConv2D(layer.input_shape[0], layer.filters, layer.kernel_size,
                             layer.strides, layer.pads, act, dtype)
    elif kind == "MaxPooling2D":
        module = TorchMaxPooling2D(layer.pool_size, layer.strides, layer.pads)
    elif kind == "Cropping2D":
        module = TorchCropping2D(layer.kept)
    elif kind == "Flatten":
        module = TorchFlatten()
    elif kind == "Dropout":
        module = TorchDropout(layer.rate)
    elif kind == "Activation":
        module = TorchActivation(act)
    else:
        raise ValueError(f"the torch engine has no {kind!r} layer yet")
    if act not in ACTIVATIONS:
        raise ValueError(f"the torch engine has no {act!r} activation yet")
    with torch.no_grad():
        for name, (param, transposed) in module.numpy_params().items():
            value = torch.from_numpy(np.ascontiguousarray(layer.params[name]))
            param.copy_(value.T if transposed else value)
    return module


class SpecNet(nn.Module):
    """The layers in order; ``logits=True`` stops before the output activation."""

    def __init__(self, layers: Sequence[SpecLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, logits: bool = False) -> Tensor:
        *body, last = self.layers
        for layer in body:
            x = layer(x)
        return last.pre_activation(x) if logits else last(x)


# ---- optimizer -------------------------------------------------------------------------------
class TorchOptimizer:
    """A NumPy-engine optimizer's hyperparameters, run by ``torch.optim``.

    SGD and Momentum are ``torch.optim.SGD`` (torch's buffer b relates to the NumPy
    velocity as v = -lr * b). For Adam, Keras adds epsilon to sqrt(v) before the bias
    correction while torch adds it after; setting torch's eps to eps / sqrt(1 - b2**t)
    each step makes the two the same formula. ``get_state``/``set_state`` use the NumPy
    optimizer's names and layouts (Adam's moments as averages, which the NumPy Adam's
    ``set_state`` takes too), so training state moves between engines.
    """

    def __init__(self, optimizer: str | Optimizer = "adam") -> None:
        self.spec = _optimizer_copy(get_optimizer(optimizer))  # ours alone: lr may change
        if not isinstance(self.spec, SGD | Momentum | Adam):
            raise ValueError(f"the torch engine runs sgd, momentum and adam, "
                             f"not {type(self.spec).__name__}")
        self.name = self.spec.name
        self.iterations = 0
        self.torch: torch.optim.Optimizer | None = None
        self.bound_to: nn.Module | None = None  # the network whose parameters it updates
        self._table: list[tuple[str, nn.Parameter, bool]] = []
        self._pending: dict[str, np.ndarray] | None = None  # set_state before attach

    @property
    def lr(self) -> float:
        return self.spec.lr

    @lr.setter
    def lr(self, value: float) -> None:
        """Change the learning rate (e.g. from a schedule callback) between steps."""
        old, new = self.spec.lr, float(value)
        self.spec.lr = new
        if self.torch is None:
            return
        for group in self.torch.param_groups:
            group["lr"] = new
        if isinstance(self.spec, Momentum) and old != new and new != 0:
            # keep the NumPy velocity v = -lr * b unchanged: b scales by old / new
            with torch.no_grad():
                for state in self.torch.state.values():
                    if state.get("momentum_buffer") is not None:
                        state["momentum_buffer"].mul_(old / new)

    def get_config(self) -> dict:
        return self.spec.get_config()

    def attach(self, table: list[tuple[str, nn.Parameter, bool]], device: torch.device,
               net: nn.Module | None = None) -> None:
        """Create the torch optimizer over ``table`` (name, parameter, transposed), keeping
        any state it had (by name)."""
        pending = self.get_state() if self.torch is not None else self._pending
        params = [p for _, p, _ in table]
        # one fused kernel per step instead of a pass per operation (CPU: ~4x faster)
        fused = True if device.type in ("cpu", "cuda") else None
        s = self.spec
        if isinstance(s, Adam):
            self.torch = torch.optim.Adam(params, lr=s.lr, betas=(s.beta_1, s.beta_2),
                                          eps=s.epsilon, fused=fused)
        elif isinstance(s, Momentum):
            self.torch = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, fused=fused)
        else:
            self.torch = torch.optim.SGD(params, lr=s.lr, fused=fused)
        self._table, self.bound_to, self._pending = table, net, None
        if pending is not None:
            self.set_state(pending)

    def step(self) -> None:
        """Apply the gradients now in the parameters' ``.grad``."""
        self.iterations += 1
        s = self.spec
        if isinstance(s, Adam):
            self.torch.param_groups[0]["eps"] = s.epsilon / math.sqrt(
                1.0 - s.beta_2**self.iterations)
        self.torch.step()

    def zero_grad(self) -> None:
        self.torch.zero_grad(set_to_none=True)

    def get_state(self) -> dict[str, np.ndarray]:
        """Like ``Optimizer.get_state``: {"iterations": ..., "v.0.W": ...}; for Adam, its
        moments as Keras's averages, "m.0.W" and "v.0.W" (what torch keeps)."""
        out = {"iterations": np.array(self.iterations, dtype=np.int64)}
        if self.torch is None:
            return out
        for name, p, tr in self._table:
            state = self.torch.state.get(p)
            if not state:
                continue
            if isinstance(self.spec, Adam):
                out[f"m.{name}"] = _numpy(state["exp_avg"], tr)
                out[f"v.{name}"] = _numpy(state["exp_avg_sq"], tr)
            elif isinstance(self.spec, Momentum) and state.get("momentum_buffer") is not None:
                out[f"v.{name}"] = _numpy(state["momentum_buffer"], tr) * -self.lr
        return out

    def set_state(self, flat: dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` (of either engine) returned."""
        self.iterations = int(flat["iterations"])
        if isinstance(self.spec, Adam):  # the NumPy engine keeps sums, torch averages
            flat = self.spec.moments_as(flat, "averages")
        if self.torch is None:  # not attached yet: attach() restores it
            self._pending = dict(flat)
            return
        index = {p: i for i, p in enumerate(self.torch.param_groups[0]["params"])}
        state: dict[int, dict[str, Tensor]] = {}
        for name, p, tr in self._table:
            def get(slot: str, p: nn.Parameter = p, tr: bool = tr, name: str = name) -> Tensor:
                value = torch.from_numpy(np.array(flat[f"{slot}.{name}"], dtype=_np_dtype(p)))
                return (value.T if tr else value).to(p.device).contiguous()
            if isinstance(self.spec, Adam) and f"m.{name}" in flat:
                state[index[p]] = {"step": torch.tensor(float(self.iterations)),
                                   "exp_avg": get("m"), "exp_avg_sq": get("v")}
            elif isinstance(self.spec, Momentum) and f"v.{name}" in flat:
                if self.lr == 0:
                    raise ValueError("cannot restore momentum state with lr = 0")
                state[index[p]] = {"momentum_buffer": get("v") / -self.lr}
        self.torch.load_state_dict({"state": state,
                                    "param_groups": self.torch.state_dict()["param_groups"]})


def _np_dtype(t: Tensor) -> np.dtype:
    return np.dtype(str(t.dtype).removeprefix("torch."))


def _numpy(t: Tensor, transposed: bool = False) -> np.ndarray:
    """A C-contiguous NumPy copy of ``t`` (transposed back to the NumPy layout if asked)."""
    t = t.detach()
    return np.array((t.T if transposed else t).cpu().numpy(), order="C", copy=True)


# ---- the model -------------------------------------------------------------------------------
class TorchSequential:
    """The NumPy ``Sequential``'s API on PyTorch: compile, fit, evaluate, predict, summary,
    get_weights/set_weights (NumPy names and layouts), spec, save (mnistlab.engines.io format).

    Layers are the NumPy layer objects (``mnistlab.nn.Dense`` ...) or come from a spec;
    they are built by the NumPy engine from ``seed`` and copied in.
    """

    def __init__(
        self,
        layers: Sequence[np_layers.Layer] | None = None,
        *,
        seed: int | None = None,
        dtype: str = "float32",
        input_shape: Sequence[int] | None = None,
        preprocess: dict | None = None,
        name: str = "sequential",
        device: str | torch.device = "cpu",
        channels_last: bool = False,
    ) -> None:
        if str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.device = resolve_device(device)
        self.dtype = np.dtype(dtype)
        self.torch_dtype = TORCH_DTYPES[str(self.dtype)]
        self.seed, self.name, self.channels_last = seed, name, bool(channels_last)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.preprocess = dict(preprocess) if preprocess is not None else {"scale": "unit"}
        self.configs: list[dict] = []
        self.loss: Loss | None = None
        self.optimizer: TorchOptimizer | None = None
        self.metrics: list[str] = []
        self.stop_training = False
        self.built = False
        self.net: SpecNet | None = None
        for layer in layers or ():
            self.add(layer)

    def add(self, layer: np_layers.Layer) -> None:
        """Append a (NumPy) layer; the model is (re)built from its seed on next use."""
        if not isinstance(layer, np_layers.Layer):
            raise TypeError(f"expected a mnistlab.nn Layer, got {type(layer).__name__}")
        if not self.configs and self.input_shape is None and layer.input_shape is not None:
            self.input_shape = tuple(layer.input_shape)
        self.configs.append(layer.get_config())
        self.built = False

    # ---- building ----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict, seed: int | None = 0, device: str | torch.device = "cpu",
                  channels_last: bool = False) -> TorchSequential:
        """Build (uncompiled) the model a spec describes; same seed, same weights as NumPy."""
        return to_torch(model_from_spec(spec, seed=seed), device, channels_last=channels_last)

    def build(self, input_shape: Sequence[int] | None = None, seed: int | None = None) -> None:
        """Create all weights (by the NumPy layers, from ``seed``) and the torch modules."""
        template = Sequential([np_layers.layer_from_config(c) for c in self.configs],
                              seed=self.seed if seed is None else seed, dtype=str(self.dtype),
                              input_shape=self.input_shape, preprocess=self.preprocess,
                              name=self.name)
        template.build(input_shape)
        self._adopt(template)

    def _adopt(self, model: Sequential) -> None:
        """Take layers, shapes and weights from a built NumPy model."""
        self.seed, self.input_shape = model.seed, tuple(model.input_shape)
        self.configs = [layer.get_config() for layer in model.layers]
        self._rows = [(type(layer).__name__,
                       layer.activation.name if layer.activation is not None else "",
                       tuple(layer.output_shape)) for layer in model.layers]
        net = SpecNet([torch_layer(layer, self.torch_dtype) for layer in model.layers])
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net.to(self.device)
        self.built = True

    def _ensure_built(self, x: Any = None) -> SpecNet:
        if not self.built:
            self.build(None if self.input_shape is not None or x is None else x.shape[1:])
        return self.net

    @property
    def layers(self) -> list[SpecLayer]:
        return list(self._ensure_built().layers)

    def compile(self, optimizer: str | Optimizer | TorchOptimizer = "adam",
                loss: str | Loss = "categorical_crossentropy",
                metrics: Sequence[str] | None = ("accuracy",)) -> None:
        """Choose optimizer and loss, by NumPy-engine name or object (accuracy is the metric)."""
        unknown = [m for m in metrics or () if m not in ("accuracy", "acc")]
        if unknown:
            raise ValueError(f"unsupported metrics {unknown}; only 'accuracy' is computed")
        loss = get_loss(loss)
        if not isinstance(loss, CategoricalCrossentropy | BinaryCrossentropySum
                          | MeanSquaredError):
            raise ValueError(f"the torch engine has no loss {type(loss).__name__}")
        self.loss = loss
        self.optimizer = optimizer if isinstance(optimizer, TorchOptimizer) else \
            TorchOptimizer(optimizer)
        self.metrics = ["accuracy"] if metrics else []

    @property
    def fused(self) -> bool:
        """True when the output activation is folded into the loss (softmax + CE)."""
        act = self._rows[-1][1] if self.built else None
        fusable = self.loss.fused_activation if self.loss is not None else None
        return act is not None and fusable is not None and act == fusable

    # ---- tensors in, losses out -------------------------------------------------------------
    def as_input(self, x: Any) -> Tensor:
        """``x`` (NumPy or torch, (N, *input_shape)) as a tensor on the device, model dtype."""
        if not isinstance(x, Tensor):
            x = np.asarray(x)
        self._ensure_built(x)
        if tuple(x.shape[1:]) != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            raise ValueError(f"expected inputs of shape (N, {want}), got {tuple(x.shape)}; "
                             "reshape them")
        if not isinstance(x, Tensor):
            x = np.asarray(x, dtype=self.dtype)
            x = torch.from_numpy(x if x.flags.writeable else x.copy())
        x = x.to(self.device, self.torch_dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def as_targets(self, y: Any) -> tuple[Tensor, Tensor]:
        """Labels as (loss target, accuracy target) tensors on the device.

        Loss target: class indices (int64) for fused cross-entropy on integer labels,
        else targets shaped like the outputs (one-hot for integer labels). Accuracy
        target: class indices, or booleans (t > 0.5) for a single output.
        """
        y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
        out_shape = self._rows[-1][2] if self.built else None
        if out_shape is None:
            raise RuntimeError("build the model before converting labels")
        idx = class_indices(y)
        if out_shape == (1,):
            t = as_targets(y, np.empty((len(y), 1), dtype=self.dtype))
            target = torch.from_numpy(np.ascontiguousarray(t)).to(self.device)
            return target, target > 0.5
        if idx is not None:
            labels = torch.from_numpy(idx.astype(np.int64)).to(self.device)
            if self.fused:
                return labels, labels
            k = out_shape[-1]
            return F.one_hot(labels, k).to(self.torch_dtype), labels
        t = as_targets(y, np.empty((len(y), *out_shape), dtype=self.dtype))
        target = torch.from_numpy(np.ascontiguousarray(t)).to(self.device)
        return target, target.argmax(dim=-1)

    def _loss(self, out: Tensor, target: Tensor) -> Tensor:
        """The compiled loss of ``out`` (logits when fused), as the NumPy engine defines it."""
        loss = self.loss
        if isinstance(loss, CategoricalCrossentropy):
            if self.fused:  # mean over rows of -log softmax(z)[t] (or -sum t log softmax)
                return F.cross_entropy(out, target)
            return -(target * torch.log(out + EPS)).sum() / len(out)
        if isinstance(loss, BinaryCrossentropySum):
            return -(target * torch.log(out + EPS)
                     + (1 - target) * torch.log(1 - out + EPS)).sum()
        return F.mse_loss(out, target)  # mean over all elements

    def _correct(self, out: Tensor, target: Tensor) -> Tensor:
        """How many rows of ``out`` are right (a 0-d tensor: no sync)."""
        if out.shape[-1] == 1:
            if self.fused:
                out = torch.softmax(out, dim=-1)
            return ((out > 0.5) == target).sum()
        return (out.argmax(dim=-1) == target).sum()

    def _step(self, xb: Tensor, tb: Tensor, ab: Tensor) -> tuple[Tensor, Tensor]:
        """One forward, backward and update; (loss, correct) stay on the device."""
        out = self.net(xb, logits=self.fused)
        loss = self._loss(out, tb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach(), self._correct(out.detach(), ab)

    def _ensure_ready(self) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        self._ensure_built()
        if self.optimizer.bound_to is not self.net:  # new compile, or rebuilt
            self.optimizer.attach(self._param_table(), self.device, self.net)

    def train_step(self, x: Any, y: Any) -> tuple[float, float]:
        """One update on a batch (NumPy in): (loss, accuracy), like the NumPy engine's."""
        self._ensure_ready()
        xb, (tb, ab) = self.as_input(x), self.as_targets(y)
        self.net.train()
        loss, correct = self._step(xb, tb, ab)
        return float(loss), float(correct) / len(xb)

    def loss_and_grads(self, x: Any, y: Any,
                       training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward without updating: (loss, gradients in NumPy names/layouts)."""
        if self.loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        xb, (tb, _) = self.as_input(x), self.as_targets(y)
        self.net.train(training)
        self.net.zero_grad(set_to_none=True)
        loss = self._loss(self.net(xb, logits=self.fused), tb)
        loss.backward()
        grads = {name: _numpy(p.grad, tr) for name, p, tr in self._param_table()}
        self.net.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    # ---- Keras-style workflow ---------------------------------------------------------------
    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
            seed: int | None = None, verbose: int = 1, callbacks: Sequence[Any] | None = None,
            log_every: int = 1) -> History:
        """Train like ``mnistlab.training.fit`` (same History, callbacks, epoch order), with
        the data converted to device tensors once and read back once per epoch."""
        batch_size = check_batch_size(batch_size)
        self._ensure_ready()
        x_all, (t_all, a_all) = self.as_input(x), self.as_targets(y)
        if len(x_all) == 0 or len(x_all) != len(t_all):
            raise ValueError(f"need as many labels as inputs (> 0), got {len(x_all)} and "
                             f"{len(t_all)}")
        val = None
        if validation_data is not None:
            val = (self.as_input(validation_data[0]), *self.as_targets(validation_data[1]))
        n, history, callbacks = len(x_all), History(), list(callbacks or ())
        summed = self.loss.reduction == "sum"
        steps_per_epoch = math.ceil(n / batch_size)
        state = {"epoch": 0, "global_step": 0, "epochs": epochs, "batch_size": batch_size,
                 "steps_per_epoch": steps_per_epoch, "seed": seed, "history": history}
        per_batch = any(hasattr(cb, "on_batch_end") for cb in callbacks)
        dropout_seed = seed if seed is not None else self.seed
        self.stop_training = False
        _call(callbacks, "on_train_begin", self, state)
        step, window = state["global_step"], []
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices, enabled=dropout_seed is not None), \
                _Progress(verbose, epochs, steps_per_epoch) as progress:
            for epoch in range(state["epoch"], epochs):
                _call(callbacks, "on_epoch_begin", epoch, {})
                if dropout_seed is not None:  # dropout masks: seeded by (seed, epoch)
                    torch.manual_seed(int(np.random.SeedSequence([dropout_seed, epoch])
                                          .generate_state(1)[0]))
                order = epoch_order(n, epoch, shuffle, seed)
                order = None if order is None else torch.from_numpy(order).to(self.device)
                started, last_shown = time.perf_counter(), 0.0
                losses = torch.zeros(steps_per_epoch, dtype=torch.float64, device=self.device)
                corrects = torch.zeros(steps_per_epoch, dtype=torch.int64, device=self.device)
                sizes, logs = [], {}
                self.net.train()
                for start in range(0, n, batch_size):
                    if order is None:  # contiguous slices: views, no copy
                        sl = slice(start, start + batch_size)
                        xb, tb, ab = x_all[sl], t_all[sl], a_all[sl]
                    else:
                        idx = order[start : start + batch_size]
                        # index_select: 4x faster than x_all[idx] for a batch of images
                        xb, tb = x_all.index_select(0, idx), t_all.index_select(0, idx)
                        ab = tb if a_all is t_all else a_all.index_select(0, idx)
                    i = len(sizes)
                    losses[i], corrects[i] = self._step(xb, tb, ab)
                    sizes.append(len(xb))
                    step += 1
                    now = time.perf_counter() - started
                    if per_batch or (progress.live and now - last_shown > 0.25):
                        logs = _epoch_logs(losses, corrects, sizes, summed, epoch, step)
                        progress.batch(epoch, i + 1, logs, now)
                        last_shown = now
                        if per_batch:
                            batch = {"batch_loss": float(losses[i]),
                                     "batch_accuracy": float(corrects[i]) / len(xb)}
                            _call(callbacks, "on_batch_end", step,
                                  {**logs, **batch, "epoch": epoch})
                    if self.stop_training:
                        break
                logs = _epoch_logs(losses, corrects, sizes, summed, epoch, step)
                history.steps.extend(_windows(losses[: len(sizes)].tolist(), window,
                                              step - len(sizes), log_every))
                if val is not None:
                    v = self._evaluate_tensors(*val)
                    logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
                history.record_epoch(epoch, logs)
                progress.epoch_end(epoch, len(sizes), logs, time.perf_counter() - started)
                state.update(epoch=epoch + 1, global_step=step)
                _call(callbacks, "on_epoch_end", epoch, logs)
                if self.stop_training:
                    break
        if window:  # the last, partial window of step losses
            history.steps.append((step, float(np.mean(window))))
        _call(callbacks, "on_train_end", self, state)
        return history

    def _evaluate_tensors(self, x: Tensor, t: Tensor, a: Tensor,
                          batch_size: int | None = None) -> dict[str, float]:
        if self.loss is None:
            raise RuntimeError("call compile(optimizer, loss) first")
        size = self._chunk_rows(batch_size)
        mean = self.loss.reduction == "mean"
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        training = self.net.training
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(x), size):
                xb = x[start : start + size]
                out = self.net(xb, logits=self.fused)
                loss = self._loss(out, t[start : start + size])
                total += loss * len(xb) if mean else loss
                correct += self._correct(out, a[start : start + size])
        self.net.train(training)
        loss = float(total) / len(x) if mean else float(total)
        return {"loss": loss, "accuracy": float(correct) / len(x)}

    def evaluate(self, x: Any, y: Any, batch_size: int | None = None,
                 return_dict: bool = False) -> tuple[float, float] | dict[str, float]:
        """(loss, accuracy) over all of x (or a dict with those keys)."""
        result = self._evaluate_tensors(self.as_input(x), *self.as_targets(y), batch_size)
        return result if return_dict else (result["loss"], result["accuracy"])

    def _chunk_rows(self, batch_size: int | None) -> int:
        """``batch_size`` checked, or the automatic chunk size if it is None."""
        return self.predict_batch_size() if batch_size is None else check_batch_size(batch_size)

    def predict_batch_size(self) -> int:
        """Rows per inference chunk: about 16M floats of the largest activation."""
        self._ensure_built()
        per_sample = max(math.prod(shape) for *_, shape in self._rows)
        return max(1, 2**24 // max(per_sample, math.prod(self.input_shape)))

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Outputs (probabilities after a softmax) for all of ``x``, as a NumPy array."""
        x = self.as_input(x)
        size = self._chunk_rows(batch_size)
        training = self.net.training
        self.net.eval()
        with torch.inference_mode():
            out = torch.cat([self.net(x[s : s + size]) for s in range(0, len(x), size)])
        self.net.train(training)
        return out.cpu().numpy()

    def count_params(self) -> int:
        return sum(p.numel() for p in self._ensure_built().parameters())

    def summary(self, print_fn: Callable[[str], Any] = print) -> int:
        """Print the NumPy engine's table (layers, output shapes, parameters); return total."""
        net = self._ensure_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for i, ((kind, act, shape), layer) in enumerate(zip(self._rows, net.layers, strict=True)):
            kind += f", {act}" if act and act != "linear" else ""
            params = sum(p.numel() for p in layer.parameters())
            rows.append((f"{i} ({kind})", str((None, *shape)), f"{params:,}"))
        widths = [max(len(r[c]) for r in rows) + 3 for c in range(3)]
        line = "".join(cell.ljust(w) for cell, w in zip(rows[0], widths, strict=True))
        total = self.count_params()
        print_fn(f'Model: "{self.name}"  (torch on {self.device}, dtype {self.dtype}, '
                 f"input {(None, *self.input_shape)})")
        print_fn("_" * len(line))
        print_fn(line)
        print_fn("=" * len(line))
        for row in rows[1:]:
            print_fn("".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        print_fn("=" * len(line))
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {total:,}")
        print_fn("Non-trainable params: 0")
        print_fn("_" * len(line))
        return total

    # ---- weights and spec ------------------------------------------------------------------
    def _param_table(self) -> list[tuple[str, nn.Parameter, bool]]:
        """(NumPy name, torch parameter, stored transposed?) for every weight, in order."""
        net = self._ensure_built()
        return [(f"{i}.{k}", p, tr) for i, layer in enumerate(net.layers)
                for k, (p, tr) in layer.numpy_params().items()]

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of all weights with the NumPy names and layouts ("0.W" is (in, out))."""
        return {name: _numpy(p, tr) for name, p, tr in self._param_table()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy ``weights`` (NumPy names, shapes and layouts) into the model."""
        table = self._param_table()
        names = {name for name, _, _ in table}
        missing, extra = sorted(names - weights.keys()), sorted(weights.keys() - names)
        if missing or extra:
            raise ValueError(f"weight names do not match the model: missing {missing}, "
                             f"unexpected {extra}")
        with torch.no_grad():
            for name, p, tr in table:
                value = np.asarray(weights[name])
                want = tuple(p.shape[::-1] if tr else p.shape)
                if value.shape != want:
                    raise ValueError(f"weight {name!r} has shape {value.shape}, "
                                     f"the model needs {want}")
                value = torch.from_numpy(value.astype(self.dtype, casting="same_kind"))
                p.copy_(value.T if tr else value)

    def spec(self) -> dict:
        """The JSON-safe model spec of docs/CONTRACTS.md (the same as the NumPy engine's)."""
        self._ensure_built()
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION,
                "input_shape": list(self.input_shape), "dtype": str(self.dtype),
                "layers": [dict(c) for c in self.configs], "preprocess": dict(self.preprocess)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save spec and weights with ``mnistlab.engines.io.save_model``: either engine loads it."""
        from mnistlab.engines.io import save_model

        save_model(self, path)

    def to(self, device: str | torch.device) -> TorchSequential:
        """Move the model (and any optimizer state) to ``device``; returns self."""
        self.device = resolve_device(device)
        if self.net is not None:
            self.net.to(self.device)
            if self.optimizer is not None and self.optimizer.bound_to is self.net:
                self.optimizer.attach(self._param_table(), self.device, self.net)
        return self

    def __repr__(self) -> str:
        return (f"TorchSequential({self.configs!r}, dtype={str(self.dtype)!r}, "
                f"device={str(self.device)!r})")


def _epoch_logs(losses: Tensor, corrects: Tensor, sizes: list[int], summed: bool,
                epoch: int, step: int) -> dict[str, float]:
    """Running {"loss", "accuracy"} of this epoch (one device read); raises on divergence."""
    k = len(sizes)
    if k == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    n = torch.tensor(sizes, dtype=torch.float64, device=losses.device)
    values = torch.stack([losses[:k].sum(), (losses[:k] * n).sum(), corrects[:k].sum()])
    total, weighted, correct = values.tolist()
    if not math.isfinite(total):
        bad = int(torch.nonzero(~torch.isfinite(losses[:k]))[0])
        value = float(losses[bad])
        raise TrainingDivergedError(f"loss became {value} at epoch {epoch + 1}, "
                                    f"step {step - k + bad + 1}")
    seen = sum(sizes)
    return {"loss": total if summed else weighted / seen, "accuracy": correct / seen}


def _windows(losses: list[float], window: list[float], first_step: int,
             every: int) -> list[tuple[int, float]]:
    """``training.fit``'s step history: the mean loss of each ``every`` steps. ``window``
    carries the unfinished window across epochs (it is updated in place)."""
    points = []
    for k, loss in enumerate(losses, start=first_step + 1):
        window.append(loss)
        if k % every == 0:
            points.append((k, float(np.mean(window))))
            window.clear()
    return points


def _call(callbacks: list[Any], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


# ---- conversions ---------------------------------------------------------------------------
def _optimizer_copy(optimizer: Any) -> Optimizer:
    """A fresh NumPy optimizer with the hyperparameters of ``optimizer`` (either engine's)."""
    config = dict(optimizer.get_config())
    return type(get_optimizer(config.pop("name")))(**config)


def to_torch(model: Sequential, device: str | torch.device = "cpu",
             channels_last: bool = False) -> TorchSequential:
    """The NumPy ``model`` on torch: same spec and weights; compile settings and
    optimizer state carry over when it was compiled."""
    spec = model.spec()  # builds it if needed
    out = TorchSequential(seed=model.seed, dtype=spec["dtype"], input_shape=spec["input_shape"],
                          preprocess=spec["preprocess"], name=model.name, device=device,
                          channels_last=channels_last)
    out._adopt(model)
    if model.loss is not None and model.optimizer is not None:
        out.compile(_optimizer_copy(model.optimizer), get_loss(model.loss.name),
                    model.metrics or None)
        if model.optimizer.iterations:
            out.optimizer.set_state(model.optimizer.get_state())
    return out


def to_numpy(model: TorchSequential) -> Sequential:
    """The torch ``model`` on the NumPy engine: same spec and weights; compile settings
    and optimizer state carry over when it was compiled."""
    out = model_from_spec(model.spec(), seed=model.seed)
    out.name = model.name
    out.set_weights(model.get_weights())
    if model.loss is not None and model.optimizer is not None:
        out.compile(_optimizer_copy(model.optimizer), model.loss.name, model.metrics or None)
        if model.optimizer.iterations:
            out.optimizer.set_state(model.optimizer.get_state())
    return out


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               channels_last: bool = False) -> TorchSequential:
    """Load a file written by either engine (``mnistlab.engines.io`` checks it) onto torch."""
    from mnistlab.engines.numpy import load_model as load_numpy

    return to_torch(load_numpy(path), device, channels_last=channels_last)
