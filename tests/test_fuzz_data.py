"""Fuzzing the readers: mutated valid IDX and CSV files (truncated, flipped bytes, inserted
bytes, huge dimensions; plain and gzip, mutated before or after compression) either read
or raise DataFormatError (ChecksumError is one), never anything else, and quickly."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.datasets.csv import read_csv, write_csv
from mnistlab.datasets.idx import encode_idx, read_idx
from mnistlab.datasets.registry import DATASETS
from mnistlab.datasets.sources import verify_content
from mnistlab.errors import DataFormatError

RNG = np.random.default_rng(7)
IDX_SEEDS = [
    encode_idx(RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)),
    encode_idx(RNG.integers(0, 10, 7, dtype=np.uint8)),
    encode_idx(RNG.integers(-1000, 1000, (2, 3)).astype(">i4")),
    encode_idx(RNG.standard_normal(4)),
]
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _csv_seed(header: bool) -> bytes:
    images = RNG.integers(0, 256, (3, 2, 2), dtype=np.uint8)
    labels = np.array([1, 0, 9], np.uint8)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "seed.csv"
        write_csv(path, images, labels, header=header)
        return path.read_bytes()


CSV_SEEDS = [_csv_seed(True), _csv_seed(False)]

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 16)),
    st.tuples(
        st.just("dimension"),
        st.integers(0, 3),
        st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**32 - 1]),
    ),
)


def mutate(data: bytes, operations) -> bytes:
    out = bytearray(data)
    for operation in operations:
        kind = operation[0]
        if kind == "dimension":  # IDX dimension fields sit at bytes 4, 8, ...
            offset = 4 + 4 * operation[1]
            if offset + 4 <= len(out):
                out[offset : offset + 4] = operation[2].to_bytes(4, "big")
            continue
        at = int(operation[1] * len(out))
        if kind == "truncate":
            del out[at:]
        elif kind == "flip" and at < len(out):
            out[at] ^= operation[2]
        elif kind == "insert":
            out[at:at] = operation[2]
        elif kind == "delete":
            del out[at : at + operation[2]]
    return bytes(out)


def _prepare(seed: bytes, operations, compress: str) -> bytes:
    if compress == "none":
        return mutate(seed, operations)
    if compress == "before":  # damaged content, valid gzip
        return gzip.compress(mutate(seed, operations), mtime=0)
    return mutate(gzip.compress(seed, mtime=0), operations)  # damaged gzip


@FUZZ
@given(
    seed=st.sampled_from(IDX_SEEDS),
    operations=st.lists(mutation, min_size=1, max_size=3),
    compress=st.sampled_from(["none", "before", "after"]),
)
def test_read_idx_on_mutated_files_reads_or_raises_data_format_error(
    tmp_path, seed, operations, compress
):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(_prepare(seed, operations, compress))
    try:
        array = read_idx(path)
    except DataFormatError as error:
        assert str(path) in str(error)
    else:  # a file read as gzip only when it starts with gzip's magic (a mutation can cut it)
        data = path.read_bytes()
        assert array.nbytes <= len(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


@FUZZ
@given(
    seed=st.sampled_from(CSV_SEEDS),
    operations=st.lists(mutation.filter(lambda op: op[0] != "dimension"), min_size=1, max_size=3),
    compress=st.sampled_from(["none", "before", "after"]),
)
def test_read_csv_on_mutated_files_reads_or_raises_data_format_error(
    tmp_path, seed, operations, compress
):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(_prepare(seed, operations, compress))
    try:
        images, labels = read_csv(path, image_shape=(2, 2))
    except DataFormatError as error:
        assert str(path) in str(error)
    else:
        assert images.shape == (len(labels), 2, 2) and int(labels.max()) <= 9


LABELS_SPEC = DATASETS["mnist"].files["test_labels"]
OFFICIAL_LABELS = encode_idx(np.arange(LABELS_SPEC.count, dtype=np.uint8) % 10)


@settings(max_examples=400, deadline=None)
@given(operations=st.lists(mutation, min_size=1, max_size=3), compress=st.booleans())
def test_fetch_verification_of_mutated_content_raises_only_data_format_errors(operations, compress):
    raw = (
        mutate(gzip.compress(OFFICIAL_LABELS, mtime=0), operations)
        if compress
        else mutate(OFFICIAL_LABELS, operations)
    )
    with pytest.raises(DataFormatError):  # not the official bytes: never verifies
        verify_content(raw, LABELS_SPEC, "mirror/t10k-labels-idx1-ubyte.gz")


def test_the_fuzzed_seeds_are_valid(tmp_path):
    for number, seed in enumerate(IDX_SEEDS):
        path = tmp_path / f"{number}.idx.gz"
        path.write_bytes(gzip.compress(seed))
        read_idx(path)
    for number, seed in enumerate(CSV_SEEDS):
        path = tmp_path / f"{number}.csv"
        path.write_bytes(seed)
        assert read_csv(path, image_shape=(2, 2))[1].tolist() == [1, 0, 9]
