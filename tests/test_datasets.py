"""Loading MNIST: the real files through the mirror path, the cache, and every fallback."""

from __future__ import annotations

import dataclasses
import gzip
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATASETS, requires_fashion
from mnistlab.datasets import (
    api,
    fetch,
    load_data,
    load_mnist,
    one_hot,
    read_idx,
    scale_to_range,
    verify_cache,
)
from mnistlab.datasets.api import DecodedCacheWarning, decoded_path, load_array, load_unit_images
from mnistlab.datasets.registry import DATASETS
from mnistlab.errors import DatasetNotFoundError

MNIST_TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_PER_CLASS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_has_the_official_counts_and_classes(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_PER_CLASS
    assert np.bincount(y_test).tolist() == MNIST_TEST_PER_CLASS


def test_the_registry_knows_each_official_files_decompressed_size():
    sizes = {key: spec.size for key, spec in DATASETS["mnist"].files.items()}
    assert sizes == {
        "train_images": 47_040_016,
        "train_labels": 60_008,
        "test_images": 7_840_016,
        "test_labels": 10_008,
    }
    for key, spec in DATASETS["mnist"].files.items():
        official = gzip.decompress((SHARED_DATASETS / "mnist" / spec.filename).read_bytes())
        assert len(official) == sizes[key]


def test_known_samples_are_where_everyone_expects_them(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert int(x_train[0].sum()) == 27525 and int(x_test[0].sum()) == 18454
    assert x_train[0, 14, 13:18].tolist() == [81, 240, 253, 253, 119]


def test_textbook_loader_conventions():
    (x, t), (x_test, _) = load_mnist()
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert t.shape == (60000,) and x_test.shape == (10000, 784)
    (x, _), _ = load_mnist(flatten=False)
    assert x.shape == (60000, 1, 28, 28)
    (x, t), _ = load_mnist(normalize=False, one_hot_label=True)
    assert x.dtype == np.uint8 and x.shape == (60000, 784)
    assert t.shape == (60000, 10) and t[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_course_transforms():
    x = np.array([[0, 255]], np.uint8)
    np.testing.assert_allclose(scale_to_range(x), [[0.01, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(one_hot([2], off=0.01, on=0.99)[0, 1:4], [0.01, 0.99, 0.01])
    with pytest.raises(ValueError, match=r"0\.\.9"):
        one_hot([10])


def test_warm_loads_memory_map_the_decoded_cache_and_writes_stay_private():
    (x_train, _), _ = load_data()
    assert isinstance(x_train, np.memmap)
    before = int(x_train[0, 0, 0])
    x_train[0, 0, 0] = 77  # copy-on-write: allowed, and never reaches the cache
    (again, _), _ = load_data()
    assert int(again[0, 0, 0]) == before


def test_nothing_found_offline_lists_what_was_tried(isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("MNISTLAB_MIRRORS", (tmp_path / "empty").as_uri())
    # No built-in mirrors either: the test must not depend on whether the internet is there.
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=()))
    with pytest.raises(DatasetNotFoundError) as caught:
        fetch("mnist", "test_labels")
    message = str(caught.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and "empty/mnist" in message
    assert "MNISTLAB_MIRRORS=file://" in message  # says how to point at local files


def _mirror(root: Path, damage=None) -> str:
    """A mirror directory holding the official files, one of them optionally damaged."""
    (root / "mnist").mkdir(parents=True)
    for source in (SHARED_DATASETS / "mnist").glob("*.gz"):
        target = root / "mnist" / source.name
        shutil.copyfile(source, target)
        if damage and source.name == "t10k-labels-idx1-ubyte.gz":
            target.write_bytes(damage(target.read_bytes()))
    return root.as_uri()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: gzip.compress(gzip.decompress(b)[:-1] + b"\x0a"), id="label-10"),
        pytest.param(lambda b: b"not gzip at all", id="wrong-content"),
    ],
)
def test_a_bad_mirror_file_is_reported_and_the_next_mirror_used(
    isolated_home, monkeypatch, tmp_path, capsys, damage
):
    bad = _mirror(tmp_path / "bad", damage)
    good = _mirror(tmp_path / "good")
    monkeypatch.setenv("MNISTLAB_MIRRORS", f"{bad},{good}")
    verified = fetch("mnist", "test_labels")
    assert verified.origin.startswith(good)
    assert "bad/mnist/t10k-labels-idx1-ubyte.gz" in capsys.readouterr().err
    leftovers = [p.name for p in (isolated_home / "mnist").iterdir()]
    assert not [name for name in leftovers if name.endswith(".part")]


def test_a_damaged_cache_file_is_replaced(isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("MNISTLAB_MIRRORS", _mirror(tmp_path / "m"))
    cached = fetch("mnist", "test_labels").path
    cached.write_bytes(cached.read_bytes()[:100])
    assert fetch("mnist", "test_labels").path == cached
    assert len(gzip.decompress(cached.read_bytes())) == 10008


def test_the_cache_is_used_without_any_mirror(isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("MNISTLAB_MIRRORS", _mirror(tmp_path / "m"))
    fetch("mnist", "test_labels")
    shutil.rmtree(tmp_path / "m")
    assert fetch("mnist", "test_labels").path.parent == isolated_home / "mnist"


def test_a_system_directory_is_used_before_mirrors(isolated_home, monkeypatch, tmp_path):
    _mirror(tmp_path / "system")
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", str(tmp_path / "system"))
    monkeypatch.setenv("MNISTLAB_MIRRORS", (tmp_path / "nowhere").as_uri())
    verified = fetch("mnist", "test_labels")
    assert verified.origin == str(tmp_path / "system" / "mnist" / "t10k-labels-idx1-ubyte.gz")


def test_decoded_cache_is_rebuilt_if_unreadable(isolated_home):
    load_data()
    path = decoded_path("mnist", "test_labels")
    path.write_bytes(b"garbage")
    with pytest.warns(DecodedCacheWarning, match="unreadable"):
        _, (_, y_test) = load_data()
    assert np.bincount(y_test).tolist() == MNIST_TEST_PER_CLASS


def _official(name: str) -> np.ndarray:
    return read_idx(SHARED_DATASETS / "mnist" / name)


def _poke(path: Path, index_from_end: int, value: bytes) -> None:
    """Overwrite bytes of a cached .npy in place, counted from the end of its data."""
    data = bytearray(path.read_bytes())
    data[len(data) - index_from_end : len(data) - index_from_end + len(value)] = value
    path.write_bytes(bytes(data))


def _flip_byte(path: Path) -> None:
    _poke(path, 5000, bytes([path.read_bytes()[-5000] ^ 0x01]))


def _labels_200(path: Path) -> None:
    np.save(path, np.full(10000, 200, np.uint8))


def _wrong_shape(path: Path) -> None:
    np.save(path, np.zeros((9999, 28, 28), np.uint8))


def _nan(path: Path) -> None:
    _poke(path, 4 * 300, np.array([np.nan], np.float32).tobytes())


def _no_record(path: Path) -> None:
    path.with_name(path.name + api.RECORD_SUFFIX).unlink()


@pytest.mark.parametrize(
    ("key", "variant", "damage", "problem"),
    [
        pytest.param(
            "test_images", "raw", _flip_byte, "content changed: CRC-32", id="flipped-byte"
        ),
        pytest.param("test_labels", "raw", _labels_200, "content changed", id="labels-200"),
        pytest.param("test_images", "raw", _wrong_shape, r"\(9999, 28, 28\)", id="wrong-shape"),
        pytest.param("test_images", "unit", _nan, "content changed", id="nan-in-float-cache"),
        pytest.param("test_labels", "raw", _no_record, "no digest record", id="record-removed"),
    ],
)
def test_a_damaged_decoded_cache_warns_and_is_decoded_again(
    isolated_home, key, variant, damage, problem
):
    load = load_unit_images if variant == "unit" else load_array
    good = np.array(load("mnist", key))  # one good load
    path = decoded_path("mnist", key, variant)
    damage(path)
    with pytest.warns(DecodedCacheWarning, match=problem):
        again = load("mnist", key)
    np.testing.assert_array_equal(again, good)
    official = _official(
        "t10k-images-idx3-ubyte.gz" if key == "test_images" else "t10k-labels-idx1-ubyte.gz"
    )
    np.testing.assert_array_equal(again if variant == "raw" else np.rint(again * 255), official)
    assert np.isfinite(again).all()
    checks = {(c.key, c.variant): c.status for c in verify_cache("mnist")}  # every byte
    assert checks[(key, variant)] == "ok"


def test_a_byte_flipped_after_the_stamp_is_written_is_still_found(isolated_home, monkeypatch):
    """The cheap path: a file unchanged since its last full check costs only a stat; any
    write changes its ctime, so the next load hashes it again."""
    monkeypatch.setattr(api, "STAMP_SETTLE_S", 0.0)
    load_array("mnist", "test_images")
    path = decoded_path("mnist", "test_images")
    time.sleep(0.05)  # file times tick coarsely: let the full check see an older ctime
    load_array("mnist", "test_images")  # full check; writes the stamp
    record = json.loads(path.with_name(path.name + api.RECORD_SUFFIX).read_text())
    assert record["stamp"][2] == path.stat().st_size
    calls = []
    monkeypatch.setattr(
        api,
        "array_digest",
        lambda a: calls.append(1) or api.zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B")),
    )
    load_array("mnist", "test_images")
    assert calls == []  # the stamp matched: no hash
    time.sleep(0.05)
    _flip_byte(path)
    with pytest.warns(DecodedCacheWarning, match="content changed"):
        again = load_array("mnist", "test_images")
    np.testing.assert_array_equal(again, _official("t10k-images-idx3-ubyte.gz"))


def _fetch_all_in_child(home: str, mirrors: str) -> list[str]:
    import os

    os.environ["MNISTLAB_HOME"] = home
    os.environ["MNISTLAB_MIRRORS"] = mirrors
    os.environ["MNISTLAB_SYSTEM_DIRS"] = ""
    from mnistlab.datasets import fetch_all

    return sorted(str(v.path) for v in fetch_all("mnist", progress=False).values())


def test_two_processes_fetching_at_once_both_get_whole_verified_files(tmp_path):
    home = tmp_path / "home"
    mirrors = SHARED_DATASETS.as_uri()
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        first, second = pool.starmap(_fetch_all_in_child, [(str(home), mirrors)] * 2)
    assert first == second and len(first) == 4
    names = sorted(p.name for p in (home / "mnist").iterdir())
    assert not [n for n in names if n.endswith((".part", ".tmp"))]
    for path in first:  # each file is complete and verifies
        original = SHARED_DATASETS / "mnist" / Path(path).name
        assert Path(path).read_bytes() == original.read_bytes()


@requires_fashion
def test_fashion_mnist_loads_from_the_debian_directory():
    (x_train, y_train), (x_test, y_test) = load_data("fashion-mnist")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
