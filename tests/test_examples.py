"""The course notebooks in examples/ run top to bottom in a real Jupyter kernel (nbclient,
this venv's ipykernel) on a slice of MNIST (MNISTLAB_EXAMPLES_LIMIT), in a temporary working
directory; and fit's progress in Jupyter is one display per epoch, updated in place.

Each notebook's check: no cell errored, the kernel is this Python, the summary table and the
"Test accuracy" line are in the outputs, a plot came out inline as image/png, and training
showed one updating display per epoch with the epoch's logs, never a line per step.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIMIT = 600  # images to train and test on: each notebook runs in seconds
CELL_TIMEOUT_S = 300
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) - (\d+)/(\d+) - [\d.]+s - .*loss: [\d.]+ - "
                        r"accuracy: [\d.]+")
STEP_TEXT = re.compile(r"\b\d+/\d+\b.*(loss|ms/step|us/step)")
WHICH_PYTHON = "import sys; print(sys.executable)"


# ---- the kernel: this venv's Python ------------------------------------------------------------


def _python_of_kernel(name: str) -> str | None:
    """The executable jupyter_client would start for kernel ``name`` (None: no such
    kernelspec). A spec saying just "python" means this Python (jupyter_client's rule)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        return None
    names = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    return sys.executable if argv[0] in names else argv[0]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """"python3", made to be this Python: when the kernelspec jupyter_client finds is some
    other Python's, a temporary one (on JUPYTER_PATH, searched first) points at ours."""
    with pytest.MonkeyPatch.context() as mp:
        found = _python_of_kernel("python3")
        if found is None or Path(found).absolute() != Path(sys.executable).absolute():
            root = tmp_path_factory.mktemp("jupyter")
            spec = root / "kernels" / "python3"
            spec.mkdir(parents=True)
            (spec / "kernel.json").write_text(json.dumps({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (mnistlab tests)", "language": "python"}))
            mp.setenv("JUPYTER_PATH", str(root))
        yield "python3"


class _Client(nbclient.NotebookClient):
    """NotebookClient that also counts each cell's display updates (nbclient applies them
    in place, so the saved outputs alone do not show how often a display changed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: dict[int, int] = {}
        self.seconds: dict[int, float] = {}

    def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
        if msg.get("msg_type") == "update_display_data":
            self.updates[cell_index] = self.updates.get(cell_index, 0) + 1
        return super().process_message(msg, cell, cell_index)

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any,
                                 **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            self.seconds[cell_index] = time.perf_counter() - started


def run_notebook(name: str, kernel: str, workdir: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _Client]:
    """Execute examples/``name`` (with a first cell printing the kernel's Python) in
    ``workdir``; the kernel inherits this environment (MNISTLAB_MIRRORS, MNISTLAB_HOME)."""
    monkeypatch.setenv("MNISTLAB_EXAMPLES_LIMIT", str(LIMIT))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as in a notebook: %matplotlib inline
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WHICH_PYTHON))
    client = _Client(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb, client


# ---- what the outputs must show ----------------------------------------------------------------


def _text(output: Any) -> str:
    if output.output_type == "stream":
        return output.text
    return output.get("data", {}).get("text/plain", "")


def _all_text(nb: Any) -> str:
    return "\n".join(_text(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _cell(nb: Any, code: str) -> tuple[int, Any]:
    hits = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and code in c.source]
    assert len(hits) == 1, f"expected one cell with {code!r}, found {len(hits)}"
    return hits[0]


def check_common(nb: Any, client: _Client) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert nb.cells[0].outputs[0].text.strip() == sys.executable, "not this venv's kernel"
    text = _all_text(nb)
    assert 'Model: "sequential"' in text and "Total params:" in text, "no summary table"
    assert "Layer (type)" in text and "Output Shape" in text
    assert re.search(r"^Test accuracy: 0?\.\d+", text, re.M), "no 'Test accuracy' line"
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs if o.output_type in ("display_data", "execute_result")), \
        "no inline plot"


def check_progress(nb: Any, client: _Client, epochs: int | None = None) -> int:
    """The fit cell shows one display per epoch, in order, each ending as the epoch's line
    with its logs; no line per step anywhere. Returns how many epochs it showed."""
    index, cell = _cell(nb, "model.fit(")
    displays = [o for o in cell.outputs if o.output_type == "display_data"]
    streams = "".join(o.text for o in cell.outputs if o.output_type == "stream")
    lines = [o.data["text/plain"] for o in displays]
    assert lines, "fit showed no progress display"
    for k, line in enumerate(lines, 1):
        match = EPOCH_LINE.match(line)
        assert match, f"epoch display {k} is not the epoch's final line: {line!r}"
        assert int(match.group(1)) == k and match.group(3) == match.group(4), line
        assert "\n" not in line
    if epochs is not None:
        assert len(lines) == epochs, lines
    assert "Epoch" not in streams and not STEP_TEXT.search(streams), streams
    # each display was updated in place (at least to its final line), a few times a second
    updates = client.updates.get(index, 0)
    assert len(lines) <= updates <= 2 * len(lines) + 4 * client.seconds[index] + 4, updates
    for other in nb.cells:
        if other is not cell and other.cell_type == "code":
            assert not any(EPOCH_LINE.match(_text(o)) for o in other.outputs)
    return len(lines)


# ---- the notebooks -----------------------------------------------------------------------------


def test_notebooks_are_the_posts_with_imports_changed() -> None:
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4
        first = nb.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), path.name
        assert "changed" in first.source and "MNISTLAB_EXAMPLES_LIMIT" in first.source
        added = [c for c in nb.cells if c.cell_type == "code"
                 and c.source.startswith("# Added for mnistlab")]
        assert len(added) == 1 and "MNISTLAB_EXAMPLES_LIMIT" in added[0].source, path.name
        assert not any(o for c in nb.cells if c.cell_type == "code" for o in c.outputs), \
            f"{path.name} is committed with outputs"
    names = {p.name for p in EXAMPLES.glob("*.ipynb")}
    assert {"01_keras_mlp.ipynb", "02_keras_cnn.ipynb", "03_keras_callbacks.ipynb"} <= names


def test_01_keras_mlp(kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, client = run_notebook("01_keras_mlp.ipynb", kernel_name, tmp_path, monkeypatch)
    check_common(nb, client)
    assert check_progress(nb, client, epochs=10) == 10
    text = _all_text(nb)
    assert f"{LIMIT} training images, {LIMIT} test images" in text
    assert "Total params: 795,010" in text
    assert "misclassified out of 600" in text


def test_02_keras_cnn(kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, client = run_notebook("02_keras_cnn.ipynb", kernel_name, tmp_path, monkeypatch)
    check_common(nb, client)
    check_progress(nb, client, epochs=5)
    text = _all_text(nb)
    assert "Total params: 3,156,098" in text
    # validation_split=0.1 of 600 leaves 540 images: 17 steps of Keras's default batch, 32
    _, fit_cell = _cell(nb, "model.fit(")
    assert all(" - 17/17 - " in o.data["text/plain"] for o in fit_cell.outputs
               if o.output_type == "display_data")


def test_03_keras_callbacks(kernel_name: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    nb, client = run_notebook("03_keras_callbacks.ipynb", kernel_name, tmp_path, monkeypatch)
    check_common(nb, client)
    epochs = check_progress(nb, client)
    assert 1 <= epochs <= 15
    assert f"Trained for {epochs} epochs" in _all_text(nb)
    assert "Same predictions after loading: True" in _all_text(nb)
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "final.keras").is_file()


# ---- _Progress in Jupyter, without a kernel (the detection monkeypatched) ---------------------


class _FakeDisplays:
    """Stands in for IPython.display.display: records each display and its updates."""

    def __init__(self) -> None:
        self.shown: list[list[str]] = []  # per display: its texts, first to last

    def display(self, obj: dict, raw: bool = False, display_id: Any = None) -> Any:
        assert raw and display_id is True and set(obj) == {"text/plain"}
        texts = [obj["text/plain"]]
        self.shown.append(texts)

        class Handle:
            def update(self, obj: dict, raw: bool = False) -> None:
                assert raw
                texts.append(obj["text/plain"])

        return Handle()


@pytest.fixture
def jupyter(monkeypatch: pytest.MonkeyPatch) -> _FakeDisplays:
    import IPython.display

    from mnistlab.training import loop

    fake = _FakeDisplays()
    monkeypatch.setattr(loop._Progress, "_in_jupyter", staticmethod(lambda: True))
    monkeypatch.setattr(IPython.display, "display", fake.display)
    return fake


def _drive(progress: Any, epochs: int, steps: int, seconds_per_step: float) -> None:
    logs = {"loss": 0.5, "accuracy": 0.9}
    with progress:
        for epoch in range(epochs):
            for done in range(1, steps + 1):
                progress.batch(epoch, done, logs, done * seconds_per_step)
            progress.epoch_end(epoch, steps, {**logs, "val_loss": 0.4, "val_accuracy": 0.95},
                               steps * seconds_per_step)


def test_progress_in_jupyter_is_one_throttled_display_per_epoch(
        jupyter: _FakeDisplays, capsys: pytest.CaptureFixture[str]) -> None:
    from mnistlab.training.loop import LIVE_REFRESH_S, _Progress

    progress = _Progress(1, 3, 1000)
    assert progress.jupyter and progress.live
    _drive(progress, epochs=3, steps=1000, seconds_per_step=0.002)  # 2 s an epoch
    assert capsys.readouterr().out == ""
    assert len(jupyter.shown) == 3
    for epoch, texts in enumerate(jupyter.shown, 1):
        assert len(texts) <= 2 / LIVE_REFRESH_S + 2, texts  # throttled, not 1000 updates
        assert texts[0].startswith(f"Epoch {epoch}/3 - 1/1000 ")
        assert "\u2501" in texts[-2] or "\u2500" in texts[-2]  # a bar while it runs
        assert texts[-1] == (f"Epoch {epoch}/3 - 1000/1000 - 2.0s - 2ms/step - loss: 0.5000 "
                             "- accuracy: 0.9000 - val_loss: 0.4000 - val_accuracy: 0.9500")


@pytest.mark.parametrize("verbose", [0, 2])
def test_progress_in_jupyter_verbose_0_and_2(jupyter: _FakeDisplays, verbose: int,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from mnistlab.training.loop import _Progress

    progress = _Progress(verbose, 2, 50)
    assert not progress.jupyter and not progress.live
    _drive(progress, epochs=2, steps=50, seconds_per_step=0.01)
    out = capsys.readouterr().out
    assert jupyter.shown == []
    if verbose == 0:
        assert out == ""
    else:
        assert out.splitlines() == [
            f"Epoch {e}/2 - 50/50 - 0.5s - 10ms/step - loss: 0.5000 - accuracy: 0.9000 - "
            "val_loss: 0.4000 - val_accuracy: 0.9500" for e in (1, 2)]


def test_progress_outside_jupyter_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """Not in a kernel (pytest's stdout is no terminal): one plain line per epoch."""
    from mnistlab.training.loop import _Progress

    progress = _Progress(1, 2, 10)
    assert not progress.jupyter and not progress.live
    _drive(progress, epochs=2, steps=10, seconds_per_step=0.01)
    assert [line.split(" - ")[0] for line in capsys.readouterr().out.splitlines()] == \
        ["Epoch 1/2", "Epoch 2/2"]


def test_fit_in_jupyter_shows_one_display_per_epoch(
        jupyter: _FakeDisplays, capsys: pytest.CaptureFixture[str]) -> None:
    from mnistlab.keras import layers, models

    rng = np.random.default_rng(0)
    x, y = rng.random((256, 8), dtype=np.float32), rng.integers(0, 3, 256)
    model = models.Sequential([layers.Input((8,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=3, validation_split=0.25)  # verbose auto
    assert "Epoch" not in capsys.readouterr().out
    assert len(jupyter.shown) == 3 and len(history.history["loss"]) == 3
    for epoch, texts in enumerate(jupyter.shown, 1):
        assert EPOCH_LINE.match(texts[-1]) and texts[-1].startswith(f"Epoch {epoch}/3 - 24/24")
        assert "val_accuracy" in texts[-1]
        assert len(texts) < 24  # not one update per step
