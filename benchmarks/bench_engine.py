"""NumPy engine vs PyTorch CPU: same models, data, batches, initial weights and threads.

    python benchmarks/bench_engine.py                 # full MNIST, 1 epoch each (minutes)
    python benchmarks/bench_engine.py --quick         # a small subset (seconds)
    python benchmarks/bench_engine.py --synthetic     # random data with MNIST's shapes

Rows: one training epoch of the MLP 784-1000relu-10 and of the CNN (Adam, batch 100), and
inference on the 10,000 test images in one call (``predict(x_test)`` vs ``net(x_test)``).
Goals (numpy time / torch time): MLP epoch <= 1.0, CNN epoch <= 2.0, inference <= 1.0.
Each engine runs in its own process with the same thread count. The engines take turns for
``--rounds`` rounds (who goes first alternates) and each time is the median of its rounds,
so that a slow minute on a shared machine does not decide a ratio. Time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

GOALS = {"mlp epoch": 1.0, "cnn epoch": 2.0, "mlp inference": 1.0, "cnn inference": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small subset: 2,000 train, 1,000 test")
    p.add_argument("--synthetic", action="store_true", help="random data, no dataset needed")
    p.add_argument("--train", type=int, default=None, help="training images (default all)")
    p.add_argument("--test", type=int, default=None, help="test images (default 10,000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="for numpy and torch")
    p.add_argument("--repeat", type=int, default=3, help="inference runs; the best counts")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of each engine, taking turns; the median counts (default 3)")
    p.add_argument("--only", default="mlp,cnn", help="comma list of models: mlp, cnn")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--engine", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    import numpy as np

    n_train = args.train or (2000 if args.quick else 60000)
    n_test = args.test or (1000 if args.quick else 10000)
    if args.synthetic:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n_train + n_test, 1, 28, 28), dtype=np.uint8)
        x = (x * np.float32(1 / 255)).astype(np.float32)
        t = rng.integers(0, 10, n_train + n_test)
        return x[:n_train], t[:n_train], x[n_train:], t[n_train:]
    from mnistlab.datasets import load_mnist

    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, flatten=False)
    return (np.ascontiguousarray(x_train[:n_train]), t_train[:n_train].astype(np.int64),
            np.ascontiguousarray(x_test[:n_test]), t_test[:n_test].astype(np.int64))


def build(kind: str) -> Any:
    from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Sequential

    if kind == "mlp":
        layers = [Flatten(), Dense(1000, "relu"), Dense(10, "softmax")]
    else:
        layers = [Conv2D(32, 5, padding="same", activation="relu"), MaxPooling2D(2),
                  Conv2D(64, 2, padding="same", activation="relu"), MaxPooling2D(2),
                  Dropout(0.25), Flatten(), Dense(1000, "relu"), Dense(10, "softmax")]
    model = Sequential(layers, seed=0, input_shape=(1, 28, 28))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.build()
    return model


def to_torch(model: Any) -> Any:
    """The same network in torch, starting from the same weights."""
    import torch
    from torch import nn

    from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    modules: list[nn.Module] = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            lin = nn.Linear(*layer.params["W"].shape)
            lin.weight.data = torch.from_numpy(layer.params["W"].T.copy())
            lin.bias.data = torch.from_numpy(layer.params["b"].copy())
            modules.append(lin)
        elif isinstance(layer, Conv2D):
            f, c, kh, kw = layer.params["W"].shape
            conv = nn.Conv2d(c, f, (kh, kw), padding="same")
            conv.weight.data = torch.from_numpy(layer.params["W"].copy())
            conv.bias.data = torch.from_numpy(layer.params["b"].copy())
            modules.append(conv)
        elif isinstance(layer, MaxPooling2D):
            modules.append(nn.MaxPool2d(layer.pool_size))
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.rate))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        if getattr(layer, "activation", None) is not None and layer.activation.name == "relu":
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)  # softmax lives in CrossEntropyLoss


def torch_epoch(net: Any, x: Any, t: Any, batch_size: int, order: Any) -> float:
    """One epoch of Adam + cross-entropy in torch with our batch order; returns seconds."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, tt, idx = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(order)
    net.train()

    def step(i: Any) -> None:
        opt.zero_grad()
        loss_fn(net(xt.index_select(0, i)), tt.index_select(0, i)).backward()
        opt.step()

    for start in range(0, 3 * batch_size, batch_size):  # warm-up, not timed
        step(idx[start : start + batch_size])
    began = time.perf_counter()
    for start in range(0, len(x), batch_size):
        step(idx[start : start + batch_size])
    return time.perf_counter() - began


def numpy_epoch(model: Any, x: Any, t: Any, batch_size: int) -> float:
    for start in range(0, 3 * batch_size, batch_size):  # warm-up, not timed
        model.train_step(x[start : start + batch_size], t[start : start + batch_size])
    began = time.perf_counter()
    model.fit(x, t, epochs=1, batch_size=batch_size, seed=0, verbose=0)
    return time.perf_counter() - began


def best_of(repeat: int, fn: Any) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def run_engine(engine: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one epoch and time inference with one engine (in its own process)."""
    import numpy as np

    x_train, t_train, x_test, t_test = load(args)
    model = build(kind)
    if engine == "numpy":
        epoch = numpy_epoch(model, x_train, t_train, args.batch_size)
        infer = best_of(args.repeat, lambda: model.predict(x_test))
        predicted = model.predict(x_test).argmax(1)
    else:
        import torch

        from mnistlab.training import epoch_order

        torch.set_num_threads(args.threads)
        net = to_torch(model)
        order = epoch_order(len(x_train), 0, True, 0)  # the order our fit uses
        epoch = torch_epoch(net, x_train, t_train, args.batch_size, order)
        net.eval()
        with torch.inference_mode():
            xt = torch.from_numpy(x_test)
            infer = best_of(args.repeat, lambda: net(xt))
            predicted = net(xt).argmax(1).numpy()
    return {"epoch_s": epoch, "inference_s": infer,
            "test_accuracy": float(np.mean(predicted == t_test)),
            "n_train": len(x_train), "n_test": len(x_test)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy and torch load their BLAS
    if args.engine:  # child process: one engine, one model, JSON on stdout
        import mnistlab  # noqa: F401  first, as in a user's script: it tunes OpenBLAS's threads
        print(json.dumps(run_engine(args.engine, args.only, args)))
        return 0
    # Each engine runs in its own process: idle BLAS/OpenMP threads of one library
    # spin for a while and would steal cores from the other.
    argv = sys.argv[1:] if argv is None else argv
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    results, sizes = [], {}
    for kind in args.only.split(","):
        runs: dict[str, list[dict[str, Any]]] = {"numpy": [], "torch": []}
        for round_ in range(args.rounds):
            engines = ("numpy", "torch") if round_ % 2 == 0 else ("torch", "numpy")
            for engine in engines:
                cmd = [sys.executable, __file__, *argv, "--engine", engine, "--only", kind]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr)
                    return done.returncode
                runs[engine].append(json.loads(done.stdout.strip().splitlines()[-1]))
        first = runs["numpy"][0]
        sizes = {"n_train": first["n_train"], "n_test": first["n_test"]}
        for what, key in (("epoch", "epoch_s"), ("inference", "inference_s")):
            results.append({"name": f"{kind} {what}",
                            **{f"{engine}_s": statistics.median(r[key] for r in runs[engine])
                               for engine in runs},
                            **{f"{engine}_rounds_s": [r[key] for r in runs[engine]]
                               for engine in runs}})
        results[-1].update(accuracy_numpy=first["test_accuracy"],
                           accuracy_torch=runs["torch"][0]["test_accuracy"])
    report(results, args, sizes["n_train"], sizes["n_test"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)
    return 0


def report(results: list[dict[str, Any]], args: argparse.Namespace, n_train: int,
           n_test: int) -> None:
    data = "synthetic" if args.synthetic else "MNIST"
    print(f"{data}: epoch = {n_train} training images, batch {args.batch_size}; inference = "
          f"{n_test} test images in one call; {args.threads} threads; NumPy engine vs PyTorch "
          f"CPU, each in its own process; median of {args.rounds} rounds")
    print(f"{'benchmark':<20}{'numpy s':>10}{'torch s':>10}{'ratio':>8}{'goal':>7}  ok")
    for row in results:
        ratio, goal = row["numpy_s"] / row["torch_s"], GOALS[row["name"]]
        row.update(ratio=ratio, goal=goal, ok=ratio <= goal)
        print(f"{row['name']:<20}{row['numpy_s']:>10.3f}{row['torch_s']:>10.3f}{ratio:>8.2f}"
              f"{goal:>7.1f}  {'yes' if row['ok'] else 'NO'}")
    accs = [r for r in results if "accuracy_numpy" in r]
    for row in accs:
        print(f"  test accuracy after 1 epoch, {row['name'].split()[0]}: "
              f"numpy {row['accuracy_numpy']:.4f}, torch {row['accuracy_torch']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
