"""The textbook pickle importer: malicious pickles never run, bad files fail clearly, the real one
classifies 9,352 of the 10,000 MNIST test images."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mnistlab.engines.legacy import LEGACY_SHAPES, load_legacy_weights, safe_unpickle
from mnistlab.errors import ModelFileError, UnsafePickleError

SAMPLE_WEIGHT = Path(
    os.environ.get(
        "MNISTLAB_SAMPLE_WEIGHT",
        Path(__file__).resolve().parents[2] / "shared" / "reference" / "sample_weight.pkl",
    )
)
needs_sample = pytest.mark.skipif(
    not SAMPLE_WEIGHT.is_file(), reason=f"reference pickle not found at {SAMPLE_WEIGHT}"
)


def _good_dict(rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in LEGACY_SHAPES.items()}


def _write(tmp_path: Path, data: bytes, name: str = "w.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- malicious pickles: refused, and their side effect never happens -------------------------


class _Reduce:
    """Pickles as ``func(*args)``: what an attacker's file does on plain ``pickle.load``."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, object]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.eval": _Reduce(builtins.eval, (touch,)),
        "builtins.exec": _Reduce(builtins.exec, (touch,)),
        "subprocess.call": _Reduce(subprocess.call, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"]
)
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path: Path, attack: str, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    # Hide the payload inside an otherwise valid weight dict.
    payload = {"W9": _attacks(marker)[attack], **_good_dict()}
    path = _write(tmp_path, pickle.dumps(payload, protocol=protocol))
    with pytest.raises(UnsafePickleError) as info:
        load_legacy_weights(path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message
    assert attack.split(".")[1] in message or "posix.system" in message


def test_the_payload_really_would_run(tmp_path: Path) -> None:
    """Guard the test above: plain pickle.load does create the marker."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(_attacks(marker)["builtins.exec"])
    pickle.loads(data)  # deliberately unsafe, on our own payload
    assert marker.exists()


def test_global_named_through_the_memo_is_refused(tmp_path: Path) -> None:
    """STACK_GLOBAL fed from the memo (not the two strings just before it) is still caught."""
    marker = tmp_path / "pwned"
    p = pickle
    data = b"".join(
        [
            p.PROTO + bytes([4]),
            p.SHORT_BINUNICODE + bytes([8]) + b"builtins" + p.MEMOIZE,  # memo 0
            p.SHORT_BINUNICODE + bytes([4]) + b"exec" + p.MEMOIZE,  # memo 1
            p.POP + p.POP,
            p.BINGET + bytes([0]) + p.BINGET + bytes([1]) + p.STACK_GLOBAL,
            p.SHORT_BINUNICODE
            + bytes([len(f"open({str(marker)!r}, 'w').close()")])
            + f"open({str(marker)!r}, 'w').close()".encode(),
            p.TUPLE1 + p.REDUCE + p.STOP,
        ]
    )
    pickletools.dis(data, out=io.StringIO())  # well-formed
    with pytest.raises(UnsafePickleError, match=r"builtins\.exec"):
        safe_unpickle(data)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_find_class_refuses_even_without_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    """The pre-scan is a convenience; the unpickler's allow-list alone must stop every attack."""
    import mnistlab.engines.legacy

    monkeypatch.setattr(mnistlab.engines.legacy, "_scan_globals", lambda data, source: None)
    marker = tmp_path / "pwned"
    for attack in _attacks(marker).values():
        with pytest.raises(UnsafePickleError, match="refusing"):
            safe_unpickle(pickle.dumps([attack], protocol=protocol), "evil.pkl")
        assert not marker.exists()


def test_object_dtype_array_is_refused() -> None:
    data = pickle.dumps({"W1": np.array([1, "x"], dtype=object)}, protocol=3)
    with pytest.raises(UnsafePickleError):
        safe_unpickle(data)


def test_ndarray_subclass_is_refused() -> None:
    data = pickle.dumps(np.ma.masked_array([1.0, 2.0]), protocol=3)
    with pytest.raises(UnsafePickleError):
        safe_unpickle(data)


def test_direct_ndarray_call_is_refused() -> None:
    # REDUCE on numpy.ndarray itself (not through _reconstruct): could allocate at will.
    data = b"\x80\x03cnumpy\nndarray\nK\x05\x85\x85R."
    with pytest.raises(UnsafePickleError, match="ndarray"):
        safe_unpickle(data)


# --- well-formed pickles of the wrong thing ------------------------------------------------


@pytest.mark.parametrize(
    "obj, match",
    [
        ([1.0, 2.0], "found list"),
        (np.zeros((784, 50), np.float32), "found ndarray"),
        ({"W1": np.zeros((784, 50), np.float32)}, "missing b1"),
        ({**_good_dict(), "W1": np.zeros((50, 784), np.float32)}, r"W1 has shape \(50, 784\)"),
        ({**_good_dict(), "b3": np.zeros((1, 10), np.float32)}, r"b3 has shape \(1, 10\)"),
        ({**_good_dict(), "extra": np.zeros(3)}, "unexpected keys 'extra'"),
        ({**_good_dict(), "b2": np.zeros(100, np.int64)}, "b2 has dtype int64"),
        ({**_good_dict(), "b1": np.full(50, np.nan, np.float32)}, "NaN"),
        ({**_good_dict(), "W2": 3.0}, "W2 is a float"),
    ],
    ids=["list", "bare-array", "missing", "transposed", "row-bias", "extra", "int", "nan", "float"],
)
def test_wrong_content_is_a_model_file_error(tmp_path: Path, obj: object, match: str) -> None:
    path = _write(tmp_path, pickle.dumps(obj, protocol=3))
    with pytest.raises(ModelFileError, match=match):
        load_legacy_weights(path)


@pytest.mark.parametrize("keep", [0, 1, 20, 1000, -1])
def test_truncated_file_is_a_clear_error(tmp_path: Path, keep: int) -> None:
    data = pickle.dumps(_good_dict(), protocol=3)
    path = _write(tmp_path, data[:keep])
    with pytest.raises(ModelFileError, match=r"empty|truncated|cannot unpickle"):
        load_legacy_weights(path)


def test_trailing_garbage_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, pickle.dumps(_good_dict(), protocol=3) + b"extra")
    with pytest.raises(ModelFileError, match="unexpected bytes"):
        load_legacy_weights(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_legacy_weights(tmp_path / "absent.pkl")


def test_round_trip_of_numpy1_and_numpy2_style_pickles(tmp_path: Path) -> None:
    weights = _good_dict()
    weights["W1"] = np.asfortranarray(weights["W1"])
    data = pickle.dumps(weights, protocol=3)  # this NumPy writes numpy._core...
    for name, blob in {
        "numpy2": data,
        "numpy1": data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"),
    }.items():
        loaded = load_legacy_weights(_write(tmp_path, blob, f"{name}.pkl"))
        for key, value in weights.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].flags.c_contiguous


# --- the real file ---------------------------------------------------------------------------


@needs_sample
def test_reference_pickle_loads_c_contiguous() -> None:
    weights = load_legacy_weights(SAMPLE_WEIGHT)
    assert {k: v.shape for k, v in weights.items()} == LEGACY_SHAPES
    assert all(v.flags.c_contiguous and v.dtype == np.float32 for v in weights.values())


def _load_mnist():  # type: ignore[no-untyped-def]
    try:
        from mnistlab import load_mnist
    except ImportError:
        try:
            from mnistlab.datasets import load_mnist
        except ImportError as error:
            pytest.skip(f"mnistlab.datasets is not importable yet ({error})")
    return load_mnist


@needs_sample
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_pickle_classifies_9352_test_images(dtype: str) -> None:
    pytest.importorskip("mnistlab.engines.numpy", reason="the NumPy engine is not written yet")
    load_mnist = _load_mnist()
    from mnistlab.engines.legacy import import_weights

    (_, _), (x_test, t_test) = load_mnist(normalize=True, flatten=True, one_hot_label=False)
    model = import_weights(SAMPLE_WEIGHT, dtype=dtype)
    assert model.spec()["preprocess"]["scale"] == "unit"
    y = model.predict(x_test.astype(dtype))
    assert y.shape == (10_000, 10)
    assert int(np.sum(np.argmax(y, axis=1) == t_test)) == 9_352


@needs_sample
def test_bench_inference_command_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """`mnistlab bench inference` on a few images: three modes, the same accuracy, exit 0."""
    import argparse

    pytest.importorskip("mnistlab.engines.numpy", reason="the NumPy engine is not written yet")
    _load_mnist()
    from mnistlab.cli.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "inference", "--weights", str(SAMPLE_WEIGHT), "--limit", "300", "--repeat", "1"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for mode in ("image by image", "batches of 100", "one batch"):
        assert mode in out
    assert out.count("0.9") >= 3  # the accuracy column, once per mode


@pytest.mark.parametrize("flag", ["--batch-size", "--repeat", "--limit"])
def test_bench_inference_refuses_counts_below_one_with_a_usage_error(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from mnistlab.cli.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["bench", "inference", flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_bench_inference_without_weights_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistlab.cli.bench import resolve_weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNISTLAB_SAMPLE_WEIGHT", raising=False)
    with pytest.raises(ModelFileError, match="--weights"):
        resolve_weights(None)
