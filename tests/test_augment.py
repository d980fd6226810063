"""Augmentation is seeded, keeps digits digits, changes strokes the right way; the bundled
model ships in the package, is small and recognizes MNIST."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab.handwriting.augment import (
    AffineParams,
    augment,
    change_stroke,
    lower_resolution,
    mnist_normalize,
    random_affine_params,
    transform,
)
from mnistlab.handwriting.preprocess import preprocess_image
from mnistlab.handwriting.recognizer import Recognizer, bundled_model_path, bundled_model_paths


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    """The first 1000 MNIST test digits and their labels."""
    _, (x_test, y_test) = mnist
    return x_test[:1000], y_test[:1000]


@pytest.fixture(scope="module")
def bundled() -> Recognizer:
    return Recognizer.from_path(None)


def identity(n: int) -> AffineParams:
    return AffineParams(np.broadcast_to(np.eye(2), (n, 2, 2)), np.zeros((n, 2)))


def ink(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)


def test_same_seed_same_digits_other_seed_other_digits(digits):
    x = digits[0][:200]
    first, again, other = augment(x, 7), augment(x, 7), augment(x, 8)
    assert first.shape == x.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.array_equal(augment(x, [7, 1]), augment(x, np.random.default_rng([7, 1])))


def test_unnormalized_output_keeps_shape_and_dtype(digits):
    out = augment(digits[0][:50], 0, normalize=False)
    assert out.shape == (50, 28, 28) and out.dtype == np.uint8


def test_no_rotation_unit_scale_no_stroke_change_is_close_to_identity(digits):
    x = digits[0][:200]
    same = transform(x, identity(len(x)), 0.0, normalize=False)
    diff = np.abs(same.astype(np.int16) - x.astype(np.int16))
    assert diff.mean() < 8  # bilinear sampling at 2x and 2x2 averaging blur a little
    assert np.corrcoef(same.ravel(), x.ravel())[0, 1] > 0.98


def test_normalization_matches_preprocess_on_clean_digits(digits):
    x = digits[0][:200]
    ours = mnist_normalize(x).astype(np.int16)
    theirs = np.stack([preprocess_image(d) for d in x]).astype(np.int16)
    assert np.abs(ours - theirs).mean() < 1.0  # of 255; Pillow and NumPy round differently


def test_normalized_digits_fill_the_20px_box_and_sit_at_the_center(digits):
    out = augment(digits[0][:200], 1)
    rows, cols = out.any(axis=2), out.any(axis=1)
    height, width = rows.sum(axis=1), cols.sum(axis=1)
    assert np.all(np.maximum(height, width) <= 22) and np.median(np.maximum(height, width)) >= 20
    mass = ink(out)
    cy = (out.sum(axis=2) @ np.arange(28)) / mass
    cx = (out.sum(axis=1) @ np.arange(28)) / mass
    assert np.all(np.abs(cy - 14) <= 1.0) and np.all(np.abs(cx - 14) <= 1.0)


def test_lower_resolution_is_seeded_and_changes_only_its_share(digits):
    x = augment(digits[0][:400], 1)
    assert np.array_equal(lower_resolution(x, 3, fraction=0.0), x)
    once, again = lower_resolution(x, 3, fraction=0.3), lower_resolution(x, 3, fraction=0.3)
    assert np.array_equal(once, again) and once.dtype == np.uint8 and once.shape == x.shape
    changed = np.any(once != x, axis=(1, 2))
    assert 0.2 < changed.mean() < 0.4
    assert not np.array_equal(lower_resolution(x, 4, fraction=0.3), once)


def edge_strength(images: np.ndarray) -> np.ndarray:
    """Mean absolute step between neighbouring pixels: high for crisp strokes."""
    x = images.astype(np.float64)
    return np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(
        axis=(1, 2)
    )


def test_a_digit_seen_small_is_blurred_but_stays_normalized_and_readable(digits, bundled):
    x, y = augment(digits[0][:300], 1), digits[1][:300]
    small = lower_resolution(x, 5, fraction=1.0, sides=(8, 12))
    assert np.all(edge_strength(small) < edge_strength(x))  # fine detail gone
    rows, cols = small.any(axis=2), small.any(axis=1)
    side = np.maximum(rows.sum(axis=1), cols.sum(axis=1))
    assert np.all(side <= 22) and np.median(side) >= 20  # the 20 px box again
    mass = ink(small)
    cy = (small.sum(axis=2) @ np.arange(28)) / mass
    assert np.all(np.abs(cy - 14) <= 1.0)
    assert (bundled.probabilities(small).argmax(1) == y).mean() > 0.9


def test_a_bitmap_share_of_the_small_digits_is_black_and_white_before_normalizing(digits):
    x = augment(digits[0][:300], 1)
    grey = lower_resolution(x, 5, fraction=0.5)
    mixed = lower_resolution(x, 5, fraction=0.5, binary=0.5)
    small = np.any(grey != x, axis=(1, 2))
    bitmapped = np.any(mixed != grey, axis=(1, 2))
    assert not np.any(bitmapped & ~small)  # only the small ones, the same ones either way
    assert 0.35 < bitmapped[small].mean() < 0.65
    assert np.array_equal(mixed[~bitmapped], grey[~bitmapped])
    assert np.all(edge_strength(mixed[bitmapped]) > edge_strength(grey[bitmapped]))  # crisp


def test_a_quarter_turn_turns_a_horizontal_bar_upright():
    bar = np.zeros((1, 28, 28), dtype=np.uint8)
    bar[0, 13:15, 6:22] = 255
    quarter = np.array([[[0.0, 1.0], [-1.0, 0.0]]])
    out = transform(bar, AffineParams(quarter, np.zeros((1, 2))), normalize=False)[0]
    assert out.any(axis=0).sum() <= 4 and out.any(axis=1).sum() >= 14  # now a vertical bar


def test_thicker_strokes_add_ink_thinner_remove_it_without_erasing(digits):
    x = digits[0][:300]
    base = ink(change_stroke(x, 0.0))
    thicker, thickest = ink(change_stroke(x, 1.0)), ink(change_stroke(x, 2.0))
    thinner = change_stroke(x, -1.0)
    assert np.all(thicker > base) and np.all(thickest > thicker)
    assert np.all(ink(thinner) < base)
    # The thinnest strokes of MNIST are about 2 px: they must survive a 1 px thinning,
    # fainter at 28x28, full white again once normalized (as preprocess stretches ink).
    assert np.all(ink(thinner) > 0.2 * base) and np.all((thinner >= 64).sum(axis=(1, 2)) >= 10)
    normalized = change_stroke(x, -1.0, normalize=True)
    assert np.all(normalized.max(axis=(1, 2)) == 255)
    assert np.all((normalized >= 64).sum(axis=(1, 2)) >= 25)


def test_stroke_changes_out_of_range_and_wrong_inputs_are_refused(digits):
    with pytest.raises(ValueError, match=r"\[-1, 2\]"):
        change_stroke(digits[0][:2], -1.5)
    with pytest.raises(ValueError, match="uint8"):
        augment(digits[0][:2].astype(np.float32), 0)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        augment(digits[0][:2].reshape(2, 784), 0)


def test_random_maps_stay_in_their_ranges():
    params = random_affine_params(500, np.random.default_rng(0), rotation=15, shear=0.0,
                                  aspect=0.0, scale=(0.9, 1.1), shift=2)  # fmt: skip
    det = np.linalg.det(params.matrix)  # rotation x scale**2
    assert np.all(det > 0.9**2 - 1e-9) and np.all(det < 1.1**2 + 1e-9)
    angles = np.degrees(np.arctan2(params.matrix[:, 0, 1], params.matrix[:, 0, 0]))
    assert np.all(np.abs(angles) <= 15 + 1e-9) and np.all(np.abs(params.shift) <= 2)


def test_augmented_digits_stay_recognizable(digits, bundled):
    x, y = digits
    for out in (augment(x, 3), change_stroke(x, -1.0, normalize=True)):
        accuracy = float(np.mean(bundled.probabilities(out).argmax(axis=1) == y))
        assert accuracy >= 0.97


def test_the_bundled_model_ships_small_and_recognizes_mnist(digits, bundled):
    from mnistlab.engines import load_model

    paths = bundled_model_paths()
    assert paths[0] == bundled_model_path() and len(paths) == len(bundled.members) == 3
    assert all(p.is_file() for p in paths)
    assert sum(p.stat().st_size for p in paths) < 5 * 2**20  # the bound
    assert sum(load_model(p).count_params() for p in paths) == bundled.count_params() < 1_000_000
    x, y = digits
    accuracy = float(np.mean(bundled.probabilities(x).argmax(axis=1) == y))
    assert accuracy >= 0.99


def test_an_ensemble_reads_with_the_mean_of_its_members(digits):
    from mnistlab.engines import load_model

    x = digits[0][:50]
    members = [Recognizer(load_model(p)) for p in bundled_model_paths()]
    ensemble = Recognizer([m.model for m in members], name="all")
    mean = sum(m.probabilities(x) for m in members) / len(members)
    assert np.allclose(ensemble.probabilities(x), mean, atol=1e-12)
    features, probabilities = ensemble.features_and_probabilities(x)
    assert np.array_equal(probabilities, ensemble.probabilities(x))
    assert np.array_equal(features, members[0].features_and_probabilities(x)[0])  # the first's


def test_an_ensemble_of_models_that_read_different_inputs_is_refused():
    from mnistlab.errors import ModelFileError

    class Model:
        def __init__(self, shape):
            self.shape = shape

        def spec(self):
            return {"input_shape": self.shape}

    with pytest.raises(ModelFileError, match=r"mixed: the ensemble's models read different"):
        Recognizer([Model([1, 28, 28]), Model([784])], name="mixed")
