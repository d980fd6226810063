"""A profile corrects the model at once and only where it should: an empty profile is the
bundled model exactly, a taught picture then reads as its label, one profile's examples
never reach another's answers, teaching a few of one digit leaves the others as they were,
and what another process teaches is seen on the next prediction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mnistlab.handwriting.adapt import PersonalRecognizer, ProfileMemory
from mnistlab.handwriting.preprocess import WORK_MAX_SIDE, decode_image, preprocess_image
from mnistlab.handwriting.profiles import ProfileStore, UnknownProfileError
from mnistlab.handwriting.recognizer import Recognizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import writers_set


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.from_path()


@pytest.fixture
def personal(recognizer, tmp_path) -> PersonalRecognizer:
    return PersonalRecognizer(recognizer, ProfileStore(tmp_path / "p.sqlite", create=False))


@pytest.fixture(scope="module")
def test_digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    _, (x, y) = mnist
    return x[:2000], y[:2000]


def test_the_features_pass_gives_exactly_the_models_probabilities(recognizer, test_digits):
    x, _ = test_digits
    features, probs = recognizer.features_and_probabilities(x[:50])
    assert features.shape == (50, 128)
    assert np.array_equal(probs, recognizer.probabilities(x[:50]))


def test_an_empty_profile_answers_exactly_as_the_model(recognizer, personal, test_digits):
    x, _ = test_digits
    for image in x[:20]:
        alone = recognizer.recognize_pixels(image)
        read = personal.recognize_pixels(image, "default")  # never taught: no file at all
        assert read.digit == alone.digit
        assert np.array_equal(read.probabilities, alone.probabilities)
    assert not personal.store.exists()


def test_a_profile_taught_then_emptied_is_the_model_again(recognizer, personal, test_digits):
    x, _ = test_digits
    personal.teach(x[:3], [0, 0, 0], "anna")
    personal.store.forget("anna")
    personal.store.teach("anna", x[100:101], [5])
    personal.store.forget("anna")
    with pytest.raises(UnknownProfileError):
        personal.recognize_pixels(x[0], "anna")
    memory = ProfileMemory.empty()
    _, probs = recognizer.features_and_probabilities(x[:5])
    assert memory.adjust(np.zeros((5, 128)), probs) is probs


def test_a_correction_takes_effect_at_once(recognizer, personal, test_digits):
    x, y = test_digits
    image = x[0]
    wrong = (int(y[0]) + 3) % 10  # say it was another digit than the model reads
    assert recognizer.recognize_pixels(image).digit == y[0]
    [answer] = personal.teach(image[None], [wrong], "anna")
    assert answer.digit == wrong and answer.probabilities[wrong] > 0.79  # at least 4/5
    shifted = np.roll(image, 1, axis=1)  # the same writing, a pixel over
    assert personal.recognize_pixels(shifted, "anna").digit == wrong


def test_one_profiles_examples_never_change_anothers(recognizer, personal, test_digits):
    x, y = test_digits
    personal.teach(x[:1], [(int(y[0]) + 1) % 10], "ben")
    before = [personal.recognize_pixels(image, "default").probabilities for image in x[:10]]
    personal.teach(x[:10], [(int(d) + 5) % 10 for d in y[:10]], "anna")
    for image, was in zip(x[:10], before, strict=True):
        assert np.array_equal(personal.recognize_pixels(image, "default").probabilities, was)
    assert personal.recognize_pixels(x[0], "ben").digit == (int(y[0]) + 1) % 10
    assert [personal.recognize_pixels(i, "anna").digit for i in x[:10]] == [
        (int(d) + 5) % 10 for d in y[:10]
    ]


def flagged_ones(count: int) -> np.ndarray:
    """European 1s (long flag) from the writers set, as ``predict`` preprocesses them."""
    out = []
    seed = 0
    while len(out) < count:
        for d in writers_set.make_writers_set(200, seed=seed):
            if d.label == 1 and "flag" in d.style and len(out) < count:
                out.append(preprocess_image(decode_image(d.data, max_side=WORK_MAX_SIDE)))
        seed += 1
    return np.stack(out)


def test_teaching_a_few_of_one_digit_leaves_the_others_as_they_were(personal, test_digits):
    x, y = test_digits
    before = np.array([personal.recognize_pixels(i, "default").digit for i in x])
    personal.teach(flagged_ones(5), [1] * 5, "default")
    after = np.array([personal.recognize_pixels(i, "default").digit for i in x])
    others = y != 1
    assert (after[others] != before[others]).sum() <= 1  # of about 1,770 other digits
    assert (after == y).sum() >= (before == y).sum() - 1  # at most one more misread


def test_what_another_process_teaches_is_seen_next_time(recognizer, tmp_path, test_digits):
    x, y = test_digits
    path = tmp_path / "shared.sqlite"
    reader = PersonalRecognizer(recognizer, ProfileStore(path, create=False))
    writer = PersonalRecognizer(recognizer, ProfileStore(path, max_examples=3))
    wrong = [(int(d) + 1) % 10 for d in y[:4]]
    writer.teach(x[:1], wrong[:1], "anna")
    assert reader.recognize_pixels(x[0], "anna").digit == wrong[0]
    writer.teach(x[1:4], wrong[1:4], "anna")  # past the bound: x[0] is dropped
    assert len(reader.memory("anna")) == 3
    assert reader.recognize_pixels(x[0], "anna").digit == y[0]
    assert reader.recognize_pixels(x[3], "anna").digit == wrong[3]
    writer.store.forget("anna")
    with pytest.raises(UnknownProfileError, match="anna"):
        reader.recognize_pixels(x[3], "anna")


def test_only_the_default_profile_exists_without_teaching(personal, test_digits):
    x, _ = test_digits
    with pytest.raises(UnknownProfileError, match="'nobody'"):
        personal.recognize_pixels(x[0], "nobody")


def test_writers_keep_their_habits_across_their_digits():
    rng = np.random.default_rng(5)
    hand = writers_set.make_hand(rng)
    digits = writers_set.write_digits(hand, [1, 1, 7], rng)
    assert [d.style for d in digits] == [hand.styles[1], hand.styles[1], hand.styles[7]]
    assert {d.render for d in digits} == {hand.render}
    assert digits[0].data != digits[1].data  # the same habits, not the same picture


def test_the_teaching_benchmark_runs_on_a_tiny_slice(tmp_path):
    import json
    import subprocess

    out = tmp_path / "teach.json"
    done = subprocess.run(
        [sys.executable, str(Path(writers_set.__file__).parent / "bench_teach.py"),
         "--writers", "3", "--per-digit", "2", "--repeat", "5", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    for k in ("1", "3", "5"):
        row = figures["result"]["k"][k]
        assert set(row["per_digit"]) == {str(d) for d in range(10)}
        assert 0 <= row["all"]["before"] <= 1 and 0 <= row["all"]["after"] <= 1
    assert figures["cost"]["teach_p99_ms"] > 0 and figures["cost"]["full_profile"] == 500
    assert "untaught digits" in done.stdout and "cost" in done.stdout
