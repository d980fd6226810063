"""The public "99% in one epoch" MNIST recipe as a plain PyTorch script, whole process.

    python benchmarks/reference_fast.py [MNIST_DIR] [--seed 0] [--limit N] [--json]

What a user of the public recipe runs: it reads the four official IDX files
(train-images-idx3-ubyte.gz, ...) from MNIST_DIR itself (default:
$MNISTLAB_HOME/mnist, else ~/.mnistlab/mnist, where mnistlab keeps its downloads),
standardizes the pixels, trains the net for one epoch and prints its test accuracy. The
net and training are those of the ``reference`` entry of benchmarks/time_to_accuracy.py:
conv 1->24 5x5 - pool - relu - conv 24->32 3x3 - pool - relu - fc 800->256 - relu -
fc 256->10, in-order batches of 256, Adam lr 0.01 betas (0.7, 0.9), one-cycle schedule,
channels-last tensors.

It prints the seconds of each phase (imports, data, training, evaluation) on its last
line as JSON when --json is given; benchmarks/bench_process.py runs it that way. Phase
times are wall-clock stamps (time.time()), so the parent can add the start-up before
the first line of this file ran.
"""

import time

STAMPS = {"script": time.time()}  # before the imports: Python's own start-up is before this

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

STAMPS["imports"] = time.time()
MEAN, STD = 0.1307, 0.3081


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzip-compressed): images (N, 28, 28) or labels (N,), uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic == 2051:
        n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    if magic == 2049:
        return np.frombuffer(data, np.uint8, offset=8)
    raise ValueError(f"{path}: not an IDX file of images or labels (magic {magic})")


def load(root: Path, limit: int | None) -> tuple[torch.Tensor, ...]:
    def images(name: str) -> torch.Tensor:
        x = torch.from_numpy(read_idx(root / name)[:limit].astype(np.float32))
        x = x.div_(255).sub_(MEAN).div_(STD).unsqueeze(1)
        return x.contiguous(memory_format=torch.channels_last)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(root / name)[:limit].astype(np.int64))

    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))  # fmt: skip


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 24, 5)
        self.conv2 = nn.Conv2d(24, 32, 3)
        self.fc1 = nn.Linear(800, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 24, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # (N, 32, 5, 5)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> None:
    steps = math.ceil(len(x) / batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.7, 0.9))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=steps, cycle_momentum=False
    )
    for i in range(steps):
        xb, yb = x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
        loss = F.cross_entropy(net(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    net.eval()
    with torch.inference_mode():
        predicted = torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((predicted == y).float().mean())


def main() -> int:
    home = Path(os.environ.get("MNISTLAB_HOME") or Path.home() / ".mnistlab")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mnist_dir", nargs="?", type=Path, default=home / "mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="first N training and test images (quick runs)")
    p.add_argument("--json", action="store_true", help="phase stamps as JSON, last line")
    args = p.parse_args()

    STAMPS["start"] = time.time()
    x, y, x_test, y_test = load(args.mnist_dir, args.limit)
    STAMPS["data"] = time.time()
    torch.manual_seed(args.seed)
    net = Net().to(memory_format=torch.channels_last)
    train(net, x, y)
    STAMPS["training"] = time.time()
    acc = accuracy(net, x_test, y_test)
    STAMPS["evaluation"] = time.time()
    print(f"test accuracy {acc:.4f} ({len(y_test):,} images), training "
          f"{STAMPS['training'] - STAMPS['data']:.2f} s")  # fmt: skip
    if args.json:
        print(json.dumps({"stamps": STAMPS, "accuracy": acc}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
