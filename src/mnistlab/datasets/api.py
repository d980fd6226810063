"""Loading datasets as arrays, with the conventions users already know.

The first load decodes the verified IDX files and stores each array as ``.npy`` in the cache;
later loads memory-map those files, which takes milliseconds. The float32 [0, 1] images the
textbook loader returns are cached the same way: on these machines touching freshly allocated
memory costs far more than reading a memory-mapped file, so converting on every load would
take ~0.4 s where the mapped copy takes ~0.02 s. Arrays come back copy-on-write: writable, and
writes never reach the cache.

The decoded cache is verified, not trusted. Beside each ``.npy`` a record
(``<name>.npy.check.json``) holds the CRC-32 of the array's bytes, its shape and the MD5 of
the ``.gz`` it came from. Every load checks the ``.npy`` header against the registry (shape,
dtype, exact file size), for labels the value range, and the file's identity (device, inode,
size, mtime and ctime in ns) against the stamp in the record. The stamp is written only by
a full check: the CRC-32 of every byte (zlib's, ~6 GB/s here). So the first load after a
file is written, copied or touched in any way hashes it, and so does ``data info`` / ``data
verify`` always; loads of a file unchanged since its last full check cost a stat. Any
mismatch warns (`DecodedCacheWarning`) and decodes again from the ``.gz``, whose MD5 is
checked against the registry.

Why not hash on every load, or on the first load in each process: the 220 MB of float32
images `load_mnist` maps take 43-61 ms to map and hash here (the 55 MB of `load_data`:
13-20 ms; ``benchmarks/bench_load.py`` prints both), past the 50 ms warm-load goal, where
the stamp check keeps both within 4 ms, as fast as the unverified cache was. Any write to a file
(``write``, ``mmap``, ``truncate``) sets its ctime, which user code cannot set back, so an
unchanged stamp means unchanged bytes; the stamp is taken only of files whose ctime is
``STAMP_SETTLE_S`` older than the hash, as file times tick coarsely. What a stamp cannot see
(a disk returning different bytes without an I/O error) ``data verify`` finds.
CRC-32 is the right strength here: it catches every burst error up to 32 bits and any odd
number of flipped bits, and random damage passes with odds 2**-32; a cryptographic hash
would be 5x slower and buy nothing against deliberate tampering, since whoever can rewrite
the array can rewrite its record too.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.atomic import atomic_write_text, atomic_writer
from mnistlab.datasets.idx import check_images, check_labels, parse_idx
from mnistlab.datasets.registry import SPLIT_KEYS, DataFile, get_dataset
from mnistlab.datasets.sources import dataset_cache_dir, fetch

Split = tuple[np.ndarray, np.ndarray]

RECORD_SUFFIX = ".check.json"
_VARIANT_DTYPES = {"raw": np.dtype(np.uint8), "unit": np.dtype(np.float32)}
# A file changed less than this long before it was hashed is not stamped: file times tick
# coarsely (a few ms), so a write right after the hash could leave the same ctime.
STAMP_SETTLE_S = 2.0


class DecodedCacheWarning(UserWarning):
    """A decoded cache file failed its check and was decoded again from the verified .gz."""


def decoded_path(dataset_name: str, key: str, variant: str = "raw") -> Path:
    """Where a decoded array of one file is cached (named by its checksum)."""
    spec = get_dataset(dataset_name).files[key]
    return dataset_cache_dir(dataset_name) / "decoded" / f"{key}-{variant}-{spec.md5[:12]}.npy"


def array_digest(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order (what the decoded cache's record holds)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def load_array(dataset_name: str, key: str) -> np.ndarray:
    """One decoded array (images ``(N, 28, 28)`` or labels ``(N,)``, uint8), cached as .npy."""
    spec = get_dataset(dataset_name).files[key]
    path = decoded_path(dataset_name, key)
    cached = _load_cached(path, spec, "raw")
    if cached is not None:
        return cached
    return _decode(dataset_name, key, path)


def load_unit_images(dataset_name: str, key: str) -> np.ndarray:
    """Images as float32 in [0, 1], shape (N, 28, 28), cached beside the raw array."""
    spec = get_dataset(dataset_name).files[key]
    path = decoded_path(dataset_name, key, variant="unit")
    cached = _load_cached(path, spec, "unit")
    if cached is not None:
        return cached
    return _derive_unit(dataset_name, key, path)


def _decode(dataset_name: str, key: str, path: Path) -> np.ndarray:
    verified = fetch(dataset_name, key)
    spec = get_dataset(dataset_name).files[key]
    array = parse_idx(verified.content, str(verified.path))
    if spec.kind == "images":
        check_images(array, str(verified.path))
    else:
        check_labels(array, str(verified.path))
    _store(path, array, spec)
    return array


def _derive_unit(dataset_name: str, key: str, path: Path) -> np.ndarray:
    array = scale_to_unit(load_array(dataset_name, key))
    _store(path, array, get_dataset(dataset_name).files[key])
    return array


def _load_cached(path: Path, spec: DataFile, variant: str) -> np.ndarray | None:
    array, problem = open_cached(path, spec, variant)
    if problem:
        warnings.warn(
            f"mnistlab: decoded cache {path}: {problem}; decoding it again from the verified "
            f"{spec.filename}",
            DecodedCacheWarning,
            stacklevel=3,
        )
    return array


def open_cached(
    path: Path, spec: DataFile, variant: str, *, full: bool = False
) -> tuple[np.ndarray | None, str | None]:
    """Map a decoded cache file after checking it; ``(array, None)``, or ``(None, problem)``.

    ``(None, None)`` when there is no such file. ``full`` hashes every byte even when this
    process already verified the unchanged file.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    with handle:
        try:
            array, identity = _map_npy(handle, spec, variant)
        except (OSError, ValueError) as error:
            return None, f"unreadable or not the expected array ({error})"
        record = _read_record(path)
        if record is None:
            return None, "no digest record beside it (written by an older mnistlab, or removed)"
        if record.get("source_md5") != spec.md5 or record.get("variant") != variant:
            return None, (
                f"its record describes another array ({record.get('variant')} of MD5 "
                f"{record.get('source_md5')}, expected {variant} of {spec.md5})"
            )
        if list(record.get("shape", ())) != list(spec.shape):
            return None, f"its record gives shape {record.get('shape')}, expected {spec.shape}"
        if full or record.get("stamp") != list(identity):
            started = time.time()
            digest = array_digest(array)
            if digest != record["crc32"]:
                return None, (
                    f"content changed: CRC-32 {digest:#010x}, its record says "
                    f"{record['crc32']:#010x}"
                )
            if started - identity[-1] / 1e9 > STAMP_SETTLE_S:
                _write_record(path, record | {"stamp": list(identity)})
    if spec.kind == "labels" and variant == "raw" and array.size and int(array.max()) >= 10:
        return None, f"a label of {int(array.max())} (labels are 0..9)"
    return array, None


def _map_npy(handle, spec: DataFile, variant: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read the .npy header, check it against the registry, and map the data copy-on-write."""
    status = os.fstat(handle.fileno())
    identity = (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f".npy format version {version} is not one numpy.save writes here")
    expected_dtype = _VARIANT_DTYPES[variant]
    if tuple(shape) != spec.shape or dtype != expected_dtype or fortran:
        raise ValueError(
            f"holds {dtype} {tuple(shape)}{' (Fortran order)' if fortran else ''}, expected "
            f"{expected_dtype} {spec.shape}"
        )
    offset = handle.tell()
    nbytes = int(np.prod(spec.shape)) * expected_dtype.itemsize
    if status.st_size != offset + nbytes:
        raise ValueError(f"{status.st_size:,} bytes, expected {offset + nbytes:,}")
    array = np.memmap(handle, dtype=expected_dtype, mode="c", offset=offset, shape=spec.shape)
    return array, identity


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("crc32"), int):
        return None
    return record


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _store(path: Path, array: np.ndarray, spec: DataFile) -> None:
    variant = "unit" if array.dtype == np.float32 else "raw"
    record = {
        "format": "mnistlab.decoded",
        "version": 1,
        "crc32": array_digest(array),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "variant": variant,
        "source": spec.filename,
        "source_md5": spec.md5,
    }
    # The record first: a reader that finds the new .npy always finds its record.
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_record_path(path), json.dumps(record, indent=2, sort_keys=True))
    with atomic_writer(path) as handle:
        np.save(handle, array, allow_pickle=False)


def _write_record(path: Path, record: dict) -> None:
    with contextlib.suppress(OSError):  # a read-only cache is verified in full every time
        atomic_write_text(_record_path(path), json.dumps(record, indent=2, sort_keys=True))


@dataclass(frozen=True)
class CacheCheck:
    """What a full check of one decoded cache file found (see `verify_cache`)."""

    key: str
    variant: str
    path: str
    status: str  # "ok", "decoded" (was absent), "rebuilt"
    problem: str | None = None


def verify_cache(dataset: str = "mnist") -> list[CacheCheck]:
    """Hash every byte of each decoded cache file of a dataset; rebuild the damaged ones.

    Raw arrays that are absent are decoded; float ``unit`` arrays are checked where present.
    """
    spec = get_dataset(dataset)
    checks = []
    for key, data_file in spec.files.items():
        variants = ["raw"] + (["unit"] if data_file.kind == "images" else [])
        for variant in variants:
            path = decoded_path(dataset, key, variant)
            array, problem = open_cached(path, data_file, variant, full=True)
            if array is not None:
                checks.append(CacheCheck(key, variant, str(path), "ok"))
                continue
            if problem is None and variant == "unit":
                continue  # never made: load_mnist(normalize=True) makes it on first use
            rebuild = _decode if variant == "raw" else _derive_unit
            rebuild(dataset, key, path)
            status = "rebuilt" if problem else "decoded"
            checks.append(CacheCheck(key, variant, str(path), status, problem))
    return checks


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
    if normalize:  # the float images only: the raw ones are not mapped or verified in vain
        x_train = load_unit_images(dataset, "train_images")
        x_test = load_unit_images(dataset, "test_images")
        t_train = load_array(dataset, "train_labels")
        t_test = load_array(dataset, "test_labels")
    else:
        (x_train, t_train), (x_test, t_test) = load_data(dataset)

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
