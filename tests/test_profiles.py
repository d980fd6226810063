"""Profiles keep what each person taught in one SQLite file: validated names and labels,
bounded (oldest examples dropped, profiles past the limit refused), one copy of a picture
taught twice, safe with several processes teaching at once, and exported and imported as a
small safetensors file that is checked before anything of it is used."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from mnistlab.handwriting import profiles
from mnistlab.handwriting.profiles import (
    MAX_EXAMPLES,
    ProfileError,
    ProfileLimitError,
    ProfileStore,
    UnknownProfileError,
    check_label,
    check_name,
    read_profile_file,
)


def digits(n: int, start: int = 0) -> np.ndarray:
    """``n`` distinct 28x28 uint8 images (each its own picture)."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for k in range(n):
        images[k].flat[(start + k) % 784] = 255
        images[k, 0, 0] = (start + k) // 784 + 1
    return images


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    return ProfileStore(tmp_path / "profiles.sqlite")


def test_teaching_creates_a_profile_and_keeps_its_examples_in_order(store):
    assert store.list() == []
    ids = store.teach("anna", digits(3), [1, 7, 7])
    info = store.info("anna")
    assert (info.name, info.examples) == ("anna", 3)
    assert info.per_digit == (0, 1, 0, 0, 0, 0, 0, 2, 0, 0)
    found = store.examples("anna")
    assert found.ids.tolist() == ids
    assert found.labels.tolist() == [1, 7, 7]
    assert np.array_equal(found.images, digits(3))
    assert [p.name for p in store.list()] == ["anna"]


def test_every_change_moves_the_revision(store):
    assert store.revision("anna") is None
    store.teach("anna", digits(1), [1])
    first = store.revision("anna")
    store.teach("anna", digits(1, start=5), [2])
    second = store.revision("anna")
    assert first[0] == second[0] and second[1] > first[1]
    store.forget("anna")
    assert store.revision("anna") is None


def test_the_database_is_in_wal_mode(store):
    store.teach("anna", digits(1), [1])
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "name", ["", "../etc", "a/b", "a b", ".hidden", "-x", "x" * 65, "é", "a\n", None, 7]
)
def test_a_bad_name_is_refused_and_never_becomes_a_file(store, tmp_path, name):
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ProfileError, match="not a valid profile name"):
        store.teach(name, digits(1), [1])
    assert sorted(tmp_path.iterdir()) == before


def test_good_names():
    for name in ("default", "Anna", "anna.b-2_x", "7", "x" * 64):
        assert check_name(name) == name


@pytest.mark.parametrize("label", [10, -1, True, "x", "12", 1.0, None, "٣"])
def test_a_label_must_be_a_digit(store, label):
    with pytest.raises(ProfileError, match=r"must be a digit 0\.\.9"):
        store.teach("anna", digits(1), [label])
    assert store.revision("anna") is None  # nothing stored


def test_one_digit_strings_and_numpy_integers_are_labels():
    assert check_label("3") == 3
    assert check_label(np.int64(9)) == 9


def test_images_must_be_uint8_28x28(store):
    with pytest.raises(ProfileError, match="uint8 28x28"):
        store.teach("anna", np.zeros((1, 28, 27), np.uint8), [1])
    with pytest.raises(ProfileError, match="uint8 28x28"):
        store.teach("anna", np.zeros((1, 28, 28), np.float32), [1])
    with pytest.raises(ProfileError, match="1 images but 2 labels"):
        store.teach("anna", digits(1), [1, 2])


def test_past_the_bound_the_oldest_examples_are_dropped(tmp_path):
    store = ProfileStore(tmp_path / "p.sqlite", max_examples=5)
    store.teach("anna", digits(4), [0, 1, 2, 3])
    store.teach("anna", digits(3, start=10), [4, 5, 6])
    assert store.examples("anna").labels.tolist() == [2, 3, 4, 5, 6]


def test_the_documented_bound_is_what_a_store_keeps(store):
    assert store.max_examples == MAX_EXAMPLES


def test_past_the_profile_limit_a_new_profile_is_refused(tmp_path):
    store = ProfileStore(tmp_path / "p.sqlite", max_profiles=2)
    store.teach("a", digits(1), [1])
    store.teach("b", digits(1), [1])
    with pytest.raises(ProfileLimitError, match="forget one"):
        store.teach("c", digits(1), [1])
    store.teach("a", digits(1, start=3), [2])  # existing profiles still learn
    store.forget("b")
    store.teach("c", digits(1), [1])
    assert [p.name for p in store.list()] == ["a", "c"]


def test_the_same_picture_taught_again_keeps_one_copy_with_the_newest_label(store):
    store.teach("anna", digits(2), [4, 9])
    store.teach("anna", digits(1), [1])  # the first picture, corrected
    found = store.examples("anna")
    assert found.labels.tolist() == [9, 1]
    assert np.array_equal(found.images[1], digits(1)[0])


def test_profiles_are_separate(store):
    store.teach("anna", digits(2), [1, 1])
    store.teach("ben", digits(1), [7])
    assert store.info("anna").examples == 2
    assert store.examples("ben").labels.tolist() == [7]
    store.forget("anna")
    assert store.info("ben").examples == 1


def test_unknown_profiles_are_named_in_the_error(store):
    with pytest.raises(UnknownProfileError, match="'nobody': no such profile"):
        store.info("nobody")
    with pytest.raises(UnknownProfileError):
        store.forget("nobody")
    with pytest.raises(UnknownProfileError):
        store.export("nobody", store.path.parent / "x.safetensors")


def test_a_reader_never_creates_the_file(tmp_path):
    path = tmp_path / "sub" / "p.sqlite"
    reader = ProfileStore(path, create=False)
    assert reader.list() == [] and reader.revision("default") is None
    with pytest.raises(UnknownProfileError):
        reader.info("default")
    assert not path.exists()
    reader.teach("anna", digits(1), [3])  # a write creates it
    assert path.exists() and reader.info("anna").examples == 1


def test_a_file_that_is_not_a_profile_database_is_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ProfileError, match=r"junk\.sqlite"):
        ProfileStore(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(ProfileError, match="not a mnistlab profile database"):
        ProfileStore(other)


def _teach_many(path: str, name: str, start: int, count: int) -> None:
    store = ProfileStore(path)
    for k in range(count):
        store.teach(name, digits(1, start=start + k), [k % 10])


def test_two_processes_teaching_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_teach_many, args=(path, "anna", 0, 25)),
        context.Process(target=_teach_many, args=(path, "anna", 100, 25)),
        context.Process(target=_teach_many, args=(path, "ben", 200, 25)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    store = ProfileStore(path)
    assert store.info("anna").examples == 50
    assert store.info("ben").examples == 25
    assert store.revision("anna")[1] == 50


def test_export_then_import_gives_the_same_examples(store, tmp_path):
    store.teach("anna", digits(4), [1, 2, 3, 4])
    exported = tmp_path / "anna.safetensors"
    store.export("anna", exported)
    other = ProfileStore(tmp_path / "other.sqlite")
    info = other.import_file(exported)
    assert (info.name, info.examples) == ("anna", 4)
    a, b = store.examples("anna"), other.examples("anna")
    assert np.array_equal(a.images, b.images) and a.labels.tolist() == b.labels.tolist()
    assert np.array_equal(a.created, b.created)
    assert other.import_file(exported, "copy").examples == 4


def test_import_over_an_existing_profile_needs_replace(store, tmp_path):
    store.teach("anna", digits(2), [1, 2])
    exported = tmp_path / "anna.safetensors"
    store.export("anna", exported)
    store.teach("anna", digits(1, start=9), [5])
    with pytest.raises(ProfileError, match="already exists"):
        store.import_file(exported)
    assert store.info("anna").examples == 3
    assert store.import_file(exported, replace=True).examples == 2
    assert store.examples("anna").labels.tolist() == [1, 2]


def _write(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    meta = {"format": "mnistlab.profile", "version": "1", "name": "anna"}
    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata or meta))
    return path


def good_tensors(n: int = 2) -> dict:
    return {
        "images": digits(n),
        "labels": np.arange(n, dtype=np.uint8),
        "created": np.zeros(n),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": np.array([3, 12], np.uint8)}, r"labels\[1\] is 12"),
        ({"labels": np.array([3, 2], np.int64)}, "'labels' must be U8"),
        ({"images": np.zeros((2, 28, 27), np.uint8)}, r"shape \(n, 28, 28\)"),
        ({"images": np.zeros((2, 28, 28), np.float32)}, "'images' must be U8"),
        ({"created": np.array([0.0, np.nan])}, "finite"),
        ({"created": np.zeros(3)}, r"created must have shape \(2,\)"),
        ({"extra": np.zeros(1)}, "expected the tensors"),
    ],
)
def test_a_hostile_profile_file_is_refused_before_use(store, tmp_path, change, message):
    path = _write(tmp_path / "bad.safetensors", {**good_tensors(), **change})
    with pytest.raises(ProfileError, match=message):
        store.import_file(path)
    assert store.list() == []


def test_a_file_of_another_format_or_name_is_refused(store, tmp_path):
    path = _write(tmp_path / "m.safetensors", good_tensors(), {"format": "mnistlab.model"})
    with pytest.raises(ProfileError, match="not a mnistlab profile file"):
        read_profile_file(path)
    meta = {"format": "mnistlab.profile", "version": "1", "name": "../../etc"}
    path = _write(tmp_path / "n.safetensors", good_tensors(), meta)
    with pytest.raises(ProfileError, match="not a valid profile name"):
        read_profile_file(path)
    meta = {"format": "mnistlab.profile", "version": "99", "name": "anna"}
    with pytest.raises(ProfileError, match="version '99'"):
        read_profile_file(_write(tmp_path / "v.safetensors", good_tensors(), meta))


def test_files_that_are_not_profiles_at_all(store, tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(ProfileError, match=r"notes\.safetensors"):
        store.import_file(text)
    with pytest.raises(ProfileError, match="not a regular file"):
        store.import_file("/dev/zero")
    with pytest.raises(ProfileError, match="is a directory"):
        store.import_file(tmp_path)
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (5 << 20))
    with pytest.raises(ProfileError, match="too large"):
        store.import_file(big)


def _hold_exclusively(path: Path) -> sqlite3.Connection:
    """Another process's connection holding the file in exclusive locking mode: SQLite
    answers "database is locked" at once, without waiting, as it does for a moment while
    the last connection closes and tidies the WAL."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("COMMIT")  # the lock stays until the connection closes
    return holder


def test_a_call_that_finds_the_database_busy_is_retried_until_it_is_free(store):
    store.teach("anna", digits(1), [1])
    holder = _hold_exclusively(store.path)
    release = threading.Timer(0.3, holder.close)
    release.start()
    try:
        store.teach("anna", digits(1, start=1), [2])
    finally:
        release.join()
    assert store.info("anna").examples == 2


def test_a_database_busy_past_the_timeout_is_one_clear_error(store, monkeypatch):
    store.teach("anna", digits(1), [1])
    monkeypatch.setattr(profiles, "BUSY_TIMEOUT_S", 0.3)
    holder = _hold_exclusively(store.path)
    try:
        with pytest.raises(ProfileError, match=r"locked.* for over 0\.3 s; another process"):
            store.teach("anna", digits(1, start=1), [2])
    finally:
        holder.close()
    assert store.info("anna").examples == 1  # nothing half-written
