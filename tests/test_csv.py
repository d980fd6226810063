"""CSV in the ``label,pixel0,...,pixel783`` layout: round trips, and precise errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnistlab.datasets.csv import read_csv, write_csv
from mnistlab.errors import DataFormatError


@settings(max_examples=25, deadline=None)
@given(
    images=hnp.arrays(np.uint8, st.tuples(st.integers(1, 5), st.just(28), st.just(28))),
    seed=st.integers(0, 2**32 - 1),
    header=st.booleans(),
)
def test_images_and_labels_survive_a_round_trip(tmp_path_factory, images, seed, header):
    labels = np.random.default_rng(seed).integers(0, 10, len(images)).astype(np.uint8)
    path = tmp_path_factory.mktemp("csv") / "digits.csv"
    write_csv(path, images, labels, header=header)
    back_images, back_labels = read_csv(path)
    np.testing.assert_array_equal(back_images, images)
    np.testing.assert_array_equal(back_labels, labels)
    assert back_images.dtype == np.uint8 and back_labels.dtype == np.uint8


def test_header_row_is_written_in_the_common_layout_when_asked(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, np.zeros((1, 28, 28), np.uint8), np.array([3]), header=True)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["label", "pixel0"] and header[-1] == "pixel783"


def test_by_default_there_is_no_header_as_in_the_course_files(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, np.zeros((1, 28, 28), np.uint8), np.array([3]))
    assert path.read_text().splitlines()[0].split(",")[:2] == ["3", "0"]


def _csv(tmp_path, rows: list[list[str]]) -> str:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    with pytest.raises(DataFormatError) as caught:
        read_csv(path)
    message = str(caught.value)
    assert "bad.csv" in message
    return message


def good_row(label: int = 1) -> list[str]:
    return [str(label)] + ["0"] * 784


def test_a_row_with_783_pixels_names_its_line(tmp_path):
    message = _csv(tmp_path, [good_row(), good_row()[:-1]])
    assert "line 2" in message and "expected 785 values" in message and "found 784" in message


def test_a_non_number_names_line_and_column(tmp_path):
    row = good_row()
    row[10] = "x7"
    message = _csv(tmp_path, [good_row(), good_row(), row])
    assert "line 3, column 11" in message and "'x7' is not an integer" in message


def test_pixel_256_is_out_of_range(tmp_path):
    row = good_row()
    row[5] = "256"
    message = _csv(tmp_path, [row])
    assert "line 1, column 6" in message and "256 is outside 0..255" in message


def test_negative_pixel_is_out_of_range(tmp_path):
    row = good_row()
    row[1] = "-1"
    assert "-1 is outside 0..255" in _csv(tmp_path, [row])


def test_label_10_is_rejected(tmp_path):
    message = _csv(tmp_path, [good_row(), good_row(10)])
    assert "line 2, column 1" in message and "label 10" in message


def test_line_numbers_count_the_header(tmp_path):
    header = ["label"] + [f"pixel{i}" for i in range(784)]
    assert "line 3" in _csv(tmp_path, [header, good_row(), good_row(12)])


def test_an_empty_file_has_no_data_rows(tmp_path):
    assert "no data rows" in _csv(tmp_path, [])


# Nothing is dropped silently: a header is recognised by its names, anything else is a row.

PIXELS = [f"pixel{i}" for i in range(784)]


def _read(tmp_path, text: str, name: str = "d.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return read_csv(path)


def _row_text(label: str = "1") -> str:
    return ",".join([label] + ["0"] * 784)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(["label", *PIXELS], id="label-pixel0"),
        pytest.param(["label", *(f"pixel{i}" for i in range(1, 785))], id="label-pixel1"),
        pytest.param(
            ["label", *(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))], id="1x1"
        ),
        pytest.param(['"label"', *(f'"{name}"' for name in PIXELS)], id="quoted"),
    ],
)
def test_the_header_layouts_in_use_are_recognised(tmp_path, header):
    images, labels = _read(tmp_path, ",".join(header) + "\n" + _row_text("7") + "\n")
    assert labels.tolist() == [7] and images.shape == (1, 28, 28)


def test_a_bom_is_dropped_and_the_first_row_kept(tmp_path):
    _, labels = _read(tmp_path, "\ufeff" + _row_text("5") + "\n" + _row_text("3") + "\n")
    assert labels.tolist() == [5, 3]


def test_a_bom_before_a_header_is_dropped_too(tmp_path):
    _, labels = _read(tmp_path, "\ufeff" + ",".join(["label", *PIXELS]) + "\n" + _row_text("4"))
    assert labels.tolist() == [4]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        pytest.param("5.0", "line 1, column 1: '5.0' is not an integer", id="5.0"),
        pytest.param("", "line 1, column 1: '' is not an integer", id="empty"),
        pytest.param("id", "line 1, column 1: 'id' is not an integer", id="unknown-name"),
    ],
)
def test_a_first_row_that_is_no_header_is_a_row_or_an_error_naming_it(tmp_path, first, expected):
    message = _csv(tmp_path, [[first] + ["0"] * 784, good_row(2)])
    assert expected in message


def test_a_hash_row_is_not_a_comment(tmp_path):
    message = _csv(tmp_path, [good_row(), ["#note"] + ["0"] * 784, good_row()])
    assert "line 2, column 1: '#note' is not an integer" in message


def test_a_header_with_a_name_that_is_not_a_pixel_names_its_column(tmp_path):
    message = _csv(tmp_path, [["label", "pixel0", "colour", *PIXELS[2:]], good_row()])
    assert "line 1, column 3: header name 'colour'" in message


def test_a_header_of_the_wrong_width_is_reported(tmp_path):
    message = _csv(tmp_path, [["label", *PIXELS[:-1]], good_row()])
    assert "line 1: a header of 784 names; expected 785" in message


def test_an_empty_line_between_rows_names_its_line_and_trailing_ones_are_fine(tmp_path):
    assert "line 2: empty line between rows" in _csv(tmp_path, [good_row(), [""], good_row()])
    _, labels = _read(tmp_path, _row_text("6") + "\n\n\n", "trailing.csv")
    assert labels.tolist() == [6]


def test_line_numbers_hold_across_blocks_of_a_large_file(tmp_path):
    rows = [good_row(i % 10) for i in range(1500)]  # ~2.4 MB: several 1 MiB blocks
    rows[1234] = good_row(11)
    assert "line 1235, column 1: label 11" in _csv(tmp_path, rows)


def test_gzip_csv_reads_like_plain(tmp_path):
    import gzip

    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress((_row_text("8") + "\r\n" + _row_text("9") + "\r\n").encode()))
    assert read_csv(path)[1].tolist() == [8, 9]


def test_invalid_utf8_names_its_byte(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(_row_text().encode() + b"\n1,\xff" + b",0" * 783 + b"\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv: byte 1,572: not UTF-8"):
        read_csv(path)


def test_a_line_without_an_end_is_refused_early(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"1" * (3 << 20))
    with pytest.raises(DataFormatError, match=r"bad\.csv: line 1: no line end within"):
        read_csv(path)


def test_a_damaged_gzip_csv_names_the_compressed_position(tmp_path):
    import gzip

    data = bytearray(gzip.compress(("\n".join([_row_text("3")] * 200) + "\n").encode(), mtime=0))
    data[-6] ^= 0x01  # the trailer's CRC-32
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataFormatError, match=r"bad\.csv\.gz: compressed bytes [\d,.]+: not a valid"
    ):
        read_csv(path)
