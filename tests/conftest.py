"""Test configuration: every test reads MNIST through the project's real data path.

The shared official files are served as a ``file://`` mirror (the same code path as a
download); the cache lives in ``MNISTLAB_HOME`` (CI sets it so decoded arrays are reused
across runs; otherwise a fresh temporary directory per session).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("MNISTLAB_TEST_DATASETS", REPO.parent / "shared" / "datasets")
).resolve()

os.environ.setdefault("MNISTLAB_MIRRORS", SHARED_DATASETS.as_uri())
os.environ.setdefault("MNISTLAB_HOME", tempfile.mkdtemp(prefix="mnistlab-test-home-"))
os.environ.setdefault("MPLBACKEND", "Agg")

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The real MNIST, Keras convention (uint8 images (N, 28, 28), uint8 labels)."""
    from mnistlab.datasets import load_data

    return load_data("mnist")


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and no system directories, so a test sees every fetch step."""
    home = tmp_path / "home"
    monkeypatch.setenv("MNISTLAB_HOME", str(home))
    monkeypatch.setenv("MNISTLAB_SYSTEM_DIRS", "")
    return home


requires_fashion = pytest.mark.skipif(
    not FASHION_DIR.exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; .ci/run does)",
)
