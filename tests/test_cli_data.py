"""`mnistlab data ...` as a user runs it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mnistlab.cli import main
from mnistlab.datasets import read_csv, read_idx


def test_show_draws_the_digit_and_prints_aligned_pixel_values(capsys):
    assert main(["data", "show", "0", "--split", "test"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "mnist test[0]  label: 7"
    drawing, values = out[1:29], out[30:58]
    assert all(len(line) == 56 for line in drawing) and any("█" in line for line in drawing)
    assert all(len(line) == 28 * 4 - 1 for line in values)
    assert values[7].split()[6:10] == ["84", "185", "159", "151"]


def test_show_rejects_an_index_out_of_range(capsys):
    assert main(["data", "show", "10000", "--split", "test"]) == 1
    assert "index 10000 is outside 0..9999" in capsys.readouterr().err


def test_info_lists_sources_counts_and_checksums(capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "2646ac647ad5339dbf082846283269ea" in out and "60,000" in out and "5,923" in out


def test_grid_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "grid", "--count", "16", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200


def test_convert_idx_to_csv_and_back_is_lossless(tmp_path, mnist):
    csv_path = tmp_path / "mnist_test.csv"
    assert main(["data", "convert", "mnist:test", str(csv_path)]) == 0
    images, labels = read_csv(csv_path)
    _, (x_test, y_test) = mnist
    np.testing.assert_array_equal(images, x_test)
    np.testing.assert_array_equal(labels, y_test)

    # header-less by default, as the course's files: its own loader reads them as they are
    table = np.loadtxt(csv_path, delimiter=",", max_rows=3)
    np.testing.assert_array_equal(table[:, 0], y_test[:3])
    np.testing.assert_array_equal(table[:, 1:], x_test[:3].reshape(3, -1))

    idx_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    assert main(["data", "convert", str(csv_path), str(idx_path)]) == 0
    np.testing.assert_array_equal(read_idx(idx_path), x_test)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"), y_test)


def test_convert_writes_a_header_when_asked_and_reads_it_back(tmp_path, mnist):
    csv_path = tmp_path / "with_header.csv"
    assert main(["data", "convert", "mnist:test", str(csv_path), "--header"]) == 0
    with open(csv_path) as f:
        assert f.readline().startswith("label,pixel0,pixel1,")
    images, labels = read_csv(csv_path)
    np.testing.assert_array_equal(images, mnist[1][0])
    np.testing.assert_array_equal(labels, mnist[1][1])


def test_convert_reports_a_malformed_csv_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1," + ",".join(["0"] * 782) + "\n")
    assert main(["data", "convert", str(bad), str(tmp_path / "x-images.idx")]) == 1
    err = capsys.readouterr().err
    assert "bad.csv: line 1: expected 785 values" in err and "Traceback" not in err


def test_info_and_verify_find_a_damaged_decoded_cache_and_rebuild_it(isolated_home, capsys):
    from mnistlab.datasets import load_data
    from mnistlab.datasets.api import decoded_path

    load_data()
    path = decoded_path("mnist", "test_images")
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10
    path.write_bytes(bytes(data))
    assert main(["data", "verify"]) == 1
    out = capsys.readouterr().out
    assert "3 of 4 arrays verified byte for byte" in out
    assert "test_images-raw" in out and "content changed" in out and "decoded again" in out
    assert main(["data", "verify"]) == 0
    assert "4 of 4 arrays verified" in capsys.readouterr().out

    path.write_bytes(bytes(data))
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "content changed" in out and "10,000" in out and "980" in out
