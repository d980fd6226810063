"""Fuzzing the two untrusted-file readers: mutations of a valid small model file (bytes, and
the spec and tensor entries of its header) and of a small valid textbook-style pickle (bytes,
and opcodes spliced in). Whatever the mutation, loading either succeeds or raises
ModelFileError / UnsafePickleError (mnistlab.errors): never another exception, never a hang.
About 20 s in all."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab import Sequential
from mnistlab.engines.io import save_model
from mnistlab.engines.legacy import load_legacy_weights, safe_unpickle
from mnistlab.engines.numpy import load_model
from mnistlab.errors import ModelFileError, UnsafePickleError
from mnistlab.nn import Conv2D, Dense, Flatten, MaxPooling2D

ALLOWED = (ModelFileError, UnsafePickleError)
# MNISTLAB_FUZZ_SCALE=10 runs ten times the examples (and picks new ones: not derandomized).
SCALE = float(os.environ.get("MNISTLAB_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(max_examples=int(examples * SCALE), deadline=None, database=None,
                    derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])



def _model_bytes(tmp: Path) -> bytes:
    model = Sequential([Conv2D(2, 3, activation="relu", input_shape=(1, 6, 6)), MaxPooling2D(2),
                        Flatten(), Dense(3, "softmax")], seed=0)
    path = tmp / "valid.safetensors"
    save_model(model, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    return _model_bytes(tmp), tmp / "mutant.safetensors"


def load_mutant(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with contextlib.suppress(ALLOWED):
        load_model(path)


def split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join(header: dict, tensor_data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + tensor_data


mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]),
                     st.floats(0, 1), st.binary(min_size=1, max_size=8))


def mutate(data: bytes, steps: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, blob in steps:
        at = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= blob[0] or 1
        elif kind == "insert":
            out[at:at] = blob
        elif kind == "delete":
            del out[at : at + len(blob)]
        elif kind == "truncate":
            del out[at:]
        else:
            out[at : at + len(blob)] = blob
    return bytes(out)


@fuzz(2000)
@given(steps=st.lists(mutation, min_size=1, max_size=4))
def test_model_file_byte_mutations(model_file: tuple[bytes, Path], steps) -> None:
    data, path = model_file
    load_mutant(path, mutate(data, steps))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["Dense", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Activation",
                       "Cropping2D", "same", "valid", "relu", "softmax", "unit", "F32", "F64",
                       "BF16", "I64"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)
SPEC_KEYS = ["format", "version", "input_shape", "dtype", "layers", "preprocess", "extra"]
LAYER_KEYS = ["type", "units", "filters", "kernel_size", "strides", "padding", "pool_size",
              "cropping", "rate", "seed", "activation", "kernel_initializer", "input_shape"]
TENSOR_KEYS = ["dtype", "shape", "data_offsets", "extra"]


@fuzz(600)
@given(edits=st.lists(st.tuples(st.sampled_from(["spec", "layer", "tensor", "header"]),
                                st.integers(0, 7), st.integers(0, 20), json_values),
                      min_size=1, max_size=3))
def test_model_header_and_spec_mutations(model_file: tuple[bytes, Path], edits) -> None:
    data, path = model_file
    header, tensor_data = split(data)
    spec = json.loads(header["__metadata__"]["mnistlab.spec"])
    names = sorted(k for k in header if k != "__metadata__")
    for target, index, key, value in edits:
        if target == "spec":
            spec[SPEC_KEYS[index % len(SPEC_KEYS)]] = value
        elif target == "layer" and isinstance(spec.get("layers"), list) and spec["layers"]:
            layer = spec["layers"][index % len(spec["layers"])]
            if isinstance(layer, dict):
                layer[LAYER_KEYS[key % len(LAYER_KEYS)]] = value
        elif target == "tensor":
            entry = header[names[index % len(names)]]
            if isinstance(entry, dict):
                entry[TENSOR_KEYS[key % len(TENSOR_KEYS)]] = value
        else:
            header[str(value)[:12] if key % 2 else names[index % len(names)]] = value
    header["__metadata__"]["mnistlab.spec"] = json.dumps(spec)
    load_mutant(path, join(header, tensor_data))


def _pickle_bytes() -> bytes:
    rng = np.random.default_rng(0)
    weights = {"W1": np.asfortranarray(rng.standard_normal((3, 2))), "b1": np.zeros(2),
               "n": np.arange(3, dtype=np.int32)}
    return pickle.dumps(weights, protocol=3)


PICKLE = _pickle_bytes()


def unpickle_mutant(data: bytes) -> None:
    with contextlib.suppress(ALLOWED):
        safe_unpickle(data, "mutant.pkl")
    with contextlib.suppress(ALLOWED):
        load_legacy_weights(io.BytesIO(data))


@fuzz(3000)
@given(steps=st.lists(mutation, min_size=1, max_size=4))
def test_pickle_byte_mutations(steps) -> None:
    unpickle_mutant(mutate(PICKLE, steps))


OPCODES = [bytes([c]) for c in b"()0.NKJIM}]bcq\x85\x86\x87\x88\x89\x80\x94\x95RsuaeXBCht\x8c"]
operands = st.sampled_from([b"", b"\x00", b"\x01", b"\xff\xff\xff\x7f", b"\x02\x00\x00\x00f8",
                            b"\x01\x00\x00\x00<", b"numpy\nndarray\n", b"numpy\ndtype\n",
                            b"numpy.core.multiarray\n_reconstruct\n", b"\x08" + bytes(8)])


@fuzz(3000)
@given(splices=st.lists(st.tuples(st.floats(0, 1), st.lists(st.tuples(st.sampled_from(OPCODES),
                                                                       operands), max_size=4)),
                        min_size=1, max_size=3))
def test_pickle_opcode_splices(splices) -> None:
    out = bytearray(PICKLE)
    for where, ops in splices:
        at = int(where * len(out))
        out[at:at] = b"".join(op + arg for op, arg in ops)
    unpickle_mutant(bytes(out))
