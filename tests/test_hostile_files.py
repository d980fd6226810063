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
        try:  # VmHWM: this process image's own peak (ru_maxrss keeps the forking parent's)
            with open("/proc/self/status") as status:
                line = next(x for x in status if x.startswith("VmHWM:"))
            print(int(line.split()[1]) / 1024)
        except (OSError, StopIteration):
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
    "initializer unknown": (first_layer(kernel_initializer="orthogonal"), "kernel_initializer"),
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


# --- finding 5: the textbook pickle changes no state and takes bounded memory -------------

P3 = b"\x80\x03"
RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"
NDARRAY = b"cnumpy\nndarray\n"
NDARRAY_CALL = P3 + NDARRAY + b"(K\x05\x85C\x01bt" + b"R."  # numpy.ndarray((5,), b"b")


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def test_a_pickle_cannot_replace_the_ndarray_token() -> None:
    """Before: BUILD on the token set its __new__ to _reconstruct for the rest of the
    process, after which a plain ndarray((n,), b'b') call returned uninitialised memory."""
    from mnistlab.engines import legacy

    token_new = legacy._NdarrayToken.__dict__["__new__"]
    attack = (P3 + NDARRAY + b"N}X\x07\x00\x00\x00__new__" + RECONSTRUCT + b"s\x86b0"
              + NDARRAY + b"(" + binint(100_000_000) + b"\x85C\x01bt" + b"R.")
    with pytest.raises(legacy.UnsafePickleError, match="sets the state of the class"):
        legacy.safe_unpickle(attack)
    assert legacy._NdarrayToken.__dict__["__new__"] is token_new
    with pytest.raises(legacy.UnsafePickleError, match="ndarray directly"):
        legacy.safe_unpickle(NDARRAY_CALL)


def test_a_pickle_cannot_change_numpy_dtypes() -> None:
    """Before: BUILD reached NumPy's own float64 dtype object (its state, flags included)."""
    from mnistlab.engines.legacy import UnsafePickleError, safe_unpickle

    for flags in (b"K?", b"K\x01"):
        attack = (P3 + b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00"
                  b"<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + flags + b"tb.")
        with pytest.raises(UnsafePickleError, match="dtype's state"):
            safe_unpickle(attack)
    assert not np.dtype("f8").hasobject
    plain = safe_unpickle(P3 + b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R.")
    assert not isinstance(plain, np.dtype)  # a placeholder, never NumPy's shared object


@pytest.mark.parametrize("code", [b"O", b"V", b"U", b"S", b"M"])
def test_reconstruct_accepts_only_what_numpy_writes(code: bytes) -> None:
    """Before: _reconstruct(ndarray, (3,), b'O') returned an object array."""
    from mnistlab.engines.legacy import UnsafePickleError, safe_unpickle

    with pytest.raises(UnsafePickleError, match="never writes"):
        safe_unpickle(P3 + RECONSTRUCT + NDARRAY + b"K\x03\x85C\x01" + code + b"\x87R.")


@pytest.mark.parametrize("code", ["O8", "c16", "V8", "U4", "S4", "M8", "f16", "(2,)f8", "b"])
def test_only_plain_numeric_dtypes(code: str) -> None:
    from mnistlab.engines.legacy import UnsafePickleError, safe_unpickle

    raw = code.encode()
    attack = P3 + b"cnumpy\ndtype\nX" + struct.pack("<I", len(raw)) + raw + b"\x89\x88\x87R."
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_unpickle(attack)


PICKLE_PEAK = """
    import sys, tracemalloc
    from mnistlab.engines.legacy import safe_unpickle
    from mnistlab.errors import ModelFileError, UnsafePickleError
    tracemalloc.start()
    try:
        safe_unpickle(bytes.fromhex(sys.argv[1]))
        print("loaded", tracemalloc.get_traced_memory()[1])
    except (ModelFileError, UnsafePickleError) as error:
        print("refused", tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("name, data", [
    # _reconstruct(ndarray, (1_170_000_000,), b"b"): before, 1.17 GB allocated by 65 bytes
    ("reconstruct", P3 + RECONSTRUCT + NDARRAY + binint(1_170_000_000) + b"\x85C\x01b\x87R."),
    # LONG_BINPUT 0x07ffffff: before, the C unpickler grew its memo array to 2 GiB
    ("memo", b"\x80\x02Nr\xff\xff\xff\x07."),
    # a BUILD whose shape claims far more than the data holds
    ("state", P3 + RECONSTRUCT + NDARRAY + b"K\x00\x85C\x01b\x87R(K\x01" + binint(1 << 30)
     + b"\x85cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNN"
     + b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x08" + bytes(8) + b"tb."),
])
def test_tiny_pickles_take_bounded_memory(name: str, data: bytes) -> None:
    peak, said = peak_after(PICKLE_PEAK, data.hex())
    _, traced = said.split()
    assert int(traced) < 1 << 20, f"{name}: {int(traced) / 2**20:.0f} MiB traced"
    assert peak < PEAK_MIB


def test_arrays_are_bounded_by_the_file_size() -> None:
    """One array's bytes named 40 times (through the memo): refused once the arrays add up to
    more than twice the pickle's size."""
    import pickle

    from mnistlab.engines.legacy import UnsafePickleError, safe_unpickle

    row = np.zeros(1000, np.float64)
    data = pickle.dumps([row] * 3, protocol=3)  # shared: one array, referenced thrice
    assert all(a.shape == (1000,) for a in safe_unpickle(data))
    raw = row.tobytes()
    state = (b"(K\x01" + b"M\xe8\x03\x85" + b"h\x01" + b"\x89" + b"h\x02" + b"t")
    array = RECONSTRUCT + NDARRAY + b"K\x00\x85C\x01b\x87R" + state + b"b"
    attack = (P3 + b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNN"
              b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbq\x01" + b"B" + struct.pack("<I", len(raw))
              + raw + b"q\x020" + b"0" + b"](" + array * 40 + b"e.")
    with pytest.raises(UnsafePickleError, match="more bytes than the file"):
        safe_unpickle(attack)


def test_arrays_come_back_plain_writable_and_numeric() -> None:
    import pickle

    from mnistlab.engines.legacy import safe_unpickle

    weights = {"a": np.arange(6, dtype=">f4").reshape(2, 3), "b": np.asfortranarray(
        np.ones((3, 2), np.int16)), "c": np.array([True, False])}
    loaded = safe_unpickle(pickle.dumps(weights, protocol=3))
    for key, value in weights.items():
        assert type(loaded[key]) is np.ndarray and loaded[key].flags.writeable
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype


def test_deep_tuple_keys_and_odd_targets_are_refused() -> None:
    from mnistlab.engines.legacy import safe_unpickle

    deep = P3 + b"}" + b")" + b"\x85" * 200_000 + b"Ns."  # {((((...)))): None}
    with pytest.raises(ModelFileError, match="dict key is a tuple"):
        safe_unpickle(deep)
    with pytest.raises(ModelFileError, match="sets items of a list"):
        safe_unpickle(P3 + b"]K\x00Ns.")
    with pytest.raises(ModelFileError, match="appends to a dict"):
        safe_unpickle(P3 + b"}Na.")


def test_special_files_are_refused_by_type_before_reading(tmp_path: Path) -> None:
    from mnistlab.engines.legacy import import_weights, load_legacy_weights

    fifo = tmp_path / "w.pkl"
    os.mkfifo(fifo)
    for path in ([Path("/dev/zero")] if os.path.exists("/dev/zero") else []) + [fifo]:
        for load in (load_legacy_weights, import_weights):
            with pytest.raises(ModelFileError, match="not a regular file"):
                load(path)
    if os.path.exists("/dev/zero"):
        with open("/dev/zero", "rb") as handle, pytest.raises(ModelFileError, match="regular"):
            load_legacy_weights(handle)


def test_load_legacy_weights_takes_an_open_binary_file(tmp_path: Path) -> None:
    import io
    import pickle

    from mnistlab.engines.legacy import LEGACY_SHAPES, load_legacy_weights

    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(s) for k, s in LEGACY_SHAPES.items()}
    path = tmp_path / "sample_weight.pkl"
    path.write_bytes(pickle.dumps(weights, protocol=3))
    with open(path, "rb") as f:  # as the textbook does
        loaded = load_legacy_weights(f)
    np.testing.assert_array_equal(loaded["W1"], weights["W1"])
    assert load_legacy_weights(io.BytesIO(path.read_bytes()))["b3"].shape == (10,)
    with open(path) as text, pytest.raises(ModelFileError, match="binary mode"):
        load_legacy_weights(text)
    with pytest.raises(ModelFileError, match="too large"):
        load_legacy_weights(io.BytesIO(bytes(9 * 1024 * 1024)))


def test_a_model_outside_the_bounds_is_not_saved(tmp_path: Path) -> None:
    """mnistlab never writes a file it would refuse to read."""
    class Huge:
        def spec(self) -> dict:
            spec = Sequential([Dense(2, input_shape=(784,))], seed=0).spec()
            return spec | {"layers": [{"type": "Dense", "units": 70_000}]}

        def get_weights(self) -> dict:
            raise AssertionError("the spec is checked first")

    with pytest.raises(ModelFileError, match="not saved, the model is outside"):
        save_model(Huge(), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
