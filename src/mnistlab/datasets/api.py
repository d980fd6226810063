"""Loading datasets as arrays, with the conventions users already know.

The first load decodes the verified IDX files and stores each array as ``.npy`` in the cache;
later loads memory-map those files, which takes milliseconds. The float32 [0, 1] images the
textbook loader returns are cached the same way: on these machines touching freshly allocated
memory costs far more than reading a memory-mapped file, so converting on every load would
take ~0.4 s where the mapped copy takes ~0.02 s. Arrays come back copy-on-write: writable, and
writes never reach the cache.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.atomic import atomic_writer
from mnistlab.datasets.idx import check_images, check_labels, parse_idx
from mnistlab.datasets.registry import SPLIT_KEYS, get_dataset
from mnistlab.datasets.sources import dataset_cache_dir, fetch

Split = tuple[np.ndarray, np.ndarray]


def decoded_path(dataset_name: str, key: str, variant: str = "raw") -> Path:
    """Where a decoded array of one file is cached (named by its checksum)."""
    spec = get_dataset(dataset_name).files[key]
    return dataset_cache_dir(dataset_name) / "decoded" / f"{key}-{variant}-{spec.md5[:12]}.npy"


def load_array(dataset_name: str, key: str) -> np.ndarray:
    """One decoded array (images ``(N, 28, 28)`` or labels ``(N,)``, uint8), cached as .npy."""
    path = decoded_path(dataset_name, key)
    cached = _load_cached(path)
    if cached is not None:
        return cached
    verified = fetch(dataset_name, key)
    spec = get_dataset(dataset_name).files[key]
    array = parse_idx(verified.content, str(verified.path))
    if spec.kind == "images":
        check_images(array, str(verified.path))
    else:
        check_labels(array, str(verified.path))
    _store(path, array)
    return array


def load_unit_images(dataset_name: str, key: str) -> np.ndarray:
    """Images as float32 in [0, 1], shape (N, 28, 28), cached beside the raw array."""
    path = decoded_path(dataset_name, key, variant="unit")
    cached = _load_cached(path)
    if cached is not None:
        return cached
    array = scale_to_unit(load_array(dataset_name, key))
    _store(path, array)
    return array


def _load_cached(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError):
        # Unreadable cache entry (e.g. a disk fault): drop it so it is decoded again.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None


def _store(path: Path, array: np.ndarray) -> None:
    with atomic_writer(path) as handle:
        np.save(handle, array, allow_pickle=False)


def load_data(dataset: str = "mnist") -> tuple[Split, Split]:
    """Keras's convention: ``(x_train, y_train), (x_test, y_test)``, uint8, images (N, 28, 28)."""
    train_x, train_y, test_x, test_y = (load_array(dataset, key) for key in SPLIT_KEYS)
    return (train_x, train_y), (test_x, test_y)


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    dataset: str = "mnist",
) -> tuple[Split, Split]:
    """The textbook's convention ("Deep Learning from Scratch").

    Returns ``(x_train, t_train), (x_test, t_test)``. ``flatten`` gives (N, 784), otherwise
    (N, 1, 28, 28); ``normalize`` gives float32 in [0, 1], otherwise uint8 is kept;
    ``one_hot_label`` gives float32 one-hot rows instead of integer labels.
    """
    (x_train, t_train), (x_test, t_test) = load_data(dataset)
    if normalize:
        x_train = load_unit_images(dataset, "train_images")
        x_test = load_unit_images(dataset, "test_images")

    def images(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *x.shape[1:])

    def labels(t: np.ndarray) -> np.ndarray:
        return one_hot(t) if one_hot_label else t

    return (images(x_train), labels(t_train)), (images(x_test), labels(t_test))


def scale_to_unit(x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Pixels 0..255 -> [0, 1], computed in ``dtype`` (float32 by default)."""
    return np.multiply(x, np.dtype(dtype).type(1 / 255), dtype=dtype)


def scale_to_range(x: np.ndarray, low: float = 0.01, high: float = 1.0,
                   dtype: Any = np.float32) -> np.ndarray:
    """Pixels 0..255 -> [low, high] in ``dtype``; the default is the [0.01, 1.0] some courses
    use so that no input is exactly zero."""
    kind = np.dtype(dtype).type
    scaled = np.multiply(x, kind((high - low) / 255), dtype=dtype)
    scaled += kind(low)
    return scaled


PIXEL_SCALES = ("unit", "raw", "0.01-1")  # the model spec's preprocess["scale"]


def scale_pixels(images: np.ndarray, scale: str, dtype: Any = np.float32) -> np.ndarray:
    """Pixels 0..255 as a model's inputs, in ``dtype``, by the spec's ``preprocess["scale"]``:
    "unit" [0, 1], "raw" 0..255 unchanged, "0.01-1" the course's [0.01, 1]. The one place
    where that setting is interpreted (training data, recognition and evaluation use it)."""
    if scale == "unit":
        return scale_to_unit(images, dtype)
    if scale == "0.01-1":
        return scale_to_range(images, dtype=dtype)
    if scale == "raw":
        return np.asarray(images).astype(dtype)
    raise ValueError(f"unknown pixel scale {scale!r}; choose one of {PIXEL_SCALES}")


def one_hot(
    labels: np.ndarray, num_classes: int = 10, off: float = 0.0, on: float = 1.0,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Integer labels -> float32 rows of ``off`` with ``on`` at the label (0.01/0.99 for the
    sigmoid-output course networks)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    out = np.full((labels.size, num_classes), off, dtype=dtype)
    out[np.arange(labels.size), labels.reshape(-1)] = on
    return out


@dataclass(frozen=True)
class FileInfo:
    """What `mnistlab data info` reports about one file."""

    key: str
    filename: str
    origin: str
    path: str
    md5: str
    count: int
    class_counts: list[int] | None


def dataset_info(dataset: str = "mnist") -> list[FileInfo]:
    """Source, checksum, count and (for labels) per-class counts of each file of a dataset."""
    spec = get_dataset(dataset)
    infos = []
    for key, data_file in spec.files.items():
        verified = fetch(dataset, key)
        array = load_array(dataset, key)
        counts = (
            np.bincount(array, minlength=len(spec.class_names)).tolist()
            if data_file.kind == "labels"
            else None
        )
        infos.append(
            FileInfo(
                key,
                data_file.filename,
                verified.origin,
                str(verified.path),
                data_file.md5,
                len(array),
                counts,
            )
        )
    return infos
