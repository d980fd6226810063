"""Keras 3's ``keras.layers`` for what MNIST courses use, as mnistlab's NumPy layers.

Each class here *is* the ``mnistlab.nn`` layer of the same name (a subclass, so both
engines, model files and gradient checks treat it as that layer), with Keras's constructor:
Keras's argument names and defaults, ``name=`` (unique names made as Keras makes them:
``dense``, ``dense_1``, ...), and ``data_format`` defaulting to "channels_last" (N, H, W, C),
Keras's default, where ``mnistlab.nn`` defaults to the textbook's (N, C, H, W).

Keras arguments mnistlab does not implement (``use_bias=False``, regularizers, constraints,
``dilation_rate``, ``groups``, ...) raise ``NotImplementedError`` naming the argument, never
silently a different layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import count
from typing import Any

import numpy as np

from mnistlab.nn import layers as nn_layers

__all__ = [
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
    "Input",
    "InputLayer",
    "Layer",
    "LeakyReLU",
    "MaxPooling2D",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Softmax",
]

Layer = nn_layers.Layer
_UIDS: dict[str, count] = {}  # prefix -> counter, as Keras's backend.get_uid


def unique_name(prefix: str) -> str:
    """Keras's automatic names: "dense", then "dense_1", "dense_2", ... per prefix."""
    n = next(_UIDS.setdefault(prefix, count()))
    return prefix if n == 0 else f"{prefix}_{n}"


def reset_names() -> None:
    """Start the automatic names again (``keras.backend.clear_session``)."""
    _UIDS.clear()


def snake_case(name: str) -> str:
    """Keras's name of a layer class: "Conv2D" -> "conv2d", "LeakyReLU" -> "leaky_re_lu"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def name_layer(layer: Layer, name: str | None = None) -> None:
    """Give ``layer`` its name: the one asked for, or Keras's next automatic one."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"a layer name must be a non-empty string, got {name!r}")
    layer.name = name or unique_name(snake_case(type(layer).__name__))


def activation_name(activation: str | Callable | None) -> str | None:
    """Keras accepts an activation's name or the function itself (``keras.activations.relu``,
    ``tf.nn.relu``): the name either way."""
    if activation is None or isinstance(activation, str):
        return activation
    name = getattr(activation, "__name__", None)
    if name is None:
        raise ValueError(f"activation must be a name or an activation function, got "
                         f"{activation!r}")
    return name


def initializer_name(initializer: Any) -> str:
    """An initializer's name, from a string or a ``keras.initializers`` object."""
    return initializer if isinstance(initializer, str) else getattr(initializer, "name",
                                                                   initializer)


def _refuse(layer: str, **arguments: tuple[Any, Any]) -> None:
    """NotImplementedError for a Keras argument given other than its default."""
    for argument, (value, default) in arguments.items():
        if value is not default and value != default:
            raise NotImplementedError(
                f"{layer}({argument}={value!r}) is not implemented in mnistlab.keras (only "
                f"{argument}={default!r}); see the README's list of Keras features")


def _input_shape(kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """Keras 2's ``input_shape=``/``input_dim=`` keywords, which Keras 3 still takes."""
    shape = kwargs.pop("input_shape", None)
    dim = kwargs.pop("input_dim", None)
    if kwargs.pop("trainable", True) is not True:
        raise NotImplementedError("trainable=False is not implemented in mnistlab.keras")
    for key in ("dtype", "autocast"):  # float32 models only: accepted when they say so
        value = kwargs.pop(key, None)
        if value not in (None, "float32", True):
            raise NotImplementedError(f"{key}={value!r} is not implemented in mnistlab.keras")
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
    if dim is not None:
        return (int(dim),)
    return None if shape is None else tuple(int(d) for d in shape)


# ---- Keras's weight layouts ----------------------------------------------------------------
# A layer's weights as Keras lists them (``layer.get_weights()``): Dense [kernel (in, out),
# bias]; Conv2D [kernel (kh, kw, in, out), bias]; BatchNormalization [gamma, beta,
# moving_mean, moving_variance]. The engine's Conv2D W is (out, in, kh, kw).


def to_keras_layout(layer: Layer, key: str, value: np.ndarray) -> np.ndarray:
    """An engine weight ``layer.params[key]``/``state[key]`` in Keras's layout."""
    if isinstance(layer, nn_layers.Conv2D) and key == "W":
        return value.transpose(2, 3, 1, 0)
    return value


def from_keras_layout(layer: Layer, key: str, value: np.ndarray) -> np.ndarray:
    """A weight in Keras's layout as the engine keeps it (``to_keras_layout`` undone)."""
    if isinstance(layer, nn_layers.Conv2D) and key == "W":
        return value.transpose(3, 2, 0, 1)
    return value


class KerasLayer:
    """What a Keras layer answers besides the math: ``get_weights``/``set_weights`` in
    Keras's order and layouts, ``count_params``. Mixed into every layer class here (they
    read the NumPy engine's arrays, where a ``mnistlab.keras`` model keeps its weights)."""

    name: str | None
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the layer's weights, Keras's order and layouts."""
        return [np.array(to_keras_layout(self, key, value))
                for key, value in (*self.params.items(), *self.state.items())]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Keras's order and layouts, every shape checked before anything is written."""
        targets = [*self.params.items(), *self.state.items()]
        if len(weights) != len(targets):
            raise ValueError(f"layer {self.name!r} has {len(targets)} weights, got "
                             f"{len(weights)}")
        values = [from_keras_layout(self, key, np.asarray(v))
                  for (key, _), v in zip(targets, weights, strict=True)]
        for (key, target), value in zip(targets, values, strict=True):
            if value.shape != target.shape:
                raise ValueError(f"layer {self.name!r} weight {key!r}: expected shape "
                                 f"{to_keras_layout(self, key, target).shape}, got "
                                 f"{to_keras_layout(self, key, value).shape}")
        for (_, target), value in zip(targets, values, strict=True):
            np.copyto(target, value, casting="same_kind")

    def count_params(self) -> int:
        return int(sum(v.size for v in (*self.params.values(), *self.state.values())))


class InputLayer:
    """``keras.Input(shape)`` / ``keras.layers.InputLayer``: only says the input's shape
    (without the batch axis); a Sequential takes it as its first entry."""

    def __init__(self, shape: tuple[int, ...] | None = None, batch_size: int | None = None,
                 dtype: Any = None, name: str | None = None, **kwargs: Any) -> None:
        shape = kwargs.pop("input_shape", shape)
        if shape is None:
            raise ValueError("Input needs a shape, e.g. keras.Input(shape=(28, 28, 1))")
        self.shape = tuple(int(d) for d in (shape if isinstance(shape, tuple | list)
                                            else (shape,)))
        self.batch_size = batch_size
        if dtype not in (None, "float32"):
            raise NotImplementedError(f"Input(dtype={dtype!r}): mnistlab.keras models are "
                                      "float32")
        self.name = name or unique_name("input_layer")
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")

    def __repr__(self) -> str:
        return f"<Input shape=(None, {', '.join(map(str, self.shape))})>"


def Input(shape: tuple[int, ...] | None = None, batch_size: int | None = None,
          dtype: Any = None, name: str | None = None, **kwargs: Any) -> InputLayer:
    """``keras.Input``: the first entry of a Sequential, giving the input's shape."""
    return InputLayer(shape, batch_size=batch_size, dtype=dtype, name=name, **kwargs)


class Dense(KerasLayer, nn_layers.Dense):
    """``keras.layers.Dense(units, activation=None, use_bias=True, ...)``."""

    def __init__(self, units: int, activation: str | Callable | None = None,
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, bias_constraint: Any = None,
                 name: str | None = None, **kwargs: Any) -> None:
        _refuse("Dense", use_bias=(use_bias, True),
                kernel_regularizer=(kernel_regularizer, None),
                bias_regularizer=(bias_regularizer, None),
                activity_regularizer=(activity_regularizer, None),
                kernel_constraint=(kernel_constraint, None),
                bias_constraint=(bias_constraint, None))
        super().__init__(units, activation_name(activation), initializer_name(kernel_initializer),
                         initializer_name(bias_initializer), input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Conv2D(KerasLayer, nn_layers.Conv2D):
    """``keras.layers.Conv2D(filters, kernel_size, strides=(1, 1), padding="valid",
    data_format=None, ...)``; data_format None is "channels_last", as in Keras."""

    def __init__(self, filters: int, kernel_size: int | tuple[int, int],
                 strides: int | tuple[int, int] = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: Any = (1, 1), groups: int = 1,
                 activation: str | Callable | None = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, name: str | None = None, **kwargs: Any) -> None:
        dilation = tuple(dilation_rate) if isinstance(dilation_rate, list | tuple) \
            else (dilation_rate, dilation_rate)
        _refuse("Conv2D", dilation_rate=(dilation, (1, 1)), groups=(groups, 1),
                use_bias=(use_bias, True), kernel_regularizer=(kernel_regularizer, None),
                bias_regularizer=(bias_regularizer, None),
                activity_regularizer=(activity_regularizer, None),
                kernel_constraint=(kernel_constraint, None),
                bias_constraint=(bias_constraint, None))
        super().__init__(filters, kernel_size, strides, str(padding).lower(),
                         activation_name(activation), initializer_name(kernel_initializer),
                         initializer_name(bias_initializer), input_shape=_input_shape(kwargs),
                         data_format=data_format or "channels_last")
        name_layer(self, name)


class MaxPooling2D(KerasLayer, nn_layers.MaxPooling2D):
    """``keras.layers.MaxPooling2D(pool_size=(2, 2), strides=None, padding="valid",
    data_format=None)``."""

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2),
                 strides: int | tuple[int, int] | None = None, padding: str = "valid",
                 data_format: str | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, str(padding).lower(),
                         input_shape=_input_shape(kwargs),
                         data_format=data_format or "channels_last")
        name_layer(self, name)


class AveragePooling2D(KerasLayer, nn_layers.AveragePooling2D):
    """``keras.layers.AveragePooling2D(pool_size, strides=None, padding="valid",
    data_format=None)`` (Keras 3 has no default pool_size here, unlike MaxPooling2D)."""

    def __init__(self, pool_size: int | tuple[int, int],
                 strides: int | tuple[int, int] | None = None, padding: str = "valid",
                 data_format: str | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, str(padding).lower(),
                         input_shape=_input_shape(kwargs),
                         data_format=data_format or "channels_last")
        name_layer(self, name)


class GlobalAveragePooling2D(KerasLayer, nn_layers.GlobalAveragePooling2D):
    """``keras.layers.GlobalAveragePooling2D(data_format=None, keepdims=False)``."""

    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 name: str | None = None, **kwargs: Any) -> None:
        _refuse("GlobalAveragePooling2D", keepdims=(keepdims, False))
        super().__init__(data_format or "channels_last", input_shape=_input_shape(kwargs))
        name_layer(self, name)


class GlobalMaxPooling2D(KerasLayer, nn_layers.GlobalMaxPooling2D):
    """``keras.layers.GlobalMaxPooling2D(data_format=None, keepdims=False)``."""

    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 name: str | None = None, **kwargs: Any) -> None:
        _refuse("GlobalMaxPooling2D", keepdims=(keepdims, False))
        super().__init__(data_format or "channels_last", input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Cropping2D(KerasLayer, nn_layers.Cropping2D):
    """``keras.layers.Cropping2D(cropping=((0, 0), (0, 0)), data_format=None)``."""

    def __init__(self, cropping: Any = ((0, 0), (0, 0)), data_format: str | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(cropping, input_shape=_input_shape(kwargs),
                         data_format=data_format or "channels_last")
        name_layer(self, name)


class Flatten(KerasLayer, nn_layers.Flatten):
    """``keras.layers.Flatten(data_format=None)``: flattens in the order the batch has
    (H, W, C for Keras's channels_last images, as Keras)."""

    def __init__(self, data_format: str | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        _refuse("Flatten", data_format=(data_format or "channels_last", "channels_last"))
        super().__init__(_input_shape(kwargs))
        name_layer(self, name)


class Reshape(KerasLayer, nn_layers.Reshape):
    """``keras.layers.Reshape(target_shape)``, e.g. Reshape((28, 28, 1)) after 784 pixels."""

    def __init__(self, target_shape: tuple[int, ...], name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(target_shape, input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Dropout(KerasLayer, nn_layers.Dropout):
    """``keras.layers.Dropout(rate, noise_shape=None, seed=None)``."""

    def __init__(self, rate: float, noise_shape: Any = None, seed: int | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        _refuse("Dropout", noise_shape=(noise_shape, None))
        super().__init__(rate, seed=seed, input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Activation(KerasLayer, nn_layers.Activation):
    """``keras.layers.Activation(activation)``."""

    def __init__(self, activation: str | Callable, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(activation_name(activation), input_shape=_input_shape(kwargs))
        name_layer(self, name)


class BatchNormalization(KerasLayer, nn_layers.BatchNormalization):
    """``keras.layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001, center=True,
    scale=True)``: axis -1 (or 3) normalizes the channels of channels_last images, axis 1
    those of channels_first ones; flat inputs have one axis either way."""

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 0.001,
                 center: bool = True, scale: bool = True,
                 beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 moving_mean_initializer: Any = "zeros",
                 moving_variance_initializer: Any = "ones", beta_regularizer: Any = None,
                 gamma_regularizer: Any = None, synchronized: bool = False,
                 name: str | None = None, **kwargs: Any) -> None:
        if axis not in (-1, 1, 3):
            raise NotImplementedError(f"BatchNormalization(axis={axis}) is not implemented "
                                      "in mnistlab.keras: the channels are axis -1 (or 3) "
                                      "for channels_last images, axis 1 for channels_first")
        _refuse("BatchNormalization", beta_initializer=(initializer_name(beta_initializer),
                                                        "zeros"),
                gamma_initializer=(initializer_name(gamma_initializer), "ones"),
                moving_mean_initializer=(initializer_name(moving_mean_initializer), "zeros"),
                moving_variance_initializer=(initializer_name(moving_variance_initializer),
                                             "ones"),
                beta_regularizer=(beta_regularizer, None),
                gamma_regularizer=(gamma_regularizer, None))
        self.axis = axis
        super().__init__(momentum, epsilon, center, scale, input_shape=_input_shape(kwargs),
                         data_format="channels_first" if axis == 1 else "channels_last")
        name_layer(self, name)


class ReLU(KerasLayer, nn_layers.ReLU):
    """``keras.layers.ReLU(max_value=None, negative_slope=0.0, threshold=0.0)``."""

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0,
                 threshold: float = 0.0, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(max_value, negative_slope, threshold, input_shape=_input_shape(kwargs))
        name_layer(self, name)


class LeakyReLU(KerasLayer, nn_layers.LeakyReLU):
    """``keras.layers.LeakyReLU(negative_slope=0.3)`` (``alpha=`` as Keras 2 named it)."""

    def __init__(self, negative_slope: float = 0.3, name: str | None = None,
                 **kwargs: Any) -> None:
        alpha = kwargs.pop("alpha", None)
        super().__init__(negative_slope, alpha=alpha, input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Softmax(KerasLayer, nn_layers.Softmax):
    """``keras.layers.Softmax(axis=-1)``."""

    def __init__(self, axis: int = -1, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(axis, input_shape=_input_shape(kwargs))
        name_layer(self, name)


class Rescaling(KerasLayer, nn_layers.Rescaling):
    """``keras.layers.Rescaling(scale, offset=0.0)``, e.g. Rescaling(1 / 255)."""

    def __init__(self, scale: float, offset: float = 0.0, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(scale, offset, input_shape=_input_shape(kwargs))
        name_layer(self, name)
