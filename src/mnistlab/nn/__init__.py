"""The from-scratch NumPy engine: layers, activations, losses, optimizers, the network.

The model a user trains (``mnistlab.Sequential``) puts these together with the fit loop:

    from mnistlab import Sequential
    from mnistlab.nn import Dense, Flatten
    model = Sequential([Flatten(input_shape=(28, 28)), Dense(1000, "relu"),
                        Dense(10, "softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=100)
"""

from __future__ import annotations

from mnistlab.nn.activations import get_activation
from mnistlab.nn.gradcheck import GradcheckReport, gradcheck
from mnistlab.nn.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Cropping2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    Layer,
    LeakyReLU,
    MaxPooling2D,
    ReLU,
    Rescaling,
    Reshape,
    Softmax,
    layer_from_config,
)
from mnistlab.nn.losses import (
    BinaryCrossentropy,
    BinaryCrossentropySum,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    SigmoidCrossentropySum,
    SparseCategoricalCrossentropy,
    accuracy,
    check_targets,
    get_loss,
)
from mnistlab.nn.optimizers import (
    SGD,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    RMSprop,
    get_optimizer,
)
from mnistlab.nn.tensor import EagerArray, relu, sigmoid, softmax

__all__ = [
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "AveragePooling2D",
    "BatchNormalization",
    "BinaryCrossentropy",
    "BinaryCrossentropySum",
    "CategoricalCrossentropy",
    "Conv2D",
    "Cropping2D",
    "Dense",
    "Dropout",
    "EagerArray",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "GradcheckReport",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MaxPooling2D",
    "MeanSquaredError",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "ReLU",
    "Rescaling",
    "Reshape",
    "SigmoidCrossentropySum",
    "Softmax",
    "SparseCategoricalCrossentropy",
    "accuracy",
    "check_targets",
    "get_activation",
    "get_loss",
    "get_optimizer",
    "gradcheck",
    "layer_from_config",
    "relu",
    "sigmoid",
    "softmax",
]
