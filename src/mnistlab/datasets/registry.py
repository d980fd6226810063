"""The datasets mnistlab knows: official file names, content checksums, and public mirrors.

Checksums are MD5s of the *decompressed* IDX content: mirrors (and Debian) recompress the
files, so only the content identifies them. Each file's decompressed size follows from its
count (uint8 data, 28x28 images), so no download may inflate beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: its official name and the MD5 of its decompressed bytes."""

    filename: str
    md5: str
    kind: str  # "images" or "labels"
    count: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The decoded array's shape: ``(count, 28, 28)`` images or ``(count,)`` labels."""
        return (self.count, *IMAGE_SHAPE) if self.kind == "images" else (self.count,)

    @property
    def size(self) -> int:
        """Bytes of the decompressed IDX file: header (4 + 4 per dimension) and uint8 data."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)


@dataclass(frozen=True)
class Dataset:
    """A dataset: its four files, the mirrors it is downloaded from and its class names."""

    name: str
    files: dict[str, DataFile]
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    citation: str


SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        files={
            "train_images": DataFile(
                "train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb", "images", 60000
            ),
            "train_labels": DataFile(
                "train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624", "labels", 60000
            ),
            "test_images": DataFile(
                "t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea", "images", 10000
            ),
            "test_labels": DataFile(
                "t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637", "labels", 10000
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            "https://storage.googleapis.com/cvdf-datasets/mnist",
        ),
        class_names=tuple(str(digit) for digit in range(10)),
        citation="Y. LeCun, C. Cortes, C. J. C. Burges, The MNIST database of handwritten digits.",
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        files={
            "train_images": DataFile(
                "train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a", "images", 60000
            ),
            "train_labels": DataFile(
                "train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9", "labels", 60000
            ),
            "test_images": DataFile(
                "t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a", "images", 10000
            ),
            "test_labels": DataFile(
                "t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965", "labels", 10000
            ),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        citation="H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST, arXiv:1708.07747, 2017.",
    ),
}


def get_dataset(name: str) -> Dataset:
    """Look a dataset up by name, with a clear error listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}") from None
