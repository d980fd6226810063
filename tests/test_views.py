"""The recognizer's test-time views: each digit softened, as it is and turned 14 degrees
either way; the probabilities are the mean over views and models, and ``views=False``
reads the digit once, exactly as the model alone does."""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab.handwriting.recognizer import Recognizer
from mnistlab.handwriting.views import VIEW_ANGLES, reading_views, rotate, soften


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    _, (x, y) = mnist
    return x[:300], y[:300]


def test_every_view_of_a_batch_comes_in_turn_view_0_the_softened_digit(digits):
    x, _ = digits
    views = reading_views(x[:7])
    assert views.shape == (len(VIEW_ANGLES) * 7, 28, 28) and views.dtype == np.uint8
    assert np.array_equal(views[:7], soften(x[:7]))
    assert np.array_equal(views[7:14], rotate(soften(x[:7]), VIEW_ANGLES[1]))


def test_softening_spreads_ink_and_keeps_the_brightest_pixel(digits):
    x, _ = digits
    soft = soften(x[:20])
    assert np.array_equal(soft.max(axis=(1, 2)), x[:20].max(axis=(1, 2)))
    assert ((soft > 0).sum(axis=(1, 2)) > (x[:20] > 0).sum(axis=(1, 2))).all()
    one_dot = np.zeros((1, 28, 28), np.uint8)
    one_dot[0, 14, 14] = 255
    dot = soften(one_dot)[0]
    assert dot[14, 14] == 255 and dot[14, 13] == dot[14, 15] == dot[13, 14] == dot[15, 14] > 20
    assert not soften(np.zeros((2, 28, 28), np.uint8)).any()  # blank stays blank, no NaN


def test_turning_goes_counter_clockwise_about_the_centre(digits):
    x, _ = digits
    assert np.array_equal(rotate(x[:5], 0.0), x[:5])
    assert np.array_equal(rotate(x[:5], 90.0), np.rot90(x[:5], 1, axes=(1, 2)))
    assert np.array_equal(rotate(x[:5], -90.0), np.rot90(x[:5], -1, axes=(1, 2)))
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 4:24, 13:15] = 255  # an upright stroke: turned 14 degrees it leans left at the top
    turned = rotate(bar, 14.0)[0]
    top, bottom = turned[4:8].nonzero()[1].mean(), turned[20:24].nonzero()[1].mean()
    assert top < 13 < 14 < bottom


def test_one_view_reads_exactly_as_the_model_alone(digits):
    x, _ = digits
    alone = Recognizer.from_path(views=False)
    expected = np.mean([m.predict(alone.model_input(x[:10])) for m in alone.members], axis=0)
    assert np.allclose(alone.probabilities(x[:10]), expected, atol=1e-7)


def test_the_views_probabilities_are_the_mean_over_views_and_models(digits):
    x, y = digits
    viewed, alone = Recognizer.from_path(), Recognizer.from_path(views=False)
    per_view = [alone.probabilities(v) for v in np.split(reading_views(x[:10]), len(VIEW_ANGLES))]
    assert np.allclose(viewed.probabilities(x[:10]), np.mean(per_view, axis=0), atol=1e-7)
    assert (viewed.probabilities(x).argmax(1) == y).mean() >= 0.99  # MNIST reads as before


def test_an_empty_batch_reads_as_no_probabilities():
    empty = np.zeros((0, 28, 28), np.uint8)
    assert reading_views(empty).shape == (0, 28, 28)
    assert Recognizer.from_path().probabilities(empty).shape == (0, 10)


def test_model_files_load_as_one_ensemble_and_a_missing_one_is_named(digits, tmp_path):
    from mnistlab.errors import ModelFileError
    from mnistlab.handwriting.recognizer import bundled_model_paths

    x, _ = digits
    bundled, loaded = Recognizer.from_path(), Recognizer.from_paths(bundled_model_paths())
    assert loaded.name == bundled.name and len(loaded.members) == 3
    assert np.array_equal(loaded.probabilities(x[:5]), bundled.probabilities(x[:5]))
    with pytest.raises(ModelFileError, match=r"nothing\.safetensors: no such model file$"):
        Recognizer.from_paths([*bundled_model_paths(), tmp_path / "nothing.safetensors"])
