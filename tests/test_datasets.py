"""Loading MNIST: the real files through the mirror path, the cache, and every fallback."""

from __future__ import annotations

import dataclasses
import gzip
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATASETS, requires_fashion
from mnistlab.datasets import fetch, load_data, load_mnist, one_hot, scale_to_range
from mnistlab.datasets.api import decoded_path
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
    _, (_, y_test) = load_data()
    assert np.bincount(y_test).tolist() == MNIST_TEST_PER_CLASS


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
