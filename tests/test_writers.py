"""The writers-outside-MNIST evaluation set is deterministic and covers every class, style
and render; the styles augmentation adds strokes only to 1s and 7s, seeded; the writers
benchmark runs end to end on a tiny slice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistlab.handwriting.augment import add_styles
from mnistlab.handwriting.preprocess import WORK_MAX_SIDE, decode_image, preprocess_image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import writers_set  # noqa: E402


def test_same_seed_same_files_other_seed_other_files():
    a = writers_set.make_writers_set(30, seed=3)
    b = writers_set.make_writers_set(30, seed=3)
    c = writers_set.make_writers_set(30, seed=4)
    assert [d.data for d in a] == [d.data for d in b]
    assert [d.data for d in a] != [d.data for d in c]
    assert [d.label for d in a] == [i % 10 for i in range(30)]


def test_every_class_style_and_render_appears_and_reads_as_an_image():
    digits = writers_set.make_writers_set(400, seed=0)
    assert {d.label for d in digits} == set(range(10))
    assert {d.render for d in digits} == set(writers_set.RENDERS)
    assert {d.fmt for d in digits} == {"PNG", "JPEG"}
    seen = {(d.label, d.style) for d in digits}
    assert seen == {(label, s) for label, styles in writers_set.STYLES.items() for s in styles}
    for d in digits[:40]:
        out = preprocess_image(decode_image(d.data, max_side=WORK_MAX_SIDE))
        assert out.shape == (28, 28) and out.max() == 255


def test_every_style_renders_in_every_render():
    rng = np.random.default_rng(0)
    for label, styles in writers_set.STYLES.items():
        for style in styles:
            for render in writers_set.RENDERS:
                img, fmt = writers_set.render_digit(label, style, render, rng)
                arr = np.asarray(img)
                assert img.mode == "L" and fmt in ("PNG", "JPEG")
                assert arr.max() - arr.min() > 60, (label, style, render)
    with pytest.raises(ValueError, match="unknown render"):
        writers_set.render_digit(1, "stick", "fax", rng)


def test_the_evaluation_set_shares_no_code_with_training():
    src = Path(__file__).resolve().parents[1] / "src"
    for path in src.rglob("*.py"):
        assert "writers_set" not in path.read_text(), path


def test_styles_add_ink_to_ones_and_sevens_only_and_are_seeded(mnist):
    (x, y), _ = mnist
    x, y = x[:600], y[:600]
    a = add_styles(x, y, [0, 1], fraction=1.0)
    assert np.array_equal(a, add_styles(x, y, [0, 1], fraction=1.0))
    assert not np.array_equal(a, add_styles(x, y, [0, 2], fraction=1.0))
    changed = np.any(a != x, axis=(1, 2))
    assert np.all(a >= x)  # strokes are only added
    assert not changed[(y != 1) & (y != 7)].any()
    assert changed[(y == 1) | (y == 7)].mean() > 0.95
    assert np.array_equal(add_styles(x, y, 5, fraction=0.0), x)


def test_the_writers_benchmark_runs_on_a_tiny_slice(tmp_path: Path):
    out = tmp_path / "writers.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_writers.py"), "--count", "20",
         "--mnist-count", "50", "--robust-count", "5", "--repeat", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    (model,) = results["models"]
    assert set(model["per_class"]) == {str(d) for d in range(10)}
    assert 0.0 <= model["writers"] <= 1.0 and 0.0 <= model["mnist_test"] <= 1.0
    assert set(model["robustness"]) == {"preprocessed only", "canvas280", "off_center",
                                        "inverted", "thick", "thin", "rotated", "jpeg75",
                                        "photo"}  # fmt: skip
    assert model["p99_ms"] > 0 and 0 < model["mib"] < 5
    assert "digit 0" in done.stdout and "writers overall" in done.stdout
