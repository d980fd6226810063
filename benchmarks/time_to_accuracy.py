"""Time to accuracy: training seconds to the test accuracy each recipe reaches, on this CPU.

    python benchmarks/time_to_accuracy.py                        # every entry, 3 seeds
    python benchmarks/time_to_accuracy.py --only reference,fast-torch,fast-numpy
    python benchmarks/time_to_accuracy.py --skip cnn-numpy       # all but the longest one
    python benchmarks/time_to_accuracy.py --long-seeds 1         # 1 seed of the long entries
    python benchmarks/time_to_accuracy.py --quick --seeds 1      # smoke run on a slice
    python benchmarks/time_to_accuracy.py --only reference,fast-torch --set crop=0
                                         # a recipe setting changed for the mnistlab entries

Entries (each seed of each entry in its own process, which first runs the entry once
untimed on a small slice, so lazy imports and kernel set-up are not timed; the entries
take turns, seed by seed, so a machine slowing down for a while slows them alike):

  reference         the public "99% in 0.76 s on a laptop GPU" recipe in plain PyTorch:
                    conv 1->24 5x5 - pool - relu - conv 24->32 3x3 - pool - relu -
                    fc 800->256 - relu - fc 256->10, batch 256, Adam lr 0.01 betas
                    (0.7, 0.9), one-cycle, one epoch, data preloaded, channels-last
  fast-torch        mnistlab's `fast` recipe on the torch engine
  fast-numpy        mnistlab's `fast` recipe on the NumPy engine
  cnn-torch         the course CNN (the `keras-cnn` recipe, 5 epochs) on the torch engine
  cnn-numpy         the same on the NumPy engine (the long one: many minutes a seed)
  cnn-pytorch       the course CNN written plainly in PyTorch, trained the same way
  examples-pytorch  pytorch/examples mnist/main.py's defaults for one epoch: conv32 -
                    conv64 - maxpool - dropout - fc128 - dropout - fc10, Adadelta lr 1.0,
                    StepLR gamma 0.7, batch 64

Columns: training seconds (median over the seeds; model, optimizer and training loop),
test accuracy per seed on the full 10,000-image test set, data-load seconds (loading and
converting train and test sets) and evaluation seconds (predicting the test set), each
median; the ratio of training seconds to the reference's in the same run. The course
CNN entries validate on the test set after each epoch, as the course (and the recipe)
does, inside their training time. Time on a quiet machine: before each entry the script
runs ../shared/tools/wait-quiet when it exists, and the table says whether it found the
machine quiet every time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WAIT_QUIET = HERE.parents[1] / "shared" / "tools" / "wait-quiet"
MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, as the PyTorch examples normalize
GOALS = {"fast-torch": 0.5, "fast-numpy": 2.0}  # training time / the reference's
LONG = ("cnn-torch", "cnn-numpy", "cnn-pytorch", "examples-pytorch")  # minutes a seed


@dataclass
class Result:
    """One seed of one entry."""

    data_s: float
    train_s: float
    eval_s: float
    accuracy: float


@dataclass
class Slice:
    """How much data a run uses (None: all), and whether it is the untimed warm-up."""

    n_train: int | None = None
    n_test: int | None = None
    warmup: bool = False


# --------------------------------------------------------------------------- plain PyTorch


def _torch_data(piece: Slice, normalize: bool, channels_last: bool) -> tuple[Any, ...]:
    """MNIST as float tensors (N, 1, 28, 28): [0, 1], or standardized when ``normalize``."""
    import numpy as np
    import torch

    from mnistlab.datasets import load_data

    (x, y), (x_test, y_test) = load_data("mnist")

    def images(a: np.ndarray, n: int | None) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(a[:n], dtype=np.float32)).div_(255).unsqueeze(1)
        if normalize:
            t = t.sub_(MEAN).div_(STD)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def labels(a: np.ndarray, n: int | None) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a[:n], dtype=np.int64))

    return (images(x, piece.n_train), labels(y, piece.n_train),
            images(x_test, piece.n_test), labels(y_test, piece.n_test))  # fmt: skip


def _torch_accuracy(net: Any, x: Any, y: Any, batch: int = 2000) -> float:
    import torch

    net.eval()
    with torch.inference_mode():
        predicted = torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    net.train()
    return float((predicted == y).float().mean())


def _plain_torch(
    piece: Slice,
    seed: int,
    build: Callable[[], Any],
    train: Callable[[Any, Any, Any, Any, Any], None],
    normalize: bool,
    channels_last: bool = False,
) -> Result:
    """Time data loading, ``train(net, x, y, x_test, y_test)`` (model built inside the
    clock) and test accuracy for a plain PyTorch entry."""
    import torch

    started = time.perf_counter()
    x, y, x_test, y_test = _torch_data(piece, normalize, channels_last)
    loaded = time.perf_counter()
    torch.manual_seed(seed)
    net = build()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    train(net, x, y, x_test, y_test)
    trained = time.perf_counter()
    accuracy = _torch_accuracy(net, x_test, y_test)
    return Result(loaded - started, trained - loaded, time.perf_counter() - trained, accuracy)


def reference(piece: Slice, seed: int) -> Result:
    """The public one-epoch 99% recipe, written plainly: in-order batches of 256 (the net
    and loop of benchmarks/reference_fast.py, the standalone script bench_process runs)."""
    from reference_fast import Net
    from reference_fast import train as train_epoch

    def train(net: Any, x: Any, y: Any, *_: Any) -> None:
        train_epoch(net, x, y)

    return _plain_torch(piece, seed, Net, train, normalize=True, channels_last=True)


def cnn_pytorch(piece: Slice, seed: int) -> Result:
    """The course CNN in plain PyTorch: Keras's "same" padding, Adam lr 0.001 (Keras's
    epsilon), batch 100, 5 epochs, shuffled, test accuracy after each epoch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 2, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 1000), nn.ReLU(), nn.Linear(1000, 10),
        )  # fmt: skip

    def train(net: nn.Module, x: Any, y: Any, x_test: Any, y_test: Any) -> None:
        batch, epochs = 100, 1 if piece.warmup else 5
        optimizer = torch.optim.Adam(net.parameters(), lr=0.001, eps=1e-7)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            _torch_accuracy(net, x_test, y_test)  # the per-epoch validation

    return _plain_torch(piece, seed, build, train, normalize=False)


def examples_pytorch(piece: Slice, seed: int) -> Result:
    """pytorch/examples mnist/main.py with its defaults, for one epoch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.conv1(x))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(self.dropout1(x), 1)
            x = self.dropout2(F.relu(self.fc1(x)))
            return F.log_softmax(self.fc2(x), dim=1)

    def train(net: nn.Module, x: Any, y: Any, *_: Any) -> None:
        batch = 64
        optimizer = torch.optim.Adadelta(net.parameters(), lr=1.0)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = F.nll_loss(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()  # once per epoch

    return _plain_torch(piece, seed, Net, train, normalize=True)


# --------------------------------------------------------------------------- mnistlab recipes


OVERRIDES: dict[str, str] = {}  # --set KEY=VALUE, for the mnistlab recipe entries


def _recipe(name: str, engine: str, piece: Slice, seed: int) -> Result:
    """Run mnistlab recipe ``name`` as the runner does (without writing a run directory):
    data-load seconds are those spent in ``Context.data``, the rest is training."""
    import numpy as np

    from mnistlab.datasets import load_data
    from mnistlab.experiments.context import Context
    from mnistlab.experiments.recipes import get_recipe, resolve_config

    class TimedContext(Context):
        data_s = 0.0

        def data(self, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            out = super().data(*args, **kwargs)
            self.data_s += time.perf_counter() - began
            return out

    recipe = get_recipe(name)
    config = {**resolve_config(recipe, OVERRIDES), "seed": seed, "limit": piece.n_train}
    if piece.warmup:
        config["epochs"] = 1
    ctx = TimedContext(config=config, engine=engine, device="cpu", verbose=0)
    started = time.perf_counter()
    trained = recipe.train(ctx)
    train_s = time.perf_counter() - started - ctx.data_s
    began = time.perf_counter()  # the test images as the model takes them (data loading)
    _, (x_test, y_test) = load_data("mnist")
    x_test = (np.asarray(x_test[: piece.n_test], dtype=np.float32) / 255)[:, None]
    y_test = np.asarray(y_test[: piece.n_test])
    data_s = ctx.data_s + time.perf_counter() - began
    began = time.perf_counter()
    accuracy = float(np.mean(trained.model.predict(x_test).argmax(1) == y_test))
    return Result(data_s, train_s, time.perf_counter() - began, accuracy)


ENTRIES: dict[str, tuple[str, Callable[[Slice, int], Result]]] = {
    "reference": ("public 99% net, PyTorch", reference),
    "fast-torch": ("mnistlab fast, torch", lambda p, s: _recipe("fast", "torch", p, s)),
    "fast-numpy": ("mnistlab fast, numpy", lambda p, s: _recipe("fast", "numpy", p, s)),
    "cnn-torch": ("course CNN 5 ep, torch",
                  lambda p, s: _recipe("keras-cnn", "torch", p, s)),
    "cnn-numpy": ("course CNN 5 ep, numpy",
                  lambda p, s: _recipe("keras-cnn", "numpy", p, s)),
    "cnn-pytorch": ("course CNN 5 ep, PyTorch", cnn_pytorch),
    "examples-pytorch": ("pytorch/examples, 1 ep", examples_pytorch),
}  # fmt: skip


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per entry (0, 1, ...)")
    p.add_argument("--long-seeds", type=int, default=None,
                   help=f"seeds for the long entries ({', '.join(LONG)}); default --seeds")
    p.add_argument("--only", help=f"comma list of entries: {', '.join(ENTRIES)}")
    p.add_argument("--skip", default="", help="comma list of entries to leave out")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 6,000 training and 2,000 test images (not comparable)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a recipe setting of the mnistlab entries (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    p.add_argument("--no-wait", action="store_true", help="do not run wait-quiet first")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # child process: one entry...
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # ...one seed
    return p.parse_args(argv)


def run_worker(name: str, seed: int, quick: bool) -> dict[str, Any]:
    """One seed of one entry in this process, after an untimed warm-up on a slice."""
    run = ENTRIES[name][1]
    run(Slice(1024, 500, warmup=True), seed)
    result = asdict(run(Slice(6000, 2000) if quick else Slice(), seed))
    import torch

    return {**result, "torch_threads": torch.get_num_threads()}


def wait_quiet(enabled: bool) -> str:
    """Run ../shared/tools/wait-quiet (when there is one): "yes", "no" or "-"."""
    if not enabled or not WAIT_QUIET.exists():
        return "-"
    done = subprocess.run([sys.executable, str(WAIT_QUIET), "--timeout", "300"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return "yes" if done.returncode == 0 else "no"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mnistlab.cli.train import overrides_from
    from mnistlab.errors import MnistlabError

    try:  # parsed as `mnistlab train --set` parses them (only --set: --seed is ours)
        OVERRIDES.update(overrides_from(argparse.Namespace(set=args.set)))
    except MnistlabError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.seed, args.quick)))
        return 0
    names = [n.strip() for n in (args.only or ",".join(ENTRIES)).split(",") if n.strip()]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in [*names, *skip] if n not in ENTRIES]
    if unknown:
        print(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}", file=sys.stderr)
        return 2
    names = [n for n in names if n not in skip]
    print(
        f"cores: os.cpu_count()={os.cpu_count()}, seeds={args.seeds}"
        + (f" (long entries: {args.long_seeds})" if args.long_seeds is not None else "")
        + (", QUICK (6,000 train / 2,000 test images)" if args.quick else ""),
        flush=True,
    )
    # Seed by seed, every entry in turn: a machine that slows down for a while then
    # slows all entries alike, and the ratios to the reference stay fair.
    runs: dict[str, dict[str, Any]] = {name: {"results": [], "quiet": []} for name in names}
    long_seeds = args.seeds if args.long_seeds is None else args.long_seeds
    for seed in range(max(args.seeds, long_seeds)):
        for name in names:
            if seed >= (long_seeds if name in LONG else args.seeds):
                continue
            quiet = wait_quiet(not args.no_wait)
            cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed),
                   *(f"--set={item}" for item in args.set)]
            done = subprocess.run(
                [*cmd, *(["--quick"] if args.quick else [])],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                return done.returncode
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name]["results"].append(result)
            runs[name]["quiet"].append(quiet)
            print(f"seed {seed} {name}: {result['train_s']:.2f} s training, test accuracy "
                  f"{result['accuracy']:.4f} (quiet: {quiet})", flush=True)  # fmt: skip
    report(runs, args)
    return 0


def _median(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _quiet(marks: list[str]) -> str:
    """ "yes" when every run found the machine quiet, else how many did ("1/3")."""
    if all(m == "-" for m in marks):
        return "-"
    quiet = sum(m == "yes" for m in marks)
    return "yes" if quiet == len(marks) else f"{quiet}/{len(marks)}"


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    from common import print_table

    threads = runs[next(iter(runs))]["results"][0]["torch_threads"] if runs else "?"
    base = _median(runs["reference"]["results"], "train_s") if "reference" in runs else None
    rows = []
    for name, run in runs.items():
        results = run["results"]
        train_s = _median(results, "train_s")
        accuracies = [r["accuracy"] for r in results]
        ratio = f"{train_s / base:.2f}" if base else "-"
        goal = GOALS.get(name)
        if goal is not None and base:
            ratio += f" ({'<=' if train_s / base <= goal else '>'} {goal})"
        rows.append((
            name, ENTRIES[name][0], f"{train_s:.2f}",
            " ".join(f"{a:.4f}" for a in accuracies), f"{min(accuracies):.4f}",
            f"{_median(results, 'data_s'):.2f}", f"{_median(results, 'eval_s'):.2f}",
            ratio, _quiet(run["quiet"]),
        ))  # fmt: skip
    title = (f"Time to accuracy on MNIST, {os.cpu_count()} cores, torch threads {threads}, "
             f"{args.seeds} seed(s)"
             + (f" ({args.long_seeds} for the long entries)" if args.long_seeds is not None else "")
             + (" - QUICK" if args.quick else "")
             + "".join(f", {item}" for item in args.set))  # fmt: skip
    columns = ("entry", "what", "train s", "test acc per seed", "min acc", "data s", "eval s",
               "x reference", "quiet")  # fmt: skip
    print_table(title, rows, columns)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # for `common`
    sys.exit(main())
