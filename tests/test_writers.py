"""The writers-outside-MNIST evaluation set is deterministic and covers every class, style
and render, its European 1s drawn with real writers' flags and bases; the styles
augmentation adds strokes only to 1s and 7s, seeded, flags down-left of the stem at varied
lengths and bases on about half; the writers benchmark runs end to end on a tiny slice."""

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
import optdigits_set  # noqa: E402
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


def test_european_ones_have_a_cornered_flag_of_real_angle_and_length_and_bases_vary():
    rng = np.random.default_rng(1)
    bases = []
    for style, ((lo, hi), base) in writers_set._FLAGS.items():
        for _ in range(50):
            width, strokes = writers_set._european_one(style, rng)
            flag, stem = strokes[0], strokes[1]
            assert flag[-1] == stem[0]  # the corner: the flag ends where the stem starts
            assert stem[0][1] == 0.0 and stem[-1][1] == 1.0
            (ex, ey), (tx, _) = flag[0], flag[-1]
            length, degrees = np.hypot(tx - ex, ey), np.degrees(np.arctan2(tx - ex, ey))
            assert lo - 1e-9 <= length <= hi + 1e-9 and 20 - 1e-9 <= degrees <= 70 + 1e-9
            assert ex < tx  # down and to the left
            assert len(strokes) == 2 + base
            if base:
                (x0, y0), (x1, y1) = strokes[2]
                assert abs(y0 - 1.0) < 0.05 and abs(y1 - 1.0) < 0.05
                bases.append(x1 - x0)
            xs = [x for s in strokes for x, _ in s]
            assert min(xs) == 0.0 and np.isclose(max(xs), width)
    assert min(bases) < 0.35 and max(bases) > 0.75  # short and long bases


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


def test_flags_reach_down_left_of_the_stem_at_varied_lengths_and_some_1s_get_a_base(mnist):
    (x, y), _ = mnist
    ones = x[:3000][y[:3000] == 1][:200]
    styled = add_styles(ones, np.ones(len(ones), int), [0, 3], fraction=1.0)
    added = (styled >= 128) & (ones < 128)  # new strong ink
    grew_left, based, drops = 0, 0, []
    for before, extra in zip(ones, added, strict=True):
        ink = before >= 128
        rows = np.flatnonzero(ink.any(1))
        if rows.size < 6 or not extra.any():
            continue
        top, bottom, height = rows[0], rows[-1], rows[-1] - rows[0] + 1
        upper = extra[: top + (7 * height) // 10]  # the flag: new ink above the foot ...
        if upper.any():
            ys, xs = np.nonzero(upper)
            grew_left += xs.min() < np.flatnonzero(ink[top]).min()  # ... left of the top
            drops.append((ys.max() - top) / height)
        based += extra[bottom - 1 :].sum() >= 3  # a base along the foot
    assert grew_left > 0.8 * len(drops) and len(drops) > 150
    assert min(drops) < 0.3 and max(drops) > 0.5  # short and long flags
    assert 0.3 < based / len(drops) < 0.75  # about half of the flagged 1s get a base


def test_the_writers_benchmark_runs_on_a_tiny_slice(tmp_path: Path):
    out = tmp_path / "writers.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_writers.py"), "--count", "20",
         "--mnist-count", "50", "--robust-count", "5", "--repeat", "3", "--views", "both",
         "--optdigits", "30", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    one_view, model = results["models"]  # the bundled ensemble read both ways
    assert (one_view["views"], model["views"]) == (False, True)
    assert one_view["model"] == model["model"] + ", one view"
    if optdigits_set.available():
        assert model["optdigits"]["n"] == model["optdigits_bitmaps"]["n"] == 30
    assert set(model["per_class"]) == {str(d) for d in range(10)}
    assert 0.0 <= model["writers"] <= 1.0 and 0.0 <= model["mnist_test"] <= 1.0
    assert set(model["robustness"]) == {"preprocessed only", "canvas280", "off_center",
                                        "inverted", "thick", "thin", "rotated", "jpeg75",
                                        "photo"}  # fmt: skip
    assert model["p99_ms"] > 0 and 0 < model["mib"] < 5
    assert "digit 0" in done.stdout and "writers overall" in done.stdout
