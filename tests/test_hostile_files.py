"""Hostile input files: model files and textbook pickles crafted to exhaust memory, recurse,
hang or slip past the checks. Each test is built from a reproduction in the issue "Bounded
memory and verified data on every input path"; where memory was the finding, the peak is
measured in a fresh subprocess."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from mnistlab import Sequential, cli
from mnistlab.engines.io import DIGEST_KEY, SPEC_KEY, save_model
from mnistlab.engines.numpy import load_model
from mnistlab.engines.spec import MAX_PARAMS, expected_shapes, validate_spec
from mnistlab.errors import ModelFileError
from mnistlab.nn import Conv2D, Dense, Flatten, MaxPooling2D

PEAK_MIB = 150  # a fresh interpreter with NumPy and mnistlab is ~40 MiB


def peak_after(code: str, *args: str) -> tuple[float, str]:
    """(peak RSS in MiB, last output line) of ``code`` run in a fresh interpreter."""
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import resource
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    *lines, peak = done.stdout.strip().splitlines()
    return float(peak), (lines[-1] if lines else "")


LOAD = """
    import sys
    from mnistlab.errors import ModelFileError
    from mnistlab.engines.numpy import load_model
    try:
        load_model(sys.argv[1])
        print("loaded")
    except ModelFileError as error:
        print("ModelFileError:", error)
"""


def parts(path: Path) -> tuple[dict, dict, dict]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    return header, dict(safetensors.numpy.load(data)), header["__metadata__"]


@pytest.fixture
def mlp_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.safetensors"
    save_model(Sequential([Dense(10, "softmax", input_shape=(784,))], seed=0), path)
    return path


def with_spec(path: Path, edit, name: str = "edited.safetensors") -> Path:
    """A copy of ``path`` whose spec text is ``edit(spec dict)`` (a str is used as is)."""
    _, tensors, metadata = parts(path)
    spec = json.loads(metadata[SPEC_KEY])
    text = edit(spec)
    out = path.parent / name
    out.write_bytes(safetensors.numpy.save(tensors, metadata=metadata | {
        SPEC_KEY: text if isinstance(text, str) else json.dumps(text)}))
    return out


def first_layer(**changes):
    def edit(spec: dict) -> dict:
        spec["layers"][0].update(changes)
        return spec
    return edit


# --- finding 4: the spec is validated, and tensor shapes read from the header, first ------


def test_dense_200000_in_a_31_kb_file_is_refused_in_bounded_memory(mlp_file: Path) -> None:
    """Before: 1.9 GiB and 4.8 s building the model, then a shape mismatch."""
    for units in (200_000, 60_000):  # over the schema's bound, and within it
        path = with_spec(mlp_file, first_layer(units=units), f"u{units}.safetensors")
        assert path.stat().st_size < 40_000
        peak, said = peak_after(LOAD, str(path))
        assert said.startswith("ModelFileError:"), said
        assert peak < PEAK_MIB, f"{peak:.0f} MiB for Dense({units})"
    assert "(Dense).units: must be between 1 and 65536" in load_error(
        with_spec(mlp_file, first_layer(units=200_000)))
    assert "'0.W' has shape (784, 10), the spec needs (784, 60000)" in load_error(
        with_spec(mlp_file, first_layer(units=60_000)))


def load_error(path: Path) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    return message


HOSTILE_SPECS = {
    "units 10**12": (first_layer(units=10**12), "units: must be between"),
    "units 1e400": (lambda s: json.dumps(first_layer(units=0)(s)).replace(
        '"units": 0', '"units": 1e400'), "units: must be an integer, got float"),
    "units NaN": (lambda s: json.dumps(first_layer(units=0)(s)).replace(
        '"units": 0', '"units": NaN'), "not valid JSON"),
    "units 5000 digits": (lambda s: json.dumps(first_layer(units=0)(s)).replace(
        '"units": 0', '"units": ' + "9" * 5000), "not valid JSON"),
    "units true": (first_layer(units=True), "units: must be an integer, got bool"),
    "units 10.0": (first_layer(units=10.0), "units: must be an integer, got float"),
    "nested 50000 deep": (lambda s: json.dumps(s)[:-1] + ', "x": ' + "[" * 50_000
                          + "]" * 50_000 + "}", "nested more than"),
    "type is a list": (first_layer(type=["Dense"]), "unknown layer type a list"),
    "unknown type": (first_layer(type="Conv3D"), "Conv3D"),
    "preprocess an int": (lambda s: s | {"preprocess": 3}, "preprocess: must be an object"),
    "unknown scale": (lambda s: s | {"preprocess": {"scale": "x"}}, "preprocess.scale"),
    "unknown top key": (lambda s: s | {"evil": 1}, "unknown key 'evil'"),
    "unknown layer key": (first_layer(input_shape=[784]), "unknown key 'input_shape'"),
    "activation an int": (first_layer(activation=3), "activation: must be one of"),
    "initializer unknown": (first_layer(kernel_initializer="ones"), "kernel_initializer"),
    "input_shape huge": (lambda s: s | {"input_shape": [10**9]}, "input_shape"),
    "input_shape 2-d": (lambda s: s | {"input_shape": [28, 28]}, "input_shape"),
    "no layers": (lambda s: s | {"layers": []}, "layers"),
    "dtype float16": (lambda s: s | {"dtype": "float16"}, "dtype"),
    "version bool": (lambda s: s | {"version": True}, "version"),
    "spec a list": (lambda s: [s], "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_specs_are_model_file_errors(mlp_file: Path, case: str) -> None:
    """Before: MemoryError, OverflowError, RecursionError, TypeError or KeyError tracebacks."""
    edit, fragment = HOSTILE_SPECS[case]
    message = load_error(with_spec(mlp_file, edit))
    assert "invalid model spec" in message and fragment in message, message


def test_hostile_specs_through_mnistlab_eval_end_without_a_traceback(
    mlp_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for case in ("units 1e400", "nested 50000 deep", "type is a list", "preprocess an int"):
        path = with_spec(mlp_file, HOSTILE_SPECS[case][0])
        assert cli.main(["eval", str(path), "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("mnistlab: error: ") and "Traceback" not in err, err


def test_a_header_nested_deeply_is_refused(mlp_file: Path) -> None:
    header, _, _ = parts(mlp_file)
    data = mlp_file.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    text = json.dumps(header)[:-1] + ', "z": ' + "[" * 50_000 + "]" * 50_000 + "}"
    mlp_file.write_bytes(struct.pack("<Q", len(text)) + text.encode() + data[8 + size :])
    assert "nested more than" in load_error(mlp_file)


def rewrite_header(path: Path, change) -> Path:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    return path


def test_a_bf16_tensor_is_refused_by_its_header_entry(mlp_file: Path) -> None:
    """Before: KeyError: 'BF16'."""
    def bf16(header: dict) -> None:
        header["0.b"].update(dtype="BF16", shape=[20])
    assert "'0.b' is bfloat16, the spec says float32" in load_error(rewrite_header(mlp_file, bf16))


@pytest.mark.parametrize("change, fragment", [
    (lambda h: h["0.b"].update(data_offsets=[0, 40]), "starts at byte"),
    (lambda h: h["0.W"].update(data_offsets=[0, 10**15]), "claims"),
    (lambda h: h["0.W"].update(shape=[784, -10]), "malformed shape"),
    (lambda h: h["0.W"].update(shape="784"), "malformed shape"),
    (lambda h: h["0.W"].update(data_offsets=[1.5, 2]), "malformed data offsets"),
    (lambda h: h["0.W"].update(extra=1), "malformed header entry"),
    (lambda h: h.update({"0.W": [1]}), "malformed header entry"),
    (lambda h: h["__metadata__"].update(x=[1]), "metadata values must be strings"),
    (lambda h: h["__metadata__"].update({DIGEST_KEY: "x" * 64}), "malformed weights checksum"),
])
def test_header_entries_are_checked_before_the_data_is_read(mlp_file: Path, change,
                                                            fragment: str) -> None:
    assert fragment in load_error(rewrite_header(mlp_file, change))


def test_extra_data_after_the_tensors_is_refused(mlp_file: Path) -> None:
    mlp_file.write_bytes(mlp_file.read_bytes() + bytes(64))
    assert "truncated or padded tensor data" in load_error(mlp_file)


def test_a_valid_cnn_spec_gives_its_shapes_without_building() -> None:
    model = Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(1, 8, 8)),
                        MaxPooling2D(2), Flatten(), Dense(5, "softmax")], seed=0)
    spec = model.spec()
    assert validate_spec(spec) is spec
    assert expected_shapes(spec) == {k: v.shape for k, v in model.get_weights().items()}
    wide = {**spec, "layers": [{"type": "Flatten"}] + [{"type": "Dense", "units": 65536}] * 2}
    with pytest.raises(ModelFileError, match=f"over {MAX_PARAMS} weights"):
        validate_spec(wide)


# --- the checksum -----------------------------------------------------------------------


def test_a_file_without_its_checksum_is_refused_unless_allowed(mlp_file: Path) -> None:
    """Before: deleting the checksum entry let tampered weights load silently."""
    _, tensors, metadata = parts(mlp_file)
    tampered = {k: v + 1 for k, v in tensors.items()}
    del metadata[DIGEST_KEY]
    mlp_file.write_bytes(safetensors.numpy.save(tampered, metadata=metadata))
    assert "no weights checksum" in load_error(mlp_file)
    model = load_model(mlp_file, allow_unverified=True)  # the caller vouches for the weights
    np.testing.assert_array_equal(model.get_weights()["0.b"], tampered["0.b"])


def test_every_file_mnistlab_writes_carries_its_checksum(mlp_file: Path) -> None:
    _, _, metadata = parts(mlp_file)
    assert len(metadata[DIGEST_KEY]) == 64
    load_model(mlp_file)


# --- special files ----------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_by_type() -> None:
    assert "not a regular file" in load_error(Path("/dev/zero"))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    assert "not a regular file" in load_error(fifo)  # an open() would wait for a writer
