"""One of the course's Keras jobs, timed, in one framework; prints one JSON line.

    python benchmarks/course_jobs.py --framework keras --job cnn --limit 12000 --epochs 1

Frameworks: ``mnistlab`` (the course's script through ``mnistlab.keras``), ``keras`` (the
same script on real Keras 3, torch backend), ``native`` (the same model through mnistlab's
own API, to show what the Keras facade costs) and ``pytorch`` (the same model written
plainly in PyTorch, Keras's initializers aside). Jobs, as the course ran them: ``mlp``
(Dense(1000, relu)-Dense(10), Adam, batch 100) and ``cnn`` (conv 5x5x32 same - pool -
conv 2x2x64 same - pool - dropout .25 - dense 1000 - dense 10, Adam, batch 32: Keras's
default).

Each framework first trains one epoch on ``--warmup`` images untimed (imports, kernels and
allocators settle: a user's second epoch sees that), then times ``fit`` on the job's data.
"""

from __future__ import annotations

import sys

if {"mnistlab", "native"} & set(sys.argv):  # the course's `import mnistlab as tf` comes first
    import mnistlab  # noqa: F401

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

BATCH = {"mlp": 100, "cnn": 32}


def load(limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` training images (float32 in [0, 1]) and labels, read from the
    official files as a course script reads them (gzip + frombuffer)."""
    root = Path(os.environ.get("MNIST_DIR", Path(__file__).parents[2] / "shared/datasets/mnist"))
    with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return (x[:limit].astype(np.float32) / 255.0), y[:limit].astype(np.int64)


def keras_model(keras, job: str):  # the course's code, as written for Keras
    layers = keras.layers
    if job == "mlp":
        return keras.Sequential([keras.Input((784,)), layers.Dense(1000, activation="relu"),
                                 layers.Dense(10, activation="softmax")])
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, kernel_size=(5, 5), padding="same", activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, (2, 2), padding="same", activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(1000, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def run_keras(keras, job, x, y, warm, epochs) -> float:
    def fit(xs, ys, n_epochs):
        model = keras_model(keras, job)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        started = time.perf_counter()
        model.fit(xs, ys, batch_size=BATCH[job], epochs=n_epochs, verbose=0)
        return time.perf_counter() - started

    fit(x[:warm], y[:warm], 1)
    return fit(x, y, epochs)


def run_native(job, x, y, warm, epochs) -> float:
    from mnistlab import Sequential
    from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    def fit(xs, ys, n_epochs):
        if job == "mlp":
            model = Sequential([Dense(1000, "relu", input_shape=(784,)), Dense(10, "softmax")])
        else:
            last = "channels_last"
            model = Sequential([
                Conv2D(32, 5, padding="same", activation="relu", data_format=last,
                       input_shape=(28, 28, 1)),
                MaxPooling2D(2, data_format=last),
                Conv2D(64, 2, padding="same", activation="relu", data_format=last),
                MaxPooling2D(2, data_format=last), Dropout(0.25), Flatten(),
                Dense(1000, "relu"), Dense(10, "softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        started = time.perf_counter()
        model.fit(xs, ys, batch_size=BATCH[job], epochs=n_epochs, verbose=0)
        return time.perf_counter() - started

    fit(x[:warm], y[:warm], 1)
    return fit(x, y, epochs)


def run_pytorch(job, x, y, warm, epochs) -> float:
    import torch
    from torch import nn

    def model():
        if job == "mlp":
            return nn.Sequential(nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 10))
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(32, 64, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 7 * 7, 1000), nn.ReLU(),
            nn.Linear(1000, 10))

    def fit(xs, ys, n_epochs):
        net = model()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = nn.CrossEntropyLoss()
        xt = torch.from_numpy(xs.reshape(len(xs), 784) if job == "mlp"
                              else xs.reshape(len(xs), 1, 28, 28))
        yt = torch.from_numpy(ys)
        started = time.perf_counter()
        for _ in range(n_epochs):
            order = torch.randperm(len(xt))
            for i in range(0, len(xt), BATCH[job]):
                idx = order[i:i + BATCH[job]]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        return time.perf_counter() - started

    fit(x[:warm], y[:warm], 1)
    return fit(x, y, epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", required=True,
                        choices=["mnistlab", "keras", "native", "pytorch"])
    parser.add_argument("--job", required=True, choices=["mlp", "cnn"])
    parser.add_argument("--limit", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2000)
    args = parser.parse_args()
    x, y = load(args.limit)
    x = x.reshape(len(x), 784) if args.job == "mlp" else x.reshape(len(x), 28, 28, 1)
    if args.framework == "pytorch":
        seconds = run_pytorch(args.job, x, y, args.warmup, args.epochs)
    elif args.framework == "native":
        seconds = run_native(args.job, x, y, args.warmup, args.epochs)
    elif args.framework == "keras":
        os.environ["KERAS_BACKEND"] = "torch"
        import keras

        seconds = run_keras(keras, args.job, x, y, args.warmup, args.epochs)
    else:
        from mnistlab import keras

        seconds = run_keras(keras, args.job, x, y, args.warmup, args.epochs)
    print(json.dumps({"framework": args.framework, "job": args.job, "images": len(x),
                      "epochs": args.epochs, "seconds": seconds}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
