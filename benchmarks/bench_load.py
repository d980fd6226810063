"""How fast MNIST loads: mnistlab's warm cache vs decoding the official gzip files directly.

    python benchmarks/bench_load.py [--repeat 7]

Reference: what every notebook does, gunzip the four IDX files and wrap them in arrays
(measured here in the same run). Goal: warm load of all four arrays <= 50 ms.

Every warm load is verified (see mnistlab.datasets.api): the "stamp checked" rows are what a
load costs when the files are unchanged since their last full check; the "every byte
hashed" rows are what the first load after a change costs, and what `mnistlab data verify`
does: the .npy header against the registry plus the CRC-32 of every byte.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, print_table
from mnistlab.datasets import fetch_all, get_dataset, load_data, load_mnist
from mnistlab.datasets.api import decoded_path, open_cached
from mnistlab.datasets.registry import SPLIT_KEYS

TEXTBOOK = [
    ("train_images", "unit"),
    ("train_labels", "raw"),
    ("test_images", "unit"),
    ("test_labels", "raw"),
]


def decode_gzip_directly(paths: list[Path]) -> list[np.ndarray]:
    """The reference: read each .gz and decode its IDX payload with NumPy."""
    arrays = []
    for path in paths:
        data = gzip.decompress(path.read_bytes())
        offset = 16 if "images" in path.name else 8
        arrays.append(np.frombuffer(data, np.uint8, offset=offset))
    return arrays


def touch(arrays) -> None:
    """Read one value from every 4 KiB page, so lazily mapped pages are really loaded."""
    for array in arrays:
        flat = np.asarray(array).reshape(-1)
        int(flat[:: max(1, 4096 // flat.itemsize)].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    paths = [verified.path for verified in fetch_all("mnist", progress=False).values()]
    load_data(), load_mnist()  # make sure the decoded cache exists

    def ours_raw():
        (a, b), (c, d) = load_data()
        touch([a, b, c, d])

    def ours_textbook():
        (a, b), (c, d) = load_mnist()
        touch([a, b, c, d])

    files = get_dataset("mnist").files

    def hashed(which):
        def run():
            arrays = []
            for key, variant in which:
                array, problem = open_cached(
                    decoded_path("mnist", key, variant), files[key], variant, full=True
                )
                assert problem is None and array is not None, problem
                arrays.append(array)
            touch(arrays)

        return run

    reference = median_seconds(lambda: decode_gzip_directly(paths), args.repeat)
    rows = []
    for name, fn in [
        ("load_data() warm, stamp checked: 4 uint8 arrays", ours_raw),
        ("load_data() warm, every byte hashed", hashed([(k, "raw") for k in SPLIT_KEYS])),
        ("load_mnist() warm, stamp checked: float32 [0,1] + labels", ours_textbook),
        ("load_mnist() warm, every byte hashed", hashed(TEXTBOOK)),
    ]:
        seconds = median_seconds(fn, args.repeat)
        rows.append(
            (name, f"{seconds * 1000:.1f}", f"{reference * 1000:.1f}", f"{seconds / reference:.3f}")
        )
    print_table(
        f"MNIST load time, median of {args.repeat} (goal: warm load <= 50 ms)",
        rows,
        ("what", "ours ms", "gunzip+decode ms", "ours / reference"),
    )


if __name__ == "__main__":
    main()
