"""IDX files: round trips for every type, and a precise error for each kind of damage."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnistlab.datasets.idx import (
    check_labels,
    encode_idx,
    parse_idx,
    read_idx,
    write_idx,
)
from mnistlab.errors import DataFormatError

IDX_TYPES = st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8"])


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        dtype=IDX_TYPES,
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
        elements={"allow_nan": False},
    ),
    compressed=st.booleans(),
)
def test_any_array_survives_a_write_read_round_trip(tmp_path_factory, array, compressed):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compressed else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape
    assert back.dtype.newbyteorder("=") == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)


def test_mnist_images_use_magic_2051_and_labels_2049():
    assert int.from_bytes(encode_idx(np.zeros((2, 28, 28), np.uint8))[:4], "big") == 2051
    assert int.from_bytes(encode_idx(np.zeros(2, np.uint8))[:4], "big") == 2049


def test_gzip_is_detected_from_content_not_the_file_name(tmp_path):
    path = tmp_path / "labels.idx"  # no .gz suffix, but gzip content
    path.write_bytes(gzip.compress(encode_idx(np.arange(10, dtype=np.uint8))))
    np.testing.assert_array_equal(read_idx(path), np.arange(10))


def _error(data: bytes) -> str:
    with pytest.raises(DataFormatError) as caught:
        parse_idx(data, "sample.idx")
    return str(caught.value)


def test_wrong_magic_is_reported_with_the_file_and_offset():
    message = _error(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    assert "sample.idx" in message and "byte 0" in message and "magic" in message


def test_unknown_type_code_is_reported():
    assert "type code" in _error(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"a")


def test_truncated_header_is_reported():
    assert "truncated header" in _error(b"\x00\x00\x08\x03" + (1).to_bytes(4, "big"))


def test_fewer_bytes_than_the_declared_count_is_truncation():
    data = encode_idx(np.zeros((3, 28, 28), np.uint8))[:-100]
    message = _error(data)
    assert "truncated" in message and "(3, 28, 28)" in message and "byte 16" in message


def test_more_bytes_than_declared_is_reported_not_ignored():
    message = _error(encode_idx(np.zeros(5, np.uint8)) + b"\x00")
    assert "trailing bytes" in message


def test_a_damaged_gzip_stream_is_reported(tmp_path):
    packed = gzip.compress(encode_idx(np.zeros((4, 28, 28), np.uint8)))
    path = tmp_path / "bad.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFormatError, match=r"bad\.gz.*gzip"):
        read_idx(path)


def test_a_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.idx"):
        read_idx(tmp_path / "nope.idx")


def test_label_ten_is_rejected_with_its_position():
    with pytest.raises(DataFormatError, match=r"label 2: value 10 is outside 0\.\.9"):
        check_labels(np.array([1, 9, 10], np.uint8), "labels.idx")


# Every malformed input: DataFormatError naming the file and the position.


@pytest.mark.parametrize(
    ("dimension", "data"),
    [
        # 65536**4 = 2**64: a 64-bit product wraps to 0, which matched the empty data and
        # then failed in reshape with a plain ValueError naming no file.
        pytest.param(2**16, b"", id="wraps-to-zero"),
        pytest.param(2**32 - 1, b"\x00" * 64, id="largest"),
    ],
)
def test_dimensions_whose_product_overflows_64_bits_name_the_file(tmp_path, dimension, data):
    header = b"\x00\x00\x08\x04" + dimension.to_bytes(4, "big") * 4
    path = tmp_path / "huge.idx"
    path.write_bytes(header + data)
    for call in (lambda: read_idx(path), lambda: parse_idx(path.read_bytes(), str(path))):
        with pytest.raises(DataFormatError, match=r"huge\.idx: byte 4: the header declares"):
            call()


def test_a_declared_size_past_max_bytes_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.idx"
    write_idx(path, np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match=r"big\.idx: byte 4: .*more than the 1,000 bytes"):
        read_idx(path, max_bytes=1000)


def _packed(array: np.ndarray) -> bytes:
    return gzip.compress(encode_idx(array), mtime=0)


IMAGES = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)


def test_a_corrupt_deflate_stream_names_the_compressed_position(tmp_path):
    data = bytearray(_packed(IMAGES))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert "bad.gz: compressed byte" in message and "inflated" in message


def test_a_truncated_gzip_names_where_it_ends(tmp_path):
    data = _packed(IMAGES)
    path = tmp_path / "short.gz"
    path.write_bytes(data[:-20])
    with pytest.raises(DataFormatError, match=r"short\.gz: compressed byte [\d,]+: .*ends early"):
        read_idx(path)


def test_a_damaged_gzip_trailer_crc_is_caught(tmp_path):
    data = bytearray(_packed(IMAGES))
    data[-6] ^= 0x01  # inside the CRC-32 of the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"crc\.gz: compressed bytes .*incorrect data check"):
        read_idx(path)


def test_garbage_after_the_gzip_stream_is_reported(tmp_path):
    path = tmp_path / "tail.gz"
    path.write_bytes(_packed(np.arange(10, dtype=np.uint8)) + b"junk")
    with pytest.raises(DataFormatError, match=r"tail\.gz: compressed byte \d+: trailing bytes"):
        read_idx(path)


def test_multi_member_gzip_and_zero_padding_read_like_gzip_does(tmp_path):
    payload = encode_idx(IMAGES)
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]) + b"\0" * 8)
    np.testing.assert_array_equal(read_idx(path), IMAGES)


def test_trailing_bytes_in_a_gzip_are_found_without_inflating_them_all(tmp_path):
    path = tmp_path / "more.gz"
    path.write_bytes(gzip.compress(encode_idx(np.arange(10, dtype=np.uint8)) + bytes(1 << 20)))
    with pytest.raises(DataFormatError, match=r"more\.gz: byte 18: has trailing bytes"):
        read_idx(path)
