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


def test_header_row_is_written_in_the_common_layout(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, np.zeros((1, 28, 28), np.uint8), np.array([3]))
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["label", "pixel0"] and header[-1] == "pixel783"


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
