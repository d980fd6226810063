"""Reading a person's way of writing: the model's answer, corrected by what they taught.

No retraining. Each taught example is kept as the model's penultimate features (what its
last Dense layer reads; see ``Recognizer.features_and_probabilities``). A new digit that
lies close to a taught one, by cosine similarity above ``SIMILARITY_FLOOR``, gets a vote
for that example's label, growing to ``VOTE_WEIGHT`` for an exact copy; the votes (the
nearest example of each digit counts) are added to the model's probabilities and the sum
renormalised. So:

- a correction takes effect at once: the taught image itself then reads as its label;
- a digit far from every taught example reads exactly as the model reads it, and an empty
  profile is the model itself (``adjust`` returns the model's probabilities unchanged);
- a profile is one person's memory: nothing in it is shared with another profile.

The two constants were chosen on writers made with another seed than the benchmark's
(``benchmarks/bench_teach.py --tune --writers 100``): with a lower floor, or a weight of 8,
a digit not taught now and then turns into a taught one (a 0 into a writer's taught 8);
0.85 and 4 keep every untaught digit as it was, while one to three taught examples fix most
repeats of a misread style (an exact copy then gets at least 4/5 of the probability). The
floor was 0.8 until the recognizer read softened views (``handwriting.views``), whose
features lie a little closer together.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from mnistlab.handwriting.profiles import DEFAULT_PROFILE, ProfileStore, check_label, check_name
from mnistlab.handwriting.recognizer import Prediction, Recognizer

SIMILARITY_FLOOR = 0.85
"""Cosine similarity of features below which a taught example has no say."""
VOTE_WEIGHT = 4.0
"""A taught example's vote for an identical digit, against the model's total of 1."""


@dataclass(frozen=True)
class ProfileMemory:
    """A profile's examples in the model's feature space: unit-length rows and labels."""

    features: np.ndarray  # (n, F) float32, rows of length 1
    labels: np.ndarray  # (n,) int64
    ids: np.ndarray  # (n,) int64, the examples' ids in the profile database

    @classmethod
    def empty(cls) -> ProfileMemory:
        """The memory of a profile that has been taught nothing."""
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, 0), dtype=np.float32), none, none)

    @classmethod
    def from_features(
        cls, features: np.ndarray, labels: np.ndarray, ids: np.ndarray
    ) -> ProfileMemory:
        """A memory of ``features`` (any length; normalised here) with their labels."""
        return cls(_unit_rows(features), np.asarray(labels, np.int64), np.asarray(ids, np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def votes(self, features: np.ndarray) -> np.ndarray:
        """(N, 10) votes: for each digit, the vote of its nearest taught example."""
        votes = np.zeros((len(features), 10))
        if not len(self):
            return votes
        similarity = _unit_rows(features) @ self.features.T  # (N, n)
        strength = np.clip((similarity - SIMILARITY_FLOOR) / (1 - SIMILARITY_FLOOR), 0, 1)
        for digit in np.unique(self.labels):
            votes[:, digit] = strength[:, self.labels == digit].max(axis=1)
        return VOTE_WEIGHT * votes**2

    def adjust(self, features: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """The model's ``probabilities`` (N, 10) with this profile's votes for ``features``
        (N, F) added and renormalised; the probabilities themselves when nothing is close."""
        votes = self.votes(features)
        touched = votes.any(axis=1)
        if not touched.any():
            return probabilities
        out = probabilities.copy()
        blended = probabilities[touched] + votes[touched]
        out[touched] = blended / blended.sum(axis=1, keepdims=True)
        return out


def _unit_rows(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class PersonalRecognizer:
    """A recognizer that reads with profiles from a ``ProfileStore``.

    Keeps each profile's memory (features of its examples) and rebuilds only the part that
    changed when the profile's revision moves, which another process may have done: one
    cheap query a prediction, and features computed only for examples not seen before.
    Thread-safe. The ``default`` profile exists implicitly (empty until taught); any other
    name must have been taught before it can be read with.
    """

    def __init__(self, recognizer: Recognizer, store: ProfileStore) -> None:
        self.recognizer = recognizer
        self.store = store
        self._memories: dict[str, tuple[tuple[int, int], ProfileMemory]] = {}
        self._lock = threading.Lock()

    def memory(self, profile: str) -> ProfileMemory:
        """The current memory of ``profile`` (UnknownProfileError for a name never taught,
        other than ``default``)."""
        check_name(profile)
        revision = self.store.revision(profile)
        if revision is None:
            if profile == DEFAULT_PROFILE:
                return ProfileMemory.empty()
            self.store.info(profile)  # raises UnknownProfileError, naming the database
        with self._lock:
            cached = self._memories.get(profile)
            if cached is not None and cached[0] == revision:
                return cached[1]
            memory = self._refresh(profile, cached[1] if cached else ProfileMemory.empty())
            self._memories[profile] = (revision, memory)
            return memory

    def _refresh(self, profile: str, old: ProfileMemory) -> ProfileMemory:
        """``old`` brought up to date: the rows of examples no longer there dropped, the
        examples added since appended (ids only grow, so those are the ones past its
        newest), their features computed now."""
        keep = np.isin(old.ids, self.store.example_ids(profile))
        fresh = self.store.examples(profile, after_id=int(old.ids.max()) if len(old) else 0)
        if not len(fresh):
            return ProfileMemory(old.features[keep], old.labels[keep], old.ids[keep])
        features, _ = self.recognizer.features_and_probabilities(fresh.images)
        added = ProfileMemory.from_features(features, fresh.labels, fresh.ids)
        if not keep.any():
            return added
        return ProfileMemory(
            np.vstack([old.features[keep], added.features]),
            np.concatenate([old.labels[keep], added.labels]),
            np.concatenate([old.ids[keep], added.ids]),
        )

    def recognize_pixels(self, pixels: np.ndarray, profile: str | None) -> Prediction:
        """A 28x28 MNIST-form image read with ``profile`` (None: the model alone)."""
        if profile is None:
            return self.recognizer.recognize_pixels(pixels)
        memory = self.memory(profile)
        if not len(memory):
            return self.recognizer.recognize_pixels(pixels)
        features, probs = self.recognizer.features_and_probabilities(pixels[None])
        adjusted = memory.adjust(features, probs)[0]
        return Prediction(int(np.argmax(adjusted)), adjusted, pixels)

    def teach(self, images: np.ndarray, labels: list[int], profile: str) -> list[Prediction]:
        """Store (MNIST-form) ``images`` with their ``labels`` under ``profile``; returns what
        each now reads as with the profile."""
        checked = [check_label(label) for label in labels]
        self.store.teach(profile, images, checked)
        return [self.recognize_pixels(image, profile) for image in np.asarray(images)]
