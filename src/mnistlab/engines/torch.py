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
- losses are the NumPy formulas, met as ``losses.loss_path`` decides for both engines:
  softmax + cross-entropy on the logits (``F.cross_entropy``), the course's summed sigmoid
  loss with its gradient y - t started at the logits;
- Adam follows Keras's formula (epsilon added to sqrt(v) before bias correction);
- the epoch order is ``training.epoch_order(n, epoch, shuffle, seed)``, so both engines
  see the same batches.

Training runs in ``training.fit``, the loop the NumPy engine runs too; this engine's fit
session keeps the data on the device as tensors for the whole fit (one conversion, then
each batch is an index into them), and each step's loss, rows right and divergence flag
stay on the device, read back once per epoch (or when a live bar or a callback asks).

One module, though long: the layer modules, the optimizer and the model share the NumPy
boundary (names, layouts, the transposed Dense weight), and a reader checks that boundary
in one place; nothing here is imported unless torch is asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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

from mnistlab.engines.base import SequentialBase
from mnistlab.engines.numpy import Sequential, model_from_spec
from mnistlab.engines.torch_optim import dynamo_free
from mnistlab.engines.torch_optim import step as optim_step
from mnistlab.errors import TrainingDivergedError
from mnistlab.nn import layers as np_layers
from mnistlab.nn.losses import (
    EPS,
    BinaryCrossentropy,
    BinaryCrossentropySum,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    as_targets,
    class_indices,
    get_loss,
)
from mnistlab.nn.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer
from mnistlab.training.loop import Steps

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


def _softplus(z: Tensor) -> Tensor:
    # the NumPy formula: max(z, 0) + log(1 + exp(-|z|)) (F.softplus goes linear past 20)
    return torch.clamp(z, min=0) + torch.log1p(torch.exp(-z.abs()))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda z: z,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": _softmax,
    "elu": F.elu,
    "selu": torch.selu,  # Keras's alpha and scale
    "leaky_relu": lambda z: F.leaky_relu(z, 0.2),  # Keras 3's slope for the name
    "softplus": _softplus,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,  # the exact erf form, as Keras 3's default
    "exponential": torch.exp,
}


class SpecLayer(nn.Module):
    """One spec layer: ``pre_activation`` (the linear part, or the whole layer) then
    ``activation``. ``PARAMS`` maps NumPy names to (torch parameter path, transposed);
    ``STATE`` names the buffers that hold the NumPy layer's ``state`` (no optimizer's)."""

    activation = "linear"
    # the NumPy layer's data_format is "channels_last": (N, H, W, C) batches, computed on as
    # (N, C, H, W) through permuted views, as the NumPy layer does (nn.layers.ImageLayer)
    channels_last = False
    PARAMS: ClassVar[dict[str, tuple[str, bool]]] = {}
    STATE: ClassVar[tuple[str, ...]] = ()  # names of buffers holding the NumPy layer's state

    def pre_activation(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            y = ACTIVATIONS[self.activation](self.pre_activation(x.permute(0, 3, 1, 2)))
            return y.permute(0, 2, 3, 1) if y.dim() == 4 else y
        return ACTIVATIONS[self.activation](self.pre_activation(x))

    def numpy_params(self) -> dict[str, tuple[nn.Parameter, bool]]:
        """{"W": (parameter, stored transposed?), ...} in the NumPy layer's order."""
        return {k: (self.get_parameter(path), tr) for k, (path, tr) in self.PARAMS.items()}

    def numpy_state(self) -> dict[str, Tensor]:
        """The NumPy layer's ``state`` (non-trainable, e.g. BatchNormalization's moving
        statistics) as this module's buffers, same names and layouts; {} for most layers."""
        return {name: self.get_buffer(name) for name in self.STATE}


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


class TorchAveragePooling2D(SpecLayer):
    """AveragePooling2D: window sums over the zero-padded image (``F.avg_pool2d`` of the
    padded input times the window area) divided by the NumPy layer's ``count`` of real
    pixels in each window, so "same" padding is not counted (Keras), for uneven pads too."""

    def __init__(self, pool_size: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int], count: np.ndarray, dtype: torch.dtype) -> None:
        super().__init__()
        self.pad = _torch_pads(pads) if any(pads) else None
        self.pool_size, self.strides = pool_size, strides
        area = pool_size[0] * pool_size[1]
        self.register_buffer("rescale", torch.tensor(area / count, dtype=dtype),
                             persistent=False)  # (OH, OW): area / real pixels

    def pre_activation(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return F.avg_pool2d(x, self.pool_size, self.strides) * self.rescale


class TorchGlobalAveragePooling2D(SpecLayer):
    """GlobalAveragePooling2D: the mean over H and W, (N, C, H, W) -> (N, C)."""

    def pre_activation(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class TorchGlobalMaxPooling2D(SpecLayer):
    """GlobalMaxPooling2D: ``max`` over the flattened H*W, whose gradient goes to the
    index it returns (the first maximum), as the NumPy layer's."""

    def pre_activation(self, x: Tensor) -> Tensor:
        return x.flatten(2).max(dim=2).values


class TorchReshape(SpecLayer):
    """Reshape to the NumPy layer's resolved ``output_shape`` (logical order)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def pre_activation(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), *self.shape)


class TorchBatchNormalization(SpecLayer):
    """BatchNormalization, Keras 3's formula written out (``nn.BatchNorm`` would keep the
    unbiased variance in its running average): channel axis 1, biased batch variance,
    moving = moving * momentum + batch * (1 - momentum) in training mode only. gamma and
    beta are parameters; the moving statistics buffers (``numpy_state``), which no
    optimizer sees."""

    STATE: ClassVar = ("moving_mean", "moving_variance")

    def __init__(self, channels: int, momentum: float, epsilon: float, center: bool,
                 scale: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.momentum, self.epsilon = momentum, epsilon
        self.PARAMS = {}
        if scale:
            self.gamma = nn.Parameter(torch.ones(channels, dtype=dtype))
            self.PARAMS["gamma"] = ("gamma", False)
        if center:
            self.beta = nn.Parameter(torch.zeros(channels, dtype=dtype))
            self.PARAMS["beta"] = ("beta", False)
        self.register_buffer("moving_mean", torch.zeros(channels, dtype=dtype))
        self.register_buffer("moving_variance", torch.ones(channels, dtype=dtype))

    def pre_activation(self, x: Tensor) -> Tensor:
        dims = (0, *range(2, x.ndim))  # every axis but the channels
        per_channel = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            var, mean = torch.var_mean(x, dim=dims, correction=0)  # biased, as Keras 3
            with torch.no_grad():
                self.moving_mean.mul_(self.momentum).add_(mean, alpha=1.0 - self.momentum)
                self.moving_variance.mul_(self.momentum).add_(var, alpha=1.0 - self.momentum)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = (x - mean.view(per_channel)) * torch.rsqrt(var + self.epsilon).view(per_channel)
        if "gamma" in self.PARAMS:
            y = y * self.gamma.view(per_channel)
        if "beta" in self.PARAMS:
            y = y + self.beta.view(per_channel)
        return y


class TorchReLU(SpecLayer):
    """Keras's ReLU layer: x above threshold (clipped at max_value), else
    negative_slope * (x - threshold)."""

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float) -> None:
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def pre_activation(self, x: Tensor) -> Tensor:
        y = torch.where(x > self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else torch.clamp(y, max=self.max_value)


class TorchLeakyReLU(SpecLayer):
    """LeakyReLU: ``F.leaky_relu`` with the layer's slope."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def pre_activation(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class TorchSoftmax(SpecLayer):
    """Softmax along the layer's axis (the batch axis counted, as Keras and NumPy)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def pre_activation(self, x: Tensor) -> Tensor:
        return torch.softmax(x, dim=self.axis)


class TorchRescaling(SpecLayer):
    """Rescaling: x * scale + offset."""

    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def pre_activation(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset


def torch_layer(layer: np_layers.Layer, dtype: torch.dtype = torch.float32) -> SpecLayer:
    """A torch module computing what the built NumPy ``layer`` computes, with its weights."""
    kind = layer.get_config()["type"]
    act = layer.activation.name if layer.activation is not None else "linear"
    if layer.output_shape is None:
        raise ValueError(f"build the NumPy layer {layer!r} first (its shapes are needed)")
    if kind == "Dense":
        module: SpecLayer = TorchDense(layer.input_shape[0], layer.units, act, dtype)
    elif kind == "Conv2D":
        module = TorchConv2D(layer.chw[0], layer.filters, layer.kernel_size,
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
    elif kind == "AveragePooling2D":
        module = TorchAveragePooling2D(layer.pool_size, layer.strides, layer.pads, layer.count,
                                       dtype)
    elif kind == "GlobalAveragePooling2D":
        module = TorchGlobalAveragePooling2D()
    elif kind == "GlobalMaxPooling2D":
        module = TorchGlobalMaxPooling2D()
    elif kind == "Reshape":
        module = TorchReshape(layer.output_shape)
    elif kind == "BatchNormalization":
        module = TorchBatchNormalization(len(layer.state["moving_mean"]), layer.momentum,
                                         layer.epsilon,
                                         layer.center, layer.scale, dtype)
    elif kind == "ReLU":
        module = TorchReLU(layer.max_value, layer.negative_slope, layer.threshold)
    elif kind == "LeakyReLU":
        module = TorchLeakyReLU(layer.negative_slope)
    elif kind == "Softmax":
        module = TorchSoftmax(layer.axis)
    elif kind == "Rescaling":
        module = TorchRescaling(layer.scale, layer.offset)
    else:
        raise ValueError(f"the torch engine has no {kind!r} layer yet")
    if act not in ACTIVATIONS:
        raise ValueError(f"the torch engine has no {act!r} activation yet")
    module.channels_last = getattr(layer, "data_format", None) == "channels_last"
    with torch.no_grad():
        for name, (param, transposed) in module.numpy_params().items():
            value = torch.from_numpy(np.ascontiguousarray(layer.params[name]))
            param.copy_(value.T if transposed else value)
        for name, buffer in module.numpy_state().items():  # e.g. BatchNormalization's
            buffer.copy_(torch.from_numpy(np.ascontiguousarray(layer.state[name])))
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

    SGD (with momentum and nesterov) is ``torch.optim.SGD`` (torch's buffer b relates to the
    NumPy velocity as v = -lr * b). For Adam and AdamW (amsgrad too), Keras adds epsilon to
    sqrt(v) before the bias correction while torch adds it after; setting torch's eps to
    eps / sqrt(1 - b2**t) each step makes the two the same formula; torch's AdamW decays
    p -= lr wd p before the step, as Keras. RMSprop puts epsilon inside the square root in
    Keras, outside in torch.optim.RMSprop, so it is written out here with foreach ops.
    ``get_state``/``set_state`` use the NumPy optimizer's names and layouts (Adam's moments
    as averages, which the NumPy Adam's ``set_state`` takes too), so training state moves
    between engines.
    """

    def __init__(self, optimizer: str | Optimizer = "adam") -> None:
        self.spec = _optimizer_copy(get_optimizer(optimizer))  # ours alone: lr may change
        if not isinstance(self.spec, SGD | Adam | RMSprop):
            raise ValueError(f"the torch engine runs sgd, momentum, adam, adamw and rmsprop, "
                             f"not {type(self.spec).__name__}")
        self.name = self.spec.name
        self.iterations = 0
        self.torch: torch.optim.Optimizer | None = None
        self.bound_to: nn.Module | None = None  # the network whose parameters it updates
        self._table: list[tuple[str, nn.Parameter, bool]] = []
        self.params: list[nn.Parameter] = []  # what it updates, in order
        self._pending: dict[str, np.ndarray] | None = None  # set_state before attach
        self._slots: dict[str, list[Tensor]] = {}  # RMSprop's state, by NumPy slot name

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
        if isinstance(self.spec, SGD) and self.spec.momentum and old != new and new != 0:
            # keep the NumPy velocity v = -lr * b unchanged: b scales by old / new
            with torch.no_grad():
                for state in self.torch.state.values():
                    if state.get("momentum_buffer") is not None:
                        state["momentum_buffer"].mul_(old / new)

    @property
    def learning_rate(self) -> float:
        """Keras's name for ``lr``."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = value

    def get_config(self) -> dict:
        return self.spec.get_config()

    def attach(self, table: list[tuple[str, nn.Parameter, bool]], device: torch.device,
               net: nn.Module | None = None) -> None:
        """Create the torch optimizer over ``table`` (name, parameter, transposed), keeping
        any state it had (by name)."""
        pending = self.get_state() if self.torch is not None else self._pending
        params = [p for _, p, _ in table]
        # one fused kernel per step instead of a pass per operation (CPU: ~4x faster); the
        # fused kernels also skip a step flagged by found_inf (resolve_device allows only
        # the CPU and CUDA, where they exist)
        fused = True
        s = self.spec
        if isinstance(s, Adam):
            kind = torch.optim.AdamW if isinstance(s, AdamW) else torch.optim.Adam
            decay = {"weight_decay": s.weight_decay} if isinstance(s, AdamW) else {}
            with dynamo_free(kind):
                self.torch = kind(params, lr=s.lr, betas=(s.beta_1, s.beta_2), eps=s.epsilon,
                                  amsgrad=s.amsgrad, fused=fused, **decay)
        elif isinstance(s, SGD):
            with dynamo_free(torch.optim.SGD):
                self.torch = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                                             nesterov=s.nesterov, fused=fused)
        else:  # RMSprop: our own foreach step; torch.optim only holds lr and the params
            with dynamo_free(torch.optim.SGD):
                self.torch = torch.optim.SGD(params, lr=s.lr)
            self._slots = {slot: [torch.zeros_like(p) for p in params] for slot in s.slots()}
        self._table, self.bound_to, self._pending = table, net, None
        self.params = params
        if pending is not None:
            self.set_state(pending)

    def step(self, found_inf: Tensor | None = None) -> None:
        """Apply the gradients now in the parameters' ``.grad``; where ``found_inf`` (a 0-d
        float tensor on the device) is 1, the fused kernels skip the whole update, state
        included, without the host waiting for the device to say so."""
        self.iterations += 1
        s = self.spec
        if isinstance(s, RMSprop):
            self._rmsprop_step(found_inf)
            return
        if isinstance(s, Adam):
            self.torch.param_groups[0]["eps"] = s.epsilon / math.sqrt(
                1.0 - s.beta_2**self.iterations)
        self.torch.found_inf = found_inf  # read by torch's fused Adam and SGD, as AMP does
        try:
            optim_step(self.torch)
        finally:
            self.torch.found_inf = None

    @torch.no_grad()
    def _rmsprop_step(self, found_inf: Tensor | None) -> None:
        """Keras's RMSprop (``optimizers.RMSprop``), skipped where ``found_inf`` is 1: every
        new value is taken only where the step is good (torch.where), so nothing changes."""
        s, slots = self.spec, self._slots
        params = [p for p in self.params if p.grad is not None]
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [p.grad for p in params]
        ok = None if found_inf is None else found_inf == 0

        def keep(old: list[Tensor], new: list[Tensor]) -> None:
            for o, n in zip(old, new, strict=True):
                o.copy_(n if ok is None else torch.where(ok, n, o))

        v = [slots["v"][i] for i in index]
        new_v = torch._foreach_mul(v, s.rho)  # v = rho v + (1 - rho) g^2
        torch._foreach_add_(new_v, torch._foreach_mul(grads, grads), alpha=1 - s.rho)
        if s.centered:
            a = [slots["a"][i] for i in index]
            new_a = torch._foreach_mul(a, s.rho)  # a = rho a + (1 - rho) g
            torch._foreach_add_(new_a, grads, alpha=1 - s.rho)
            den = torch._foreach_sub(new_v, torch._foreach_mul(new_a, new_a))
            keep(a, new_a)
        else:
            den = [t.clone() for t in new_v]
        keep(v, new_v)
        torch._foreach_add_(den, s.epsilon)
        torch._foreach_sqrt_(den)
        step = torch._foreach_div(grads, den)  # lr g / sqrt(denominator)
        torch._foreach_mul_(step, s.lr)
        if s.momentum:
            m = [slots["s"][i] for i in index]
            new_m = torch._foreach_mul(m, s.momentum)
            torch._foreach_add_(new_m, step)
            keep(m, new_m)
            step = new_m
        keep(params, torch._foreach_sub(params, step))

    def zero_grad(self) -> None:
        for p in self.params:  # torch's zero_grad(set_to_none=True), without torch._dynamo
            p.grad = None

    def get_state(self) -> dict[str, np.ndarray]:
        """Like ``Optimizer.get_state``: {"iterations": ..., "v.0.W": ...}; for Adam, its
        moments as Keras's averages, "m.0.W" and "v.0.W" (what torch keeps)."""
        out = {"iterations": np.array(self.iterations, dtype=np.int64)}
        if self.torch is None:
            return out
        if isinstance(self.spec, RMSprop):
            if self.iterations:
                for slot, tensors in self._slots.items():
                    for (name, _, tr), t in zip(self._table, tensors, strict=True):
                        out[f"{slot}.{name}"] = _numpy(t, tr)
            return out
        for name, p, tr in self._table:
            state = self.torch.state.get(p)
            if not state:
                continue
            if isinstance(self.spec, Adam):
                out[f"m.{name}"] = _numpy(state["exp_avg"], tr)
                out[f"v.{name}"] = _numpy(state["exp_avg_sq"], tr)
                if self.spec.amsgrad:
                    out[f"v_hat.{name}"] = _numpy(state["max_exp_avg_sq"], tr)
            elif state.get("momentum_buffer") is not None:
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
            if isinstance(self.spec, RMSprop):
                with torch.no_grad():
                    for slot, tensors in self._slots.items():
                        tensors[index[p]].copy_(get(slot) if f"{slot}.{name}" in flat else 0)
            elif isinstance(self.spec, Adam) and f"m.{name}" in flat:
                state[index[p]] = {"step": torch.tensor(float(self.iterations)),
                                   "exp_avg": get("m"), "exp_avg_sq": get("v")}
                if self.spec.amsgrad:
                    state[index[p]]["max_exp_avg_sq"] = (
                        get("v_hat") if f"v_hat.{name}" in flat else get("v"))
            elif isinstance(self.spec, SGD) and self.spec.momentum and f"v.{name}" in flat:
                if self.lr == 0:
                    raise ValueError("cannot restore momentum state with lr = 0")
                state[index[p]] = {"momentum_buffer": get("v") / -self.lr}
        if isinstance(self.spec, RMSprop):
            return
        with dynamo_free(type(self.torch)):
            self.torch.load_state_dict({"state": state,
                                        "param_groups": self.torch.state_dict()["param_groups"]})


def _np_dtype(t: Tensor) -> np.dtype:
    return np.dtype(str(t.dtype).removeprefix("torch."))


def _numpy(t: Tensor, transposed: bool = False) -> np.ndarray:
    """A C-contiguous NumPy copy of ``t`` (transposed back to the NumPy layout if asked)."""
    t = t.detach()
    return np.array((t.T if transposed else t).cpu().numpy(), order="C", copy=True)


# ---- the model -------------------------------------------------------------------------------
class TorchSequential(SequentialBase):
    """The shared ``Sequential`` contract (``engines.base``) on PyTorch.

    The layers are the NumPy layer objects (``mnistlab.nn.Dense`` ...): they create the
    weights from the seed, which are copied into torch modules (``self.net``); from then on
    the weights live in the torch modules only (the NumPy layers keep their shapes).
    """

    CHUNK_FLOATS = 2**24

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
        self.device = resolve_device(device)
        super().__init__(layers, seed=seed, dtype=dtype, input_shape=input_shape,
                         preprocess=preprocess, name=name)
        self.torch_dtype = TORCH_DTYPES[str(self.dtype)]
        self.channels_last = bool(channels_last)
        self.net: SpecNet | None = None

    @property
    def engine_note(self) -> str:
        return f"torch on {self.device}, "

    @classmethod
    def from_spec(cls, spec: dict, seed: int | None = 0, device: str | torch.device = "cpu",
                  channels_last: bool = False) -> TorchSequential:
        """Build (uncompiled) the model a spec describes; same seed, same weights as NumPy."""
        return to_torch(model_from_spec(spec, seed=seed), device, channels_last=channels_last)

    def build(self, input_shape: Sequence[int] | None = None, seed: int | None = None) -> None:
        """Create all weights (by the NumPy layers, from ``seed``) and the torch modules."""
        super().build(input_shape, seed)
        net = SpecNet([torch_layer(layer, self.torch_dtype) for layer in self.layers])
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net.to(self.device)
        for layer in self.layers:  # the torch modules hold the weights now: keep the shapes
            layer.params = {k: np.broadcast_to(np.zeros((), v.dtype), v.shape)
                            for k, v in layer.params.items()}
            layer.state = {k: np.broadcast_to(np.zeros((), v.dtype), v.shape)
                           for k, v in layer.state.items()}  # buffers of the modules now
            layer.grads = {}

    def _make_optimizer(self, optimizer: Any) -> TorchOptimizer:
        return optimizer if isinstance(optimizer, TorchOptimizer) else TorchOptimizer(optimizer)

    def _check_loss(self, loss: Loss) -> None:
        if not isinstance(loss, CategoricalCrossentropy | BinaryCrossentropy
                          | BinaryCrossentropySum | MeanSquaredError):
            raise ValueError(f"the torch engine has no loss {type(loss).__name__}")

    def _ensure_ready(self) -> SpecNet:
        self._require_compiled()
        self._ensure_built()
        if self.optimizer.bound_to is not self.net:  # new compile, or rebuilt
            self.optimizer.attach(self._param_table(), self.device, self.net)
        return self.net

    # ---- weights ---------------------------------------------------------------------------
    def _param_table(self) -> list[tuple[str, nn.Parameter, bool]]:
        """(NumPy name, torch parameter, stored transposed?) for every weight, in order."""
        self._ensure_built()
        return [(f"{i}.{k}", p, tr) for i, layer in enumerate(self.net.layers)
                for k, (p, tr) in layer.numpy_params().items()]

    def _state_table(self) -> list[tuple[str, Tensor, bool]]:
        """(NumPy name, torch buffer, False) for every non-trainable weight (the modules'
        ``numpy_state``, e.g. "3.moving_mean"), in order; buffers are never transposed."""
        self._ensure_built()
        return [(f"{i}.{k}", b, False) for i, layer in enumerate(self.net.layers)
                for k, b in layer.numpy_state().items()]

    def _read_weights(self) -> dict[str, np.ndarray]:
        tensors = {name: (t, tr) for name, t, tr in (*self._param_table(), *self._state_table())}
        return {name: _numpy(*tensors[name]) for name in self.weight_shapes()}

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        p, tr = next((p, tr) for n, p, tr in (*self._param_table(), *self._state_table())
                     if n == name)
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(value, dtype=self.dtype))
            p.copy_(t.T if tr else t)

    # ---- tensors in, losses out -------------------------------------------------------------
    def as_input(self, x: Any) -> Tensor:
        """``x`` (NumPy or torch, (N, *input_shape)) as a tensor on the device, model dtype."""
        x = self.checked_input(x if isinstance(x, Tensor) else np.asarray(x))
        if not isinstance(x, Tensor):
            x = np.asarray(x, dtype=self.dtype)
            x = torch.from_numpy(x if x.flags.writeable else x.copy())
        x = x.to(self.device, self.torch_dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def as_targets(self, y: Any) -> tuple[Tensor, Tensor]:
        """Labels as (loss target, accuracy target) tensors on the device.

        Loss target: class indices (int64) for cross-entropy from logits on integer labels,
        else targets shaped like the outputs (one-hot for integer labels). Accuracy
        target: class indices, or booleans (t > 0.5) for a single output.
        """
        y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
        out_shape = self.output_shape
        idx = class_indices(y)
        if out_shape == (1,):
            t = as_targets(y, np.empty((len(y), 1), dtype=self.dtype))
            target = torch.from_numpy(np.ascontiguousarray(t)).to(self.device)
            return target, target > 0.5
        if idx is not None:
            labels = torch.from_numpy(idx.astype(np.int64)).to(self.device)
            if self.loss_path == "logits" and isinstance(self.loss, CategoricalCrossentropy):
                return labels, labels
            return F.one_hot(labels, out_shape[-1]).to(self.torch_dtype), labels
        t = as_targets(y, np.empty((len(y), *out_shape), dtype=self.dtype))
        target = torch.from_numpy(np.ascontiguousarray(t)).to(self.device)
        return target, target.argmax(dim=-1)

    def _scores(self, x: Tensor, target: Tensor, acc_target: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, what to backprop, rows right) for a batch, the loss met as
        ``losses.loss_path`` says (the NumPy engine's formulas; all stay on the device),
        each sample's loss times ``weight`` (N,) if given, reduced as the loss reduces."""
        path, loss = self.loss_path, self.loss
        z = self.net(x, logits=path != "outputs")
        if path == "logits":  # softmax + cross-entropy, or a from_logits loss, from z
            value = _loss_of_logits(loss, z, target, weight)
            return value, value, self._correct(z.detach(), acc_target)
        if path == "gradient_at_logits":  # dL/dz = w (y - t), summed or / (N K)
            y = ACTIVATIONS[self.layers[-1].activation.name](z).detach()
            value = _loss_of_outputs(loss, y, target, weight)
            d = y - target if weight is None else (y - target) * weight[:, None]
            if loss.reduction == "mean":
                d = d / d.numel()
            return value, (z * d).sum(), self._correct(y, acc_target)
        value = _loss_of_outputs(loss, z, target, weight)
        return value, value, self._correct(z.detach(), acc_target)

    def _correct(self, out: Tensor, target: Tensor) -> Tensor:
        """How many rows of ``out`` are right (a 0-d tensor: no sync)."""
        if out.shape[-1] == 1:
            return ((out > 0.5) == target).sum()
        return (out.argmax(dim=-1) == target).sum()

    def _step(self, xb: Tensor, tb: Tensor, ab: Tensor, found_inf: Tensor,
              wb: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One forward, backward and update, each sample's loss weighted by ``wb`` if given;
        (loss, correct) stay on the device. A loss or gradient that is not finite sets
        ``found_inf``, and from then on no update applies."""
        value, surrogate, correct = self._scores(xb, tb, ab, wb)
        self.optimizer.zero_grad()
        surrogate.backward()
        value = value.detach()
        # The step is refused when the loss or a gradient is not finite, or, for SGD, whose
        # step lr * g has no bound, lr times the gradients' norm; as the NumPy optimizers
        # refuse it. Sticky: found_inf stays 1 once a step diverged. All on the device, no
        # wait for it: the check AMP uses (10 us a step here) and, for SGD, one norm.
        grads = [p.grad for p in self.optimizer.params if p.grad is not None]
        found_inf.logical_or_(value.isfinite().logical_not_())
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self._one)
        if isinstance(self.optimizer.spec, SGD):  # Adam's, RMSprop's steps: about lr at most
            step = torch.stack(torch._foreach_norm(grads)).max() * self.optimizer.lr
            found_inf.logical_or_(step.isfinite().logical_not_())
        self.optimizer.step(found_inf)
        return value, correct

    def _weight_tensor(self, sample_weight: Any) -> Tensor:
        """Per-sample loss weights (N,) as a tensor on the device, in the model's dtype."""
        w = np.ascontiguousarray(np.asarray(sample_weight, dtype=self.dtype).reshape(-1))
        return torch.from_numpy(w).to(self.device)

    @property
    def _one(self) -> Tensor:
        """A float32 1 on the device (the scale AMP's check multiplies gradients by)."""
        one = getattr(self, "_one_tensor", None)
        if one is None or one.device != self.device:
            one = self._one_tensor = torch.ones((), dtype=torch.float32, device=self.device)
        return one

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[float, float]:
        """One update on a batch (NumPy in): (loss, accuracy), like the NumPy engine's;
        a non-finite loss or gradient raises TrainingDivergedError and changes no weight."""
        self._ensure_ready().train()
        xb, (tb, ab) = self.as_input(x), self.as_targets(y)
        wb = None if sample_weight is None else self._weight_tensor(sample_weight)
        found_inf = torch.zeros((), dtype=torch.float32, device=self.device)
        loss, correct = self._step(xb, tb, ab, found_inf, wb)
        if found_inf.item():
            self.optimizer.iterations -= 1
            raise TrainingDivergedError(_divergence(float(loss)))
        return float(loss), float(correct) / len(xb)

    def loss_and_grads(self, x: Any, y: Any,
                       training: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Forward and backward without updating: (loss, gradients in NumPy names/layouts)."""
        self._require_compiled()
        xb, (tb, ab) = self.as_input(x), self.as_targets(y)
        self.net.train(training)
        self.net.zero_grad(set_to_none=True)
        value, surrogate, _ = self._scores(xb, tb, ab)
        surrogate.backward()
        grads = {name: _numpy(p.grad, tr) for name, p, tr in self._param_table()}
        self.net.zero_grad(set_to_none=True)
        return float(value.detach()), grads

    # ---- fit, evaluate, predict -------------------------------------------------------------
    @contextmanager
    def fit_session(self, x: Any, y: Any, *, validation_data: Any, seed: int | None,
                    batch_size: int, sample_weight: np.ndarray | None = None,
                    ) -> Iterator[_FitSession]:
        """The torch engine's part of ``training.fit``: data on the device once, results
        read back once an epoch (or when the loop asks), dropout seeded by (seed, epoch);
        ``sample_weight`` (N,) weighs each sample's loss."""
        self._ensure_ready()
        dropout_seed = seed if seed is not None else self.seed
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices, enabled=dropout_seed is not None):
            yield _FitSession(self, x, y, validation_data, batch_size, dropout_seed,
                              sample_weight)

    def _evaluate_tensors(self, x: Tensor, t: Tensor, a: Tensor,
                          batch_size: int | None = None) -> dict[str, float]:
        self._require_compiled()
        size = self.chunk_rows(batch_size)
        mean = self.loss.reduction == "mean"
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        training = self.net.training
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(x), size):
                rows = slice(start, start + size)
                value, _, right = self._scores(x[rows], t[rows], a[rows])
                total += value * len(x[rows]) if mean else value
                correct += right
        self.net.train(training)
        loss = float(total) / len(x) if mean else float(total)
        return {"loss": loss, "accuracy": float(correct) / len(x)}

    def evaluate(self, x: Any, y: Any, batch_size: int | None = None,
                 return_dict: bool = False) -> tuple[float, float] | dict[str, float]:
        """(loss, accuracy) over all of x (or a dict with those keys)."""
        xt, y = self.as_input(x), np.asarray(y.cpu() if isinstance(y, Tensor) else y)
        self.check_pairs(xt, y, "evaluate")
        t, a = self.as_targets(y)
        result = self._evaluate_tensors(xt, t, a, batch_size)
        return result if return_dict else (result["loss"], result["accuracy"])

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Outputs (probabilities after a softmax) for all of ``x``, as a NumPy array."""
        x = self.as_input(x)
        size = self.chunk_rows(batch_size)
        training = self.net.training
        self.net.eval()
        with torch.inference_mode():
            out = torch.cat([self.net(x[s : s + size]) for s in range(0, len(x), size)])
        self.net.train(training)
        return out.cpu().numpy()

    def to(self, device: str | torch.device) -> TorchSequential:
        """Move the model (and any optimizer state) to ``device``; returns self."""
        self.device = resolve_device(device)
        if self.net is not None:
            self.net.to(self.device)
            if self.optimizer is not None and self.optimizer.bound_to is self.net:
                self.optimizer.attach(self._param_table(), self.device, self.net)
        return self

    def __repr__(self) -> str:
        return (f"TorchSequential({self.layers!r}, dtype={str(self.dtype)!r}, "
                f"device={str(self.device)!r})")


def _reduce(per_sample: Tensor, w: Tensor | None) -> Tensor:
    """Keras's sum_over_batch_size: sum_n w_n l_n / N (the mean without weights)."""
    return per_sample.mean() if w is None else (per_sample * w).sum() / len(per_sample)


def _loss_of_logits(loss: Loss, z: Tensor, t: Tensor, w: Tensor | None) -> Tensor:
    """The NumPy engine's ``forward_logits`` of ``loss`` on logits ``z``."""
    if isinstance(loss, BinaryCrossentropy):
        per = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        return _reduce(per.mean(dim=1), w)
    if w is None:  # mean over rows of -log softmax(z)[t] (or -sum t log softmax)
        return F.cross_entropy(z, t)
    return _reduce(F.cross_entropy(z, t, reduction="none"), w)


def _loss_of_outputs(loss: Loss, y: Tensor, t: Tensor, w: Tensor | None = None) -> Tensor:
    """The NumPy engine's ``forward`` of ``loss`` on outputs ``y`` (logits for a
    from_logits loss)."""
    if loss.from_logits:
        return _loss_of_logits(loss, y, t, w)
    if isinstance(loss, CategoricalCrossentropy):  # Keras: clip(y / sum y, eps, 1 - eps)
        q = torch.clamp(y / y.sum(dim=1, keepdim=True), EPS, 1 - EPS)
        return _reduce(-(t * torch.log(q)).sum(dim=1), w)
    if isinstance(loss, BinaryCrossentropy):  # Keras: clip(y, eps, 1 - eps)
        q = torch.clamp(y, EPS, 1 - EPS)
        return _reduce(-(t * torch.log(q) + (1 - t) * torch.log(1 - q)).mean(dim=1), w)
    if isinstance(loss, BinaryCrossentropySum):
        per = -(t * torch.log(y + EPS) + (1 - t) * torch.log(1 - y + EPS))
        return per.sum() if w is None else (per * w[:, None]).sum()
    if w is None:
        return F.mse_loss(y, t)  # mean over all elements
    return _reduce(((y - t) ** 2).flatten(1).mean(dim=1), w)


def _divergence(loss: float) -> str:
    if not math.isfinite(loss):
        return f"loss became {loss}; the weights were left unchanged"
    return "an update was not finite (a gradient, or lr times it); the weights were left unchanged"


class _FitSession:
    """One fit on the torch engine (see ``training.loop``): every step's loss, rows right
    and divergence flag stay on the device until ``read``, one transfer for all of them."""

    lazy = True

    def __init__(self, model: TorchSequential, x: Any, y: Any, validation_data: Any,
                 batch_size: int, dropout_seed: int | None,
                 sample_weight: np.ndarray | None = None) -> None:
        self.model, self.dropout_seed = model, dropout_seed
        y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
        self.x = model.as_input(x)
        model.check_pairs(self.x, y, "fit")  # before the labels become tensors
        self.t, self.a = model.as_targets(y)
        self.w = None
        if sample_weight is not None:
            if np.shape(sample_weight) != (len(self.x),):
                raise ValueError(f"sample_weight must have one weight per sample, shape "
                                 f"({len(self.x)},), got {np.shape(sample_weight)}")
            self.w = model._weight_tensor(sample_weight)
        self.val = None
        if validation_data is not None:
            vx, vy = validation_data
            vx, vy = model.as_input(vx), np.asarray(vy.cpu() if isinstance(vy, Tensor) else vy)
            model.check_pairs(vx, vy, "validation_data")
            self.val = (vx, *model.as_targets(vy))
        self.n, dev = len(self.x), model.device
        steps = math.ceil(self.n / batch_size)
        self.losses = torch.zeros(steps, dtype=torch.float64, device=dev)
        self.correct = torch.zeros(steps, dtype=torch.float64, device=dev)
        self.flags = torch.zeros(steps, dtype=torch.float64, device=dev)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=dev)
        self.order, self.sizes, self.done, self.read_to = None, [], 0, 0

    def begin_epoch(self, epoch: int, order: np.ndarray | None) -> None:
        if self.dropout_seed is not None:  # dropout masks: seeded by (seed, epoch)
            torch.manual_seed(int(np.random.SeedSequence([self.dropout_seed, epoch])
                                  .generate_state(1)[0]))
        self.order = None if order is None else torch.from_numpy(order).to(self.model.device)
        self.sizes, self.done, self.read_to = [], 0, 0
        self.model.net.train()

    def step(self, start: int, stop: int) -> None:
        w = self.w
        if self.order is None:  # contiguous slices: views, no copy
            xb, tb, ab = self.x[start:stop], self.t[start:stop], self.a[start:stop]
            wb = None if w is None else w[start:stop]
        else:
            idx = self.order[start:stop]
            # index_select: 4x faster than x[idx] for a batch of images
            xb, tb = self.x.index_select(0, idx), self.t.index_select(0, idx)
            ab = tb if self.a is self.t else self.a.index_select(0, idx)
            wb = None if w is None else w.index_select(0, idx)
        i = self.done
        self.losses[i], self.correct[i] = self.model._step(xb, tb, ab, self.found_inf, wb)
        self.flags[i] = self.found_inf
        self.sizes.append(len(xb))
        self.done += 1

    def read(self) -> Steps:
        lo, hi = self.read_to, self.done
        self.read_to = hi
        if lo == hi:
            return Steps()
        losses, correct, flags = torch.stack(
            [self.losses[lo:hi], self.correct[lo:hi], self.flags[lo:hi]]).tolist()
        steps = Steps(losses, correct, self.sizes[lo:hi])
        if any(flags):
            steps.failed = flags.index(1.0)
            steps.reason = _divergence(losses[steps.failed])
            self.model.optimizer.iterations -= hi - lo - steps.failed  # the skipped steps
        return steps

    def validate(self) -> dict[str, float]:
        if self.val is None:
            return {}
        v = self.model._evaluate_tensors(*self.val)
        return {"val_loss": v["loss"], "val_accuracy": v["accuracy"]}


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
    out = TorchSequential([np_layers.layer_from_config(c) for c in spec["layers"]],
                          seed=model.seed, dtype=spec["dtype"], input_shape=spec["input_shape"],
                          preprocess=spec["preprocess"], name=model.name, device=device,
                          channels_last=channels_last)
    out.set_named_weights(model.named_weights())
    if model.loss is not None and model.optimizer is not None:
        out.compile(_optimizer_copy(model.optimizer), get_loss(model.loss.get_config()),
                    model.metrics or None)
        if model.optimizer.iterations:
            out.optimizer.set_state(model.optimizer.get_state())
    return out


def to_numpy(model: TorchSequential) -> Sequential:
    """The torch ``model`` on the NumPy engine: same spec and weights; compile settings
    and optimizer state carry over when it was compiled."""
    out = model_from_spec(model.spec(), seed=model.seed)
    out.name = model.name
    out.set_named_weights(model.named_weights())
    if model.loss is not None and model.optimizer is not None:
        out.compile(_optimizer_copy(model.optimizer), get_loss(model.loss.get_config()),
                    model.metrics or None)
        if model.optimizer.iterations:
            out.optimizer.set_state(model.optimizer.get_state())
    return out


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               channels_last: bool = False) -> TorchSequential:
    """Load a file written by either engine (``mnistlab.engines.io`` checks it) onto torch."""
    from mnistlab.engines.numpy import load_model as load_numpy

    return to_torch(load_numpy(path), device, channels_last=channels_last)
