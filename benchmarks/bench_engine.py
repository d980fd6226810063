"""NumPy engine vs PyTorch CPU: same models, data, batches, initial weights and threads.

    python benchmarks/bench_engine.py                 # full MNIST, 1 epoch each (minutes)
    python benchmarks/bench_engine.py --quick         # a small subset (seconds)
    python benchmarks/bench_engine.py --synthetic     # random data with MNIST's shapes

Rows: one training epoch of the MLP 784-1000relu-10 and of the CNN (Adam, batch 100), and
inference on the 10,000 test images in one call (``predict(x_test)`` vs
``net(x_test).softmax(1)``: class probabilities from both).
Goals (numpy time / torch time): MLP epoch <= 1.0, CNN epoch <= 2.0, inference <= 1.0.

Each engine runs in its own process (idle BLAS/OpenMP threads of one library would spin
and steal cores from the other), and the two take turns: ``--chunk`` training steps of
one, then of the other (who goes first alternates), and one inference call each, in turn.
An engine's epoch time is the sum of its turns, its inference time the median of its
calls. On a shared machine whose speed drifts by tens of percent from one minute to the
next, this pairs every piece of one engine's work with the other's done moments apart.
``--rounds N`` repeats all of it with fresh processes (the engine started first alternates)
and reports medians. On a virtual machine, the share of CPU time its host took back
("steal", from /proc/stat) during each round is printed too: it says how noisy a run was.
So is what it costs here to wake a sleeping thread and hear back from it: the NumPy
engine's threads (its pool's and OpenBLAS's) sleep between tasks, several times a training
step, where PyTorch's OpenMP threads spin; on a virtual machine whose idle CPUs halt, each
wake-up takes a trip through the host.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

# mnistlab before NumPy, as in a user's script: importing it tunes OpenBLAS's threads
from mnistlab.cli.args import positive_int

GOALS = {"mlp epoch": 1.0, "cnn epoch": 2.0, "mlp inference": 1.0, "cnn inference": 1.0}
SETTLE_S = 0.02  # pause between turns: lets the last engine's spinning threads go to sleep
# A round in which the host took back this share of the CPU time or more is noisy: the NumPy
# engine's ratio then reads high (its threads sleep between tasks and every wake-up waits on
# the host; PyTorch's spin). Measured on one day: 18 MLP rounds below 1.5% had a median ratio
# of 0.94 (17 of them <= 1.0), 12 rounds at 1.5-10% one of 1.07.
NOISY_STEAL = 0.015


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small subset: 2,000 train, 1,000 test")
    p.add_argument("--synthetic", action="store_true", help="random data, no dataset needed")
    p.add_argument("--train", type=int, default=None, help="training images (default all)")
    p.add_argument("--test", type=int, default=None, help="test images (default 10,000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="for numpy and torch")
    p.add_argument("--chunk", type=positive_int, default=20,
                   help="training steps per turn (default 20)")
    p.add_argument("--repeat", type=positive_int, default=7,
                   help="inference calls per engine, in turn; the median counts (default 7)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="fresh pairs of processes per model; medians count (default 1)")
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
    from mnistlab import Sequential
    from mnistlab.nn import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

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


class Turn:
    """The child's side of taking turns: wait for the parent's word, time the work, report.

    The clock runs only between ``begin`` and ``pause``/``end``; while the other engine
    has its turn this process sits blocked on its stdin."""

    def __init__(self) -> None:
        self.started = 0.0

    @staticmethod
    def wait() -> str:
        return sys.stdin.readline().strip()

    @staticmethod
    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def begin(self) -> None:
        if self.wait() != "go":
            raise SystemExit("bench_engine child: expected 'go'")
        self.started = time.perf_counter()

    def end(self) -> None:
        self.say(repr(time.perf_counter() - self.started))

    def pause(self) -> None:
        self.end()
        self.begin()


class PauseEvery:
    """A fit() callback: hand the turn over after every ``chunk`` steps but the last."""

    def __init__(self, turn: Turn, chunk: int, steps: int) -> None:
        self.turn, self.chunk, self.steps = turn, chunk, steps

    def on_batch_end(self, step: int, logs: dict[str, float]) -> None:
        if step % self.chunk == 0 and step < self.steps:
            self.turn.pause()


def numpy_epoch(model: Any, x: Any, t: Any, args: argparse.Namespace, turn: Turn) -> None:
    """One epoch of the real user path, ``model.fit``, paused every ``args.chunk`` steps."""
    n = args.batch_size
    for start in range(0, 3 * n, n):  # warm-up, not timed
        model.train_step(x[start : start + n], t[start : start + n])
    steps = math.ceil(len(x) / n)
    turn.say(f"ready {steps}")
    turn.begin()
    model.fit(x, t, epochs=1, batch_size=args.batch_size, seed=0, verbose=0,
              callbacks=[PauseEvery(turn, args.chunk, steps)])
    turn.end()


def torch_epoch(net: Any, x: Any, t: Any, args: argparse.Namespace, turn: Turn) -> None:
    """One epoch of Adam + cross-entropy in torch, in the batch order our fit uses."""
    import torch

    from mnistlab.training import epoch_order

    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    idx = torch.from_numpy(epoch_order(len(x), 0, True, 0))
    net.train()

    def step(i: Any) -> None:
        opt.zero_grad()
        loss_fn(net(xt.index_select(0, i)), tt.index_select(0, i)).backward()
        opt.step()

    for start in range(0, 3 * args.batch_size, args.batch_size):  # warm-up, not timed
        step(idx[start : start + args.batch_size])
    steps = math.ceil(len(x) / args.batch_size)
    turn.say(f"ready {steps}")
    turn.begin()
    for k, start in enumerate(range(0, len(x), args.batch_size), start=1):
        step(idx[start : start + args.batch_size])
        if k % args.chunk == 0 and k < steps:
            turn.pause()
    turn.end()


def run_engine(engine: str, kind: str, args: argparse.Namespace) -> None:
    """The child: set up one engine and model, then train and infer when told to."""
    import numpy as np

    x_train, t_train, x_test, t_test = load(args)
    model, turn = build(kind), Turn()
    if engine == "numpy":
        numpy_epoch(model, x_train, t_train, args, turn)

        def predict() -> Any:
            return model.predict(x_test)
    else:
        import torch

        torch.set_num_threads(args.threads)
        net = to_torch(model)  # the same initial weights
        torch_epoch(net, x_train, t_train, args, turn)
        net.eval()
        xt = torch.from_numpy(x_test)

        def predict() -> Any:  # probabilities, as predict() gives: the same work
            with torch.inference_mode():
                return net(xt).softmax(1).numpy()
    while turn.wait() in ("warm-up", "infer"):  # a warm-up call first, on its turn too
        began = time.perf_counter()
        predict()
        turn.say(repr(time.perf_counter() - began))
    accuracy = float(np.mean(predict().argmax(1) == t_test))
    turn.say(json.dumps({"test_accuracy": accuracy, "n_train": len(x_train),
                         "n_test": len(x_test)}))


class Child:
    """The parent's handle on one engine's process."""

    def __init__(self, engine: str, kind: str, argv: list[str]) -> None:
        self.engine = engine
        cmd = [sys.executable, __file__, *argv, "--engine", engine, "--only", kind]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def tell(self, word: str) -> None:
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def hear(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.engine} process ended early "
                             f"(exit {self.proc.wait()}); its errors are above")
        return line.strip()

    def turn(self, word: str) -> float:
        self.tell(word)
        seconds = float(self.hear())
        time.sleep(SETTLE_S)
        return seconds


def cpu_steal() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine so far, or None where not reported."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: counted in user]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def noisy_rounds(steal: list[float]) -> list[int]:
    """The rounds (from 1) whose steal share reached NOISY_STEAL."""
    return [k for k, share in enumerate(steal, start=1) if share >= NOISY_STEAL]


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Fraction of the machine's CPU time its host took back between two ``cpu_steal()``."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def wake_up_s(asleep_s: float, repeat: int = 40) -> float:
    """Median seconds to wake a thread that has slept ``asleep_s`` (while this one computes)
    and to hear back from it: what one hand-off between two threads costs on this machine."""
    go, back = threading.Event(), threading.Event()
    times: list[float] = []

    def answer() -> None:
        for _ in range(repeat):
            go.wait()
            go.clear()
            back.set()

    helper = threading.Thread(target=answer, daemon=True)
    helper.start()
    for _ in range(repeat):
        until = time.perf_counter() + asleep_s
        while time.perf_counter() < until:  # busy, as the engine's caller is meanwhile
            pass
        began = time.perf_counter()
        go.set()
        back.wait()
        back.clear()
        times.append(time.perf_counter() - began)
    helper.join()
    return statistics.median(times)


def compare(kind: str, argv: list[str], args: argparse.Namespace,
            numpy_first: bool = True) -> list[dict[str, Any]]:
    """Both engines on one model, taking turns; rows for the epoch and for inference.

    ``numpy_first``: which process is started, and has the first turn; rounds alternate
    it, so that neither engine always gets the first process's memory or the first turn."""
    engines = ("numpy", "torch") if numpy_first else ("torch", "numpy")
    children = [Child(engine, kind, argv) for engine in engines]
    started = cpu_steal()
    try:
        steps = {child.hear() for child in children}  # "ready <steps in the epoch>"
        if len(steps) != 1:
            raise SystemExit(f"the engines disagree on the epoch: {sorted(steps)}")
        turns = math.ceil(int(steps.pop().split()[1]) / args.chunk)
        epoch = take_turns(children, turns, "go")
        take_turns(children, 1, "warm-up")
        infer = take_turns(children, args.repeat, "infer")
        finals = {}
        for child in children:
            child.tell("stop")
            finals[child.engine] = json.loads(child.hear())
    finally:
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait()
    steal = steal_share(started, cpu_steal())
    rows = [{"name": f"{kind} epoch", **{f"{e}_s": sum(t) for e, t in epoch.items()},
             **{f"{e}_turns_s": t for e, t in epoch.items()}, "steal": steal},
            {"name": f"{kind} inference",
             **{f"{e}_s": statistics.median(t) for e, t in infer.items()},
             **{f"{e}_calls_s": t for e, t in infer.items()},
             "accuracy_numpy": finals["numpy"]["test_accuracy"],
             "accuracy_torch": finals["torch"]["test_accuracy"],
             "n_train": finals["numpy"]["n_train"], "n_test": finals["numpy"]["n_test"]}]
    return rows


def take_turns(children: list[Child], turns: int, word: str) -> dict[str, list[float]]:
    """``turns`` rounds of ``word`` to each child, the first one alternating."""
    times: dict[str, list[float]] = {child.engine: [] for child in children}
    for k in range(turns):
        for child in children if k % 2 == 0 else children[::-1]:
            times[child.engine].append(child.turn(word))
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy and torch load their BLAS
    if args.engine:  # child process: one engine, one model, taking turns
        run_engine(args.engine, args.only, args)
        return 0
    argv = sys.argv[1:] if argv is None else argv
    wake_up = {"right_after_s": wake_up_s(0.0), "after_3ms_asleep_s": wake_up_s(0.003)}
    results = []
    for kind in args.only.split(","):
        rounds = [compare(kind, argv, args, numpy_first=r % 2 == 0) for r in range(args.rounds)]
        results += [combine([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    report(results, args, wake_up)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "results": results, "thread_wake_up": wake_up},
                      handle, indent=2)
    return 0


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same row of each round: medians of times and of ratios.

    Each round's ratio pairs two processes that ran side by side; the median over rounds
    keeps one unlucky pair of processes (memory placement, a noisy minute) from deciding."""
    ratios = [r["numpy_s"] / r["torch_s"] for r in rounds]
    combined = {**rounds[0], "ratio": statistics.median(ratios), "round_ratios": ratios}
    if "steal" in rounds[0]:
        combined["round_steal"] = [r["steal"] for r in rounds]
    for engine in ("numpy", "torch"):
        combined[f"{engine}_rounds_s"] = [r[f"{engine}_s"] for r in rounds]
        combined[f"{engine}_s"] = statistics.median(combined[f"{engine}_rounds_s"])
    return combined  # the turns and calls kept are round 1's


def report(results: list[dict[str, Any]], args: argparse.Namespace,
           wake_up: dict[str, float]) -> None:
    data = "synthetic" if args.synthetic else "MNIST"
    sizes = next(row for row in results if "n_train" in row)
    print(f"{data}: epoch = {sizes['n_train']} training images, batch {args.batch_size}; "
          f"inference = {sizes['n_test']} test images in one call; {args.threads} threads; "
          f"NumPy engine vs PyTorch CPU in two processes taking turns ({args.chunk} steps "
          f"a turn; inference: median of {args.repeat} calls each); median of {args.rounds} "
          f"round(s) of fresh processes")
    print(f"{'benchmark':<20}{'numpy s':>10}{'torch s':>10}{'ratio':>8}{'goal':>7}  ok"
          f"{'  ratio in each round' if args.rounds > 1 else ''}")
    for row in results:
        ratio, goal = row["ratio"], GOALS[row["name"]]
        row.update(goal=goal, ok=ratio <= goal)
        each = "  " + " ".join(f"{r:.2f}" for r in row["round_ratios"]) if args.rounds > 1 else ""
        print(f"{row['name']:<20}{row['numpy_s']:>10.3f}{row['torch_s']:>10.3f}{ratio:>8.2f}"
              f"{goal:>7.1f}  {'yes' if row['ok'] else 'NO ':<3}{each}")
    for row in results:
        if "n_train" in row:
            for engine in ("numpy", "torch"):
                calls = " ".join(f"{t:.3f}" for t in row[f"{engine}_calls_s"])
                first = " (round 1)" if args.rounds > 1 else ""
                print(f"  {row['name']}, {engine} calls{first}: {calls}")
    for row in results:
        steal = row.get("round_steal")
        if steal and None not in steal:
            each = " ".join(f"{100 * v:.1f}%" for v in steal)
            print(f"  CPU time the host took back (steal) during {row['name'].split()[0]}, "
                  f"by round: {each}")
            if noisy := noisy_rounds(steal):
                which = "round" if len(noisy) == 1 else "rounds"
                advice = ("compare the engines by the others" if len(noisy) < len(steal)
                          else "rerun when the host is quieter")
                print(f"    noisy: {which} {', '.join(map(str, noisy))} (>= {NOISY_STEAL:.1%} "
                      f"taken back), where the NumPy engine's ratio reads high; {advice}")
    print(f"  waking a sleeping thread and hearing back from it, here: "
          f"{1e6 * wake_up['right_after_s']:.0f} us right after the last time, "
          f"{1e6 * wake_up['after_3ms_asleep_s']:.0f} us after 3 ms asleep")
    for row in results:
        if "accuracy_numpy" in row:
            print(f"  test accuracy after 1 epoch, {row['name'].split()[0]}: "
                  f"numpy {row['accuracy_numpy']:.4f}, torch {row['accuracy_torch']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
