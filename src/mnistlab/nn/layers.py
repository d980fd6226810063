"""Layers: each class keeps ``forward`` and ``backward`` side by side, one screen each.

Conventions (docs/CONTRACTS.md): images are NCHW; Dense.W is (in, out); Conv2D.W is
(out_channels, in_channels, kh, kw). ``forward`` caches on ``self`` what ``backward``
needs; ``backward(dy)`` writes ``self.grads`` and returns dL/dx. Neither mutates its
argument. Shape comments include the batch axis N.

Layers with an activation (Dense, Conv2D, Activation) split into a linear part
(``linear_forward``/``linear_backward``) and the activation, so the model can hand
the logits of the output layer straight to a fused softmax cross-entropy loss.

What runs is the algorithm you read here, except where a layer says in one line that a
speed kernel of ``nn/kernels.py`` takes a case over (the same result, faster); setting
``Layer.use_kernels = False`` runs the plain algorithm everywhere.

One module, though long: it is the catalogue a student reads, as the textbook's
``common/layers.py`` is; every layer is one screen, and they share the helpers (padding,
im2col, output sizes) that keep each of them short.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from mnistlab.nn import kernels
from mnistlab.nn.activations import ActivationFunction, get_activation
from mnistlab.nn.initializers import check_initializer, initialize

Shape = tuple[int, ...]


class Layer:
    """Base class: ``build`` allocates parameters; ``forward``/``backward`` do the math."""

    activation: ActivationFunction | None = None
    name: str | None = None  # a Keras name ("dense_1"), kept in get_config when set
    # The model sets this False on its first layer with parameters: nothing needs dL/dx
    # there, so backward skips that product (as autograd does) and returns None.
    needs_input_grad = True
    # Where a speed kernel (nn/kernels.py) covers a case, a layer runs it instead of the
    # plain algorithm; False runs the plain one everywhere (tests/test_kernels.py).
    use_kernels = True

    def __init__(self, input_shape: Shape | None = None) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}  # non-trainable weights (e.g. BN's moving stats)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.output_shape: Shape | None = None

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        """Create parameters for inputs of ``input_shape`` (no batch axis); return output shape."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.input_shape
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """y for a batch x, caching on ``self`` what ``backward`` needs."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        """dL/dx from dL/dy (of the last ``forward``); writes ``self.grads``."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """JSON-safe description; ``layer_from_config(get_config())`` rebuilds the layer."""
        return {"type": type(self).__name__}

    def replica(self) -> Layer:
        """A twin that shares this layer's weights but keeps its own forward caches, so
        that two threads can run forward on different inputs at once."""
        twin = copy.copy(self)  # the params dict itself is shared: the same weight arrays
        if self.activation is not None:
            twin.activation = copy.copy(self.activation)  # it caches its output too
        return twin

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


DATA_FORMATS = ("channels_first", "channels_last")


def check_data_format(data_format: str | None, default: str = "channels_first") -> str:
    if data_format is None:
        return default
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return data_format


class ImageLayer(Layer):
    """Base of the layers over images. The algorithms below are written for the engine's
    (N, C, H, W); ``data_format`` says where a batch keeps its channels:

    - "channels_first": (N, C, H, W), the engine's and the textbook's order (the default);
    - "channels_last": (N, H, W, C), Keras's default (``mnistlab.keras`` uses it): such a
      batch is computed on through a transposed NCHW *view* (no copy) and given back as an
      NHWC view, so weights, results and gradients are the same in both formats.
    """

    def __init__(self, data_format: str | None = None, input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        self.data_format = check_data_format(data_format)

    @property
    def channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def image_chw(self, input_shape: Shape) -> tuple[int, int, int]:
        """(C, H, W) of one input image in this layer's data_format; a clear error when the
        shape is not an image, or plainly has its channels on the other side."""
        name = type(self).__name__
        order = "(N, H, W, C)" if self.channels_last else "(N, C, H, W)"
        if len(input_shape) != 3:
            raise ValueError(f"{name} expects images {order} (data_format="
                             f"{self.data_format!r}), got per-sample shape {tuple(input_shape)}")
        first, middle, last = input_shape
        # plainly the other side: 1 or 3 channels (grey, RGB) beside two image sides >= 8
        if self.channels_last and first in (1, 3) and min(middle, last) >= 8:
            raise ValueError(
                f"{name} got images of shape {tuple(input_shape)}, channels first, but its "
                "data_format is 'channels_last' (H, W, C): pass data_format='channels_first' "
                f"or reshape the images to (N, {input_shape[1]}, {last}, {first})")
        if not self.channels_last and last in (1, 3) and min(first, middle) >= 8:
            raise ValueError(
                f"{name} got images of shape {tuple(input_shape)}, channels last, but its "
                "data_format is 'channels_first' (C, H, W): pass data_format='channels_last' "
                f"or reshape the images to (N, {last}, {first}, {input_shape[1]})")
        if self.channels_last:
            return last, first, input_shape[1]
        return tuple(input_shape)  # type: ignore[return-value]

    def image_shape(self, chw: Shape) -> Shape:
        """A (C, H, W) shape in this layer's data_format."""
        c, h, w = chw
        return (h, w, c) if self.channels_last else (c, h, w)

    def as_nchw(self, x: np.ndarray) -> np.ndarray:
        """A batch in this layer's data_format as (N, C, H, W): itself, or a view."""
        return x.transpose(0, 3, 1, 2) if self.channels_last and x.ndim == 4 else x

    def as_given(self, y: np.ndarray) -> np.ndarray:
        """An (N, C, H, W) result back in this layer's data_format (a view); others as is."""
        return y.transpose(0, 2, 3, 1) if self.channels_last and y.ndim == 4 else y

    def format_config(self) -> dict:
        """``data_format`` for get_config, only when not the engine's own (older files)."""
        return {"data_format": self.data_format} if self.channels_last else {}


class Dense(Layer):
    """Fully connected: y = activation(x @ W + b);  x (N, in), W (in, units), b (units,)."""

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        input_shape: Shape | None = None,
    ) -> None:
        super().__init__(input_shape)
        if int(units) < 1:
            raise ValueError(f"Dense units must be >= 1, got {units}")
        self.units = int(units)
        self.activation = get_activation(activation)
        self.kernel_initializer = check_initializer(kernel_initializer)
        self.bias_initializer = check_initializer(bias_initializer)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        if len(input_shape) != 1:
            raise ValueError(f"Dense expects flat inputs (N, features), got {input_shape}; "
                             "put a Flatten() before it")
        n_in, n_out = input_shape[0], self.units
        w = initialize(self.kernel_initializer, (n_in, n_out), n_in, n_out, rng, dtype)
        self._add_param("W", w)
        self._add_param("b", initialize(self.bias_initializer, (n_out,), n_in, n_out, rng, dtype))
        self.input_shape, self.output_shape = tuple(input_shape), (n_out,)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        z = self.linear_forward(x)  # a fresh array of our own: activate it in place
        return self.activation.forward(z, out=z)

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        return self.linear_backward(self.activation.backward(dy))

    def linear_forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x  # (N, in), kept for dW
        z = x @ self.params["W"]  # (N, units)
        z += self.params["b"]
        return z

    def linear_backward(self, dz: np.ndarray) -> np.ndarray | None:
        np.matmul(self.x.T, dz, out=self.grads["W"])  # dW = x^T dz: (in, units)
        np.sum(dz, axis=0, out=self.grads["b"])  # db = sum_n dz: (units,)
        if not self.needs_input_grad:
            return None
        w = self.params["W"]
        if self.use_kernels and w.size <= kernels.SMALL_MATRIX:
            # kernels.small_matmul_t: the same dz @ W.T, but OpenBLAS idles on a small W.T view
            return kernels.small_matmul_t(dz, w)
        return dz @ w.T  # dx = dz W^T: (N, in)

    def get_config(self) -> dict:
        return {"type": "Dense", "units": self.units, "activation": self.activation.name,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer}


def _pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_padding(padding: str) -> str:
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def output_size(size: int, window: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis, as Keras/TensorFlow compute it.

    "same": out = ceil(size / stride), and the odd pixel of padding goes after
    (bottom/right), e.g. a 2x2 kernel at stride 1 pads 0 above and 1 below.
    """
    if padding == "valid":
        if size < window:
            raise ValueError(f"window {window} is larger than the input size {size}")
        return (size - window) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return out, total // 2, total - total // 2


def pad2d(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the H and W axes of NCHW ``x`` by (top, bottom, left, right); no copy if all 0."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    return out


def window_slices(
    i: int, j: int, stride: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[slice, ...]:
    """Index picking, for window offset (i, j), the input pixel of every output position."""
    (sh, sw), (oh, ow) = stride, out_hw
    return (slice(None), slice(None), slice(i, i + sh * (oh - 1) + 1, sh),
            slice(j, j + sw * (ow - 1) + 1, sw))


class Conv2D(ImageLayer):
    """2-D convolution (cross-correlation, as Keras/PyTorch) by im2col and one matmul.

    x (N, C, H, W) -> cols (C*kh*kw, N*OH*OW) -> z = W2 @ cols (F, N*OH*OW) -> (N, F, OH, OW)
    with W2 = W.reshape(F, C*kh*kw), W (F, C, kh, kw), b (F,). One large matmul per step
    (not one per image) keeps BLAS threads busy and in step with each other.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        activation: str | None = None,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        input_shape: Shape | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(data_format, input_shape)
        if int(filters) < 1:
            raise ValueError(f"Conv2D filters must be >= 1, got {filters}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _check_padding(padding)
        self.activation = get_activation(activation)
        self.kernel_initializer = check_initializer(kernel_initializer)
        self.bias_initializer = check_initializer(bias_initializer)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        c, h, w = self.chw = self.image_chw(input_shape)
        (kh, kw), (sh, sw), f = self.kernel_size, self.strides, self.filters
        oh, top, bottom = output_size(h, kh, sh, self.padding)
        ow, left, right = output_size(w, kw, sw, self.padding)
        self.pads, self.out_hw = (top, bottom, left, right), (oh, ow)
        fan_in, fan_out = c * kh * kw, f * kh * kw  # Keras's fans for a conv kernel
        self._add_param("W", initialize(self.kernel_initializer, (f, c, kh, kw), fan_in, fan_out,
                                        rng, dtype))
        self._add_param("b", initialize(self.bias_initializer, (f,), fan_in, fan_out, rng, dtype))
        self.input_shape, self.output_shape = tuple(input_shape), self.image_shape((f, oh, ow))
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        z = self.linear_forward(x)  # a fresh array of our own: activate it in place
        return self.activation.forward(z, out=z)

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        return self.linear_backward(self.activation.backward(dy))

    def linear_forward(self, x: np.ndarray) -> np.ndarray:
        x = self.as_nchw(x)
        n, c, h, w = x.shape
        (kh, kw), (oh, ow), f = self.kernel_size, self.out_hw, self.filters
        top, bottom, left, right = self.pads
        # Channels first, then images, zero-padded: (C, N, H + pads, W + pads). In this
        # order every im2col copy below moves whole contiguous blocks.
        xp = np.zeros((c, n, h + top + bottom, w + left + right), dtype=x.dtype)
        xp[:, :, top : top + h, left : left + w] = x.transpose(1, 0, 2, 3)
        cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)  # im2col
        for i in range(kh):
            for j in range(kw):  # cols[c, i, j, n, r, s] = xp[c, n, r*sh + i, s*sw + j]
                cols[:, i, j] = xp[window_slices(i, j, self.strides, self.out_hw)]
        self.padded_shape = xp.shape
        self.cols = cols.reshape(c * kh * kw, n * oh * ow)  # kept for dW
        z = self.params["W"].reshape(f, -1) @ self.cols  # (F, N*OH*OW): one matmul for all
        z += self.params["b"][:, None]  # while z is contiguous: 2x faster than after
        # NCHW in memory (block copies); channels_last gets an NHWC view of it, which the
        # next image layer views back as NCHW without a copy
        return self.as_given(np.ascontiguousarray(z.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)))

    def linear_backward(self, dz: np.ndarray) -> np.ndarray | None:
        n, (kh, kw), (oh, ow), f = len(dz), self.kernel_size, self.out_hw, self.filters
        dz2 = self.as_nchw(dz).transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*OH*OW) copy
        w2 = self.params["W"].reshape(f, -1)  # (F, C*kh*kw)
        np.matmul(dz2, self.cols.T, out=self.grads["W"].reshape(f, -1))  # dW = dz2 cols^T
        np.sum(dz2, axis=1, out=self.grads["b"])  # db: sum over images and positions
        if not self.needs_input_grad:
            return None
        dcols = (w2.T @ dz2).reshape(-1, kh, kw, n, oh, ow)  # (C, kh, kw, N, OH, OW)
        dxp = np.zeros(self.padded_shape, dtype=dz.dtype)  # col2im: add each offset back
        for i in range(kh):
            for j in range(kw):
                dxp[window_slices(i, j, self.strides, self.out_hw)] += dcols[:, i, j]
        top, _, left, _ = self.pads
        h, w = self.chw[1:]
        dx = dxp[:, :, top : top + h, left : left + w]  # (C, N, H, W)
        return self.as_given(np.ascontiguousarray(dx.transpose(1, 0, 2, 3)))

    def get_config(self) -> dict:
        return {"type": "Conv2D", "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": self.activation.name,
                "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, **self.format_config()}


class _Pooling2D(ImageLayer):
    """What the pooling layers share: pool_size windows at strides, "valid" or "same"
    (Keras's padding), over NCHW images (N, C, H, W) -> (N, C, OH, OW)."""

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
        input_shape: Shape | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(data_format, input_shape)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        self.padding = _check_padding(padding)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        c, h, w = self.chw = self.image_chw(input_shape)
        oh, top, bottom = output_size(h, self.pool_size[0], self.strides[0], self.padding)
        ow, left, right = output_size(w, self.pool_size[1], self.strides[1], self.padding)
        self.pads, self.out_hw = (top, bottom, left, right), (oh, ow)
        self.input_shape, self.output_shape = tuple(input_shape), self.image_shape((c, oh, ow))
        return self.output_shape

    def offsets(self) -> list[tuple[int, int]]:
        """The ph*pw window offsets (i, j), in row-major order."""
        return [(i, j) for i in range(self.pool_size[0]) for j in range(self.pool_size[1])]

    def get_config(self) -> dict:
        return {"type": type(self).__name__, "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": self.padding, **self.format_config()}


class MaxPooling2D(_Pooling2D):
    """Max over pool_size windows: x (N, C, H, W) -> y (N, C, OH, OW).

    Forward takes a running max over the ph*pw window offsets (one strided view each);
    backward sends each dy to the first offset holding that max (in row-major order:
    argmax's tie rule, as PyTorch), adding where windows overlap.
    """

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        super().build(input_shape, rng, dtype)
        self.tiled = self.strides == self.pool_size  # windows tile the image, e.g. 2x2 stride 2
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.xp = pad2d(self.as_nchw(x), self.pads, value=-np.inf)  # padding never wins the max
        self.via_kernel = self.use_kernels and self.tiled  # backward takes the same path
        if self.via_kernel:  # kernels.maxpool_tiled_forward: the same max, faster, cols then rows
            self.y, self.row_max = kernels.maxpool_tiled_forward(self.xp, self.pool_size,
                                                                 self.out_hw)
            return self.as_given(self.y)
        windows = [self.xp[window_slices(i, j, self.strides, self.out_hw)]
                   for i, j in self.offsets()]
        self.y = windows[0].copy()  # (N, C, OH, OW): running max over the window offsets
        for window in windows[1:]:
            np.maximum(self.y, window, out=self.y)
        return self.as_given(self.y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = self.as_nchw(dy)
        if self.via_kernel:  # kernels.maxpool_tiled_backward: the same dx without mask or zeros
            dxp = kernels.maxpool_tiled_backward(dy, self.xp, self.y, self.row_max,
                                                 self.pool_size)
        else:
            dxp = np.zeros(self.xp.shape, dtype=dy.dtype)
            unclaimed = np.ones(dy.shape, dtype=bool)  # windows whose max is not found yet
            for i, j in self.offsets():
                view = window_slices(i, j, self.strides, self.out_hw)
                hit = self.xp[view] == self.y  # this offset holds the max...
                hit &= unclaimed  # ...and no earlier one did: on ties the first one wins
                unclaimed ^= hit
                dxp[view] += dy * hit
        top, _, left, _ = self.pads
        h, w = self.chw[1:]
        return self.as_given(dxp[:, :, top : top + h, left : left + w])



class Cropping2D(ImageLayer):
    """Drop border rows and columns: x (N, C, H, W) -> x[:, :, top:H-bottom, left:W-right].

    ``cropping`` as in Keras: an int (all four sides), (rows, columns) cut from both ends,
    or ((top, bottom), (left, right)). MNIST digits sit in the middle 20x20 of the
    28x28 image, so a net can skip most of the empty border.
    """

    def __init__(
        self,
        cropping: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = 0,
        input_shape: Shape | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(data_format, input_shape)
        self.cropping = _crop_amounts(cropping)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        c, h, w = self.chw = self.image_chw(input_shape)
        (top, bottom), (left, right) = self.cropping
        if top + bottom >= h or left + right >= w:
            raise ValueError(f"cropping {self.cropping} leaves nothing of a {h}x{w} image")
        self.input_shape = tuple(input_shape)
        self.output_shape = self.image_shape((c, h - top - bottom, w - left - right))
        # the index of what is kept, (N, C, H, W): both passes (and the torch engine) use it
        self.kept = (slice(None), slice(None), slice(top, h - bottom), slice(left, w - right))
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.as_given(self.as_nchw(x)[self.kept])  # a view: no copy

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = np.zeros((len(dy), *self.input_shape), dtype=dy.dtype)  # the border had no effect
        self.as_nchw(dx)[self.kept] = self.as_nchw(dy)
        return dx

    def get_config(self) -> dict:
        return {"type": "Cropping2D", "cropping": [list(pair) for pair in self.cropping],
                **self.format_config()}


def _crop_amounts(cropping: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's three spellings of a cropping as ((top, bottom), (left, right))."""
    def amount(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"cropping amounts must be ints >= 0, got {cropping!r}")
        return int(value)

    if isinstance(cropping, int | np.integer) and not isinstance(cropping, bool):
        n = amount(cropping)
        return (n, n), (n, n)
    if isinstance(cropping, list | tuple) and len(cropping) == 2:
        rows, cols = cropping
        if all(isinstance(v, list | tuple) and len(v) == 2 for v in (rows, cols)):
            return (amount(rows[0]), amount(rows[1])), (amount(cols[0]), amount(cols[1]))
        return (amount(rows), amount(rows)), (amount(cols), amount(cols))
    raise ValueError("cropping must be an int, (rows, columns) or ((top, bottom), (left, "
                     f"right)), got {cropping!r}")


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order (C, H, W for images, as PyTorch)."""

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        self.input_shape, self.output_shape = tuple(input_shape), (math.prod(input_shape),)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.x_shape)


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability ``rate`` and scale
    the rest by 1 / (1 - rate), so inference (training=False) is the identity."""

    def __init__(self, rate: float, seed: int | None = None,
                 input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate, self.seed = float(rate), seed
        self.rng = np.random.default_rng(seed)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        # Masks come from the layer's own seed, else from a stream drawn off the model's seed.
        seed = self.seed if self.seed is not None else int(rng.integers(2**63))
        self.rng = np.random.default_rng(seed)
        return super().build(input_shape, rng, dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
        self.mask = keep * x.dtype.type(1.0 / (1.0 - self.rate))  # 0 or 1/(1-rate)
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy if self.mask is None else dy * self.mask

    def get_config(self) -> dict:
        return {"type": "Dropout", "rate": self.rate, "seed": self.seed}


class Activation(Layer):
    """An activation on its own: y = f(x), e.g. Activation("softmax") after a linear Dense."""

    def __init__(self, activation: str, input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        self.activation = get_activation(activation)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.activation.forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.activation.backward(dy)

    def linear_forward(self, x: np.ndarray) -> np.ndarray:
        return x  # no linear part

    def linear_backward(self, dz: np.ndarray) -> np.ndarray:
        return dz

    def get_config(self) -> dict:
        return {"type": "Activation", "activation": self.activation.name}


# ---- Keras's other layers (Keras 3 names, arguments and semantics) ------------------------


class AveragePooling2D(_Pooling2D):
    """Mean over pool_size windows: x (N, C, H, W) -> y (N, C, OH, OW).

    As in Keras/TensorFlow, "same" padding is not counted: a window that hangs over the
    border averages only the pixels it covers, y = (sum of the window) / count, with
    ``count`` (OH, OW) the number of real pixels in each window. Backward gives each
    covered pixel dy / count (adding where windows overlap).
    """

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        super().build(input_shape, rng, dtype)
        covered = pad2d(np.ones((1, 1, *self.chw[1:])), self.pads)  # 1 on real pixels
        self.count = sum(covered[window_slices(i, j, self.strides, self.out_hw)]
                         for i, j in self.offsets())[0, 0]  # (OH, OW) real pixels per window
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        xp = pad2d(self.as_nchw(x), self.pads)  # zeros add nothing to the sums
        total = np.zeros((len(x), self.chw[0], *self.out_hw), dtype=x.dtype)
        for i, j in self.offsets():
            total += xp[window_slices(i, j, self.strides, self.out_hw)]
        self.padded_shape = xp.shape
        return self.as_given(total / self.count.astype(x.dtype))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        share = self.as_nchw(dy) / self.count.astype(dy.dtype)  # what each window pixel gets
        dxp = np.zeros(self.padded_shape, dtype=dy.dtype)
        for i, j in self.offsets():
            dxp[window_slices(i, j, self.strides, self.out_hw)] += share
        top, _, left, _ = self.pads
        h, w = self.chw[1:]
        return self.as_given(dxp[:, :, top : top + h, left : left + w])



class GlobalAveragePooling2D(ImageLayer):
    """Mean over each channel's image: x (N, C, H, W) -> y (N, C);  dx = dy / (H*W) everywhere."""

    def __init__(self, data_format: str | None = None, input_shape: Shape | None = None) -> None:
        super().__init__(data_format, input_shape)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        self.chw = self.image_chw(input_shape)
        self.input_shape, self.output_shape = tuple(input_shape), (self.chw[0],)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.as_nchw(x).mean(axis=(2, 3))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        c, h, w = self.chw
        share = dy / dy.dtype.type(h * w)  # (N, C)
        dx = np.broadcast_to(share[:, :, None, None], (len(dy), c, h, w))
        return self.as_given(np.ascontiguousarray(dx))

    def get_config(self) -> dict:
        return {"type": "GlobalAveragePooling2D", **self.format_config()}


class GlobalMaxPooling2D(ImageLayer):
    """Max over each channel's image: x (N, C, H, W) -> y (N, C); backward sends dy to the
    first pixel holding the max (row-major order, as MaxPooling2D and PyTorch)."""

    def __init__(self, data_format: str | None = None, input_shape: Shape | None = None) -> None:
        super().__init__(data_format, input_shape)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        self.chw = self.image_chw(input_shape)
        self.input_shape, self.output_shape = tuple(input_shape), (self.chw[0],)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = self.as_nchw(x)
        flat = x.reshape(*x.shape[:2], -1)  # (N, C, H*W)
        self.argmax = flat.argmax(axis=2)[:, :, None]  # (N, C, 1): argmax takes the first max
        return np.take_along_axis(flat, self.argmax, axis=2)[:, :, 0]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        c, h, w = self.chw
        dx = np.zeros((len(dy), c, h * w), dtype=dy.dtype)
        np.put_along_axis(dx, self.argmax, dy[:, :, None], axis=2)
        return self.as_given(dx.reshape(len(dy), c, h, w))

    def get_config(self) -> dict:
        return {"type": "GlobalMaxPooling2D", **self.format_config()}


class Reshape(Layer):
    """(N, *input_shape) -> (N, *target_shape) in the engine's logical order (C, H, W for
    images), as Keras's Reshape; one entry of target_shape may be -1 (what is left)."""

    def __init__(self, target_shape: Shape | list[int], input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        target = tuple(target_shape)
        if (any(isinstance(d, bool) or not isinstance(d, int | np.integer) for d in target)
                or any(d < 1 and d != -1 for d in target) or target.count(-1) > 1
                or not target):
            raise ValueError(f"target_shape must be ints >= 1, at most one of them -1, got "
                             f"{target_shape!r}")
        self.target_shape = tuple(int(d) for d in target)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        size, known = math.prod(input_shape), math.prod(d for d in self.target_shape if d != -1)
        shape = tuple(size // known if d == -1 else d for d in self.target_shape)
        if math.prod(shape) != size:
            raise ValueError(f"cannot reshape {tuple(input_shape)} ({size} values) to "
                             f"{self.target_shape}")
        self.input_shape, self.output_shape = tuple(input_shape), shape
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x.reshape(len(x), *self.output_shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(len(dy), *self.input_shape)

    def get_config(self) -> dict:
        return {"type": "Reshape", "target_shape": list(self.target_shape)}


class BatchNormalization(ImageLayer):
    """Keras 3's batch normalization over the channel axis: axis 1 of the engine's (N, C, H, W)
    images (statistics over N, H, W; the last axis for ``data_format="channels_last"``, as
    Keras's axis=-1) and of flat (N, features) inputs (over N).

        training:  mean, var = batch mean and *biased* variance per channel
                   moving = moving * momentum + batch * (1 - momentum)   (both, as Keras 3)
        inference: mean, var = moving_mean, moving_variance
        y = gamma * (x - mean) / sqrt(var + epsilon) + beta

    Weights: ``params`` holds only what the optimizer trains, gamma (if ``scale``) and beta
    (if ``center``), with their ``grads``. The moving statistics are no parameters: they
    live in ``self.state`` ({"moving_mean", "moving_variance"}, (C,) each, starting at 0
    and 1), which forward(training=True) updates in place and nothing else writes (so
    references to the arrays stay valid). ``named_params``, the optimizer and gradcheck see
    only ``params``; what a model file must also hold (Keras's non-trainable weights) is
    ``state``, as "{i}.moving_mean" and "{i}.moving_variance", written back in place. The
    torch twin keeps them as buffers (``SpecLayer.numpy_state``).
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, input_shape: Shape | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(data_format, input_shape)
        if not 0.0 <= float(momentum) <= 1.0 or not float(epsilon) > 0.0:
            raise ValueError(f"BatchNormalization needs 0 <= momentum <= 1 and epsilon > 0, "
                             f"got {momentum}, {epsilon}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.state: dict[str, np.ndarray] = {}

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        if len(input_shape) not in (1, 3):
            raise ValueError(f"BatchNormalization expects (N, features) or images, got "
                             f"{input_shape}")
        c = self.image_chw(input_shape)[0] if len(input_shape) == 3 else input_shape[0]
        self.params, self.grads = {}, {}
        if self.scale:
            self._add_param("gamma", np.ones(c, dtype=dtype))
        if self.center:
            self._add_param("beta", np.zeros(c, dtype=dtype))
        self.state = {"moving_mean": np.zeros(c, dtype=dtype),
                      "moving_variance": np.ones(c, dtype=dtype)}
        self.input_shape, self.output_shape = tuple(input_shape), tuple(input_shape)
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.as_given(self._forward(self.as_nchw(x), training))

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        dx = self._backward(self.as_nchw(dy))
        return None if dx is None else self.as_given(dx)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        axes = (0, *range(2, x.ndim))  # every axis but the channels
        per_channel = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> broadcast against x
        if training:
            mean = x.mean(axis=axes)
            var = ((x - mean.reshape(per_channel)) ** 2).mean(axis=axes)  # biased
            for name, batch in (("moving_mean", mean), ("moving_variance", var)):
                moving = self.state[name]  # in place: the model's references stay valid
                moving *= moving.dtype.type(self.momentum)
                moving += batch * (1.0 - self.momentum)
        else:
            mean, var = self.state["moving_mean"], self.state["moving_variance"]
        self.training, self.axes, self.per_channel = training, axes, per_channel
        self.inv_std = (1.0 / np.sqrt(var + self.epsilon)).astype(x.dtype).reshape(per_channel)
        self.x_hat = (x - mean.reshape(per_channel)) * self.inv_std
        y = self.x_hat * self.params["gamma"].reshape(per_channel) if self.scale else self.x_hat
        return y + self.params["beta"].reshape(per_channel) if self.center else y.copy()

    def _backward(self, dy: np.ndarray) -> np.ndarray | None:
        axes, per_channel = self.axes, self.per_channel
        if self.center:
            np.sum(dy, axis=axes, out=self.grads["beta"])  # dbeta = sum dy
        if self.scale:
            np.sum(dy * self.x_hat, axis=axes, out=self.grads["gamma"])  # dgamma = sum dy x_hat
            dx_hat = dy * self.params["gamma"].reshape(per_channel)
        else:
            dx_hat = dy
        if not self.needs_input_grad:
            return None
        if not self.training:  # constant mean and variance: y is affine in x
            return dx_hat * self.inv_std
        # the batch statistics depend on x too: m = values per channel,
        # dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
        mean_dx_hat = dx_hat.mean(axis=axes).reshape(per_channel)
        mean_dx_hat_x_hat = (dx_hat * self.x_hat).mean(axis=axes).reshape(per_channel)
        return self.inv_std * (dx_hat - mean_dx_hat - self.x_hat * mean_dx_hat_x_hat)

    def get_config(self) -> dict:
        return {"type": "BatchNormalization", "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                **self.format_config()}


class ReLU(Layer):
    """Keras's ReLU layer:  y = min(x, max_value) where x > threshold,
    else negative_slope * (x - threshold);  dx = dy (0 above max_value) where x > threshold,
    else negative_slope * dy."""

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0,
                 threshold: float = 0.0, input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        if (max_value is not None and float(max_value) < 0) or float(negative_slope) < 0:
            raise ValueError(f"ReLU needs max_value >= 0 and negative_slope >= 0, got "
                             f"{max_value}, {negative_slope}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        t, slope = x.dtype.type(self.threshold), x.dtype.type(self.negative_slope)
        self.x = x
        y = np.where(x > t, x, slope * (x - t))
        return y if self.max_value is None else np.minimum(y, x.dtype.type(self.max_value))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self.x
        slope = np.where(x > self.threshold, 1.0, self.negative_slope).astype(dy.dtype)
        if self.max_value is not None:
            slope[x > self.max_value] = 0.0  # clipped: flat
        return dy * slope

    def get_config(self) -> dict:
        return {"type": "ReLU", "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


class LeakyReLU(Layer):
    """y = x if x > 0 else negative_slope * x (Keras 3's default 0.3; Keras 2 called it
    ``alpha``, which is accepted too);  dx = dy where x > 0, else negative_slope * dy."""

    def __init__(self, negative_slope: float = 0.3, alpha: float | None = None,
                 input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        self.negative_slope = float(negative_slope if alpha is None else alpha)
        if self.negative_slope < 0:
            raise ValueError(f"LeakyReLU needs negative_slope >= 0, got {self.negative_slope}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.positive = x > 0
        return np.where(self.positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.where(self.positive, dy, dy * dy.dtype.type(self.negative_slope))

    def get_config(self) -> dict:
        return {"type": "LeakyReLU", "negative_slope": self.negative_slope}


class Softmax(Layer):
    """Softmax along ``axis`` of (N, ...) (Keras counts the batch axis: -1 is the last axis
    of the engine's logical order, e.g. the features of flat inputs);
    dx = y * (dy - sum(dy * y, axis)).

    A plain layer, not an activation: a loss after it reads its outputs (no fused
    cross-entropy; put softmax on the last Dense for that)."""

    def __init__(self, axis: int = -1, input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or axis == 0:
            raise ValueError(f"Softmax axis must be a non-batch axis (an int, not 0), got "
                             f"{axis!r}")
        self.axis = int(axis)

    def build(self, input_shape: Shape, rng: np.random.Generator, dtype: Any) -> Shape:
        if not -len(input_shape) <= self.axis <= len(input_shape):
            raise ValueError(f"Softmax axis {self.axis} is not an axis of (N, *{input_shape})")
        return super().build(input_shape, rng, dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))  # exp <= 1: no overflow
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self.y
        return y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))

    def get_config(self) -> dict:
        return {"type": "Softmax", "axis": self.axis}


class Rescaling(Layer):
    """y = x * scale + offset (Keras's Rescaling, e.g. scale=1/255);  dx = dy * scale."""

    def __init__(self, scale: float, offset: float = 0.0,
                 input_shape: Shape | None = None) -> None:
        super().__init__(input_shape)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = x * x.dtype.type(self.scale)
        y += x.dtype.type(self.offset)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * dy.dtype.type(self.scale)

    def get_config(self) -> dict:
        return {"type": "Rescaling", "scale": self.scale, "offset": self.offset}


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Dense, Conv2D, MaxPooling2D, Cropping2D, Flatten, Dropout, Activation,
                AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, Reshape,
                BatchNormalization, ReLU, LeakyReLU, Softmax, Rescaling)
}


def layer_from_config(config: dict) -> Layer:
    """Rebuild a layer from ``get_config()`` output; ValueError names what is wrong."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a layer config must be a dict with a 'type', got {config!r}")
    kwargs = dict(config)
    kind, name = kwargs.pop("type"), kwargs.pop("name", None)
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}")
    try:
        layer = LAYER_TYPES[kind](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {kind}: {exc}") from None
    layer.name = name
    return layer


__all__ = [
    "LAYER_TYPES",
    "Activation",
    "AveragePooling2D",
    "BatchNormalization",
    "Conv2D",
    "Cropping2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Layer",
    "LeakyReLU",
    "MaxPooling2D",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Softmax",
    "layer_from_config",
    "output_size",
]
