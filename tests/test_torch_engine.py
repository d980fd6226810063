"""The PyTorch engine against the NumPy engine: same spec, same weights, same numbers.

Layer by layer and loss by loss, forward outputs and gradients agree (float64 on both
sides); a few training steps agree; files move between engines; torch stays optional.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mnistlab.engines import EngineUnavailableError, build_model  # noqa: E402
from mnistlab.engines import load_model as load_any  # noqa: E402
from mnistlab.engines.numpy import Sequential  # noqa: E402
from mnistlab.engines.numpy import load_model as load_numpy  # noqa: E402
from mnistlab.engines.torch import (  # noqa: E402
    TorchSequential,
    load_model,
    resolve_device,
    to_numpy,
    to_torch,
    torch_layer,
)
from mnistlab.errors import TrainingDivergedError  # noqa: E402
from mnistlab.nn import (  # noqa: E402
    Activation,
    Conv2D,
    Cropping2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
)

FWD, GRAD = 1e-5, 1e-4  # the tolerances asked of the engine (we get ~1e-12 in float64)
ACTS = ["linear", "relu", "sigmoid", "tanh", "softmax"]


def built(layer, input_shape, seed=0):
    """``layer`` built in float64, with random (not zero) biases so they are tested too."""
    rng = np.random.default_rng(seed)
    layer.build(tuple(input_shape), rng, np.float64)
    if "b" in layer.params:
        layer.params["b"][...] = rng.normal(size=layer.params["b"].shape)
    return layer


def check_layer(layer, input_shape, n=3, seed=1):
    """Forward output, dL/dx and dL/dparams of a NumPy layer and its torch twin agree."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape))
    y = layer.forward(x, training=False)
    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)

    module = torch_layer(layer, torch.float64).eval()
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=FWD, atol=FWD)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=GRAD, atol=GRAD)
    for name, (param, transposed) in module.numpy_params().items():
        grad = param.grad.T if transposed else param.grad
        np.testing.assert_allclose(grad.numpy(), layer.grads[name], rtol=GRAD, atol=GRAD,
                                   err_msg=name)
    return yt


# ---- layer by layer ---------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTS)
def test_dense_matches_numpy(activation):
    check_layer(built(Dense(7, activation), (5,)), (5,))


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [2, 3, 4, 5, (2, 3)])
def test_conv2d_matches_numpy(padding, stride, kernel):
    layer = built(Conv2D(4, kernel, strides=stride, padding=padding, activation="relu"),
                  (2, 9, 8))
    out = check_layer(layer, (2, 9, 8))
    assert tuple(out.shape[1:]) == layer.output_shape
    if padding == "same":  # Keras: ceil(size / stride)
        assert layer.output_shape[1:] == (-(-9 // stride), -(-8 // stride))


def test_conv2d_same_even_kernel_pads_bottom_right():
    """A 2x2 "same" kernel sees the pixel below/right: only the last row/column meets zeros."""
    layer = built(Conv2D(1, 2, padding="same"), (1, 3, 3))
    layer.params["W"][...] = 1.0
    layer.params["b"][...] = 0.0
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    y = torch_layer(layer, torch.float64)(torch.tensor(x)).detach().numpy()[0, 0]
    np.testing.assert_array_equal(y, [[8, 12, 7], [20, 24, 13], [13, 15, 8]])
    np.testing.assert_array_equal(y, layer.forward(x)[0, 0])


@pytest.mark.parametrize(("pool", "strides", "padding", "shape"), [
    (2, None, "valid", (3, 8, 8)),
    (2, None, "valid", (3, 7, 9)),  # odd sizes: the last row/column is dropped
    (2, None, "same", (3, 7, 9)),  # ...or padded with -inf
    (3, 2, "same", (2, 8, 7)),  # overlapping windows
    (3, 1, "valid", (2, 5, 6)),
    ((2, 3), (1, 2), "same", (2, 5, 6)),
])
def test_maxpooling_matches_numpy(pool, strides, padding, shape):
    layer = built(MaxPooling2D(pool, strides=strides, padding=padding), shape)
    out = check_layer(layer, shape)
    assert tuple(out.shape[1:]) == layer.output_shape


def test_cropping_matches_numpy():
    layer = built(Cropping2D(((1, 0), (2, 1))), (2, 5, 6))
    assert tuple(check_layer(layer, (2, 5, 6)).shape[1:]) == layer.output_shape


def test_flatten_is_c_h_w_order():
    check_layer(built(Flatten(), (3, 4, 5)), (3, 4, 5))


def test_dropout_is_identity_in_eval_mode():
    check_layer(built(Dropout(0.5), (10,)), (10,))


@pytest.mark.parametrize("activation", ACTS)
def test_activation_layer_matches_numpy(activation):
    check_layer(built(Activation(activation), (6,)), (6,))


# ---- losses and whole models -------------------------------------------------------------
def mlp(output="softmax", units=10, dtype="float64", seed=0):
    return Sequential([Dense(16, "tanh"), Dense(units, output)], seed=seed, dtype=dtype,
                      input_shape=(12,))


def cnn(dtype="float64", seed=0):
    """Every layer type: even "same" kernel, strided conv, pooling, dropout, flatten."""
    return Sequential([Conv2D(4, 5, padding="same", activation="relu"),
                       MaxPooling2D(2),
                       Conv2D(6, 2, padding="same", activation="relu"),
                       Conv2D(5, 3, strides=2, padding="same", activation="tanh"),
                       MaxPooling2D(2, padding="same"),
                       Dropout(0.25),
                       Flatten(),
                       Dense(8, "sigmoid"),
                       Dense(10),
                       Activation("softmax")],
                      seed=seed, dtype=dtype, input_shape=(1, 12, 12))


def labels_for(kind, n, k, rng):
    ints = rng.integers(0, k, size=n)
    if kind == "int":
        return ints
    if kind == "onehot":
        return np.eye(k)[ints]
    return rng.dirichlet(np.ones(k), size=n)  # soft probability targets


CASES = [  # (output activation, units, loss, label kind)
    ("softmax", 10, "sparse_categorical_crossentropy", "int"),  # fused, class indices
    ("softmax", 10, "categorical_crossentropy", "onehot"),  # fused, one-hot
    ("softmax", 10, "categorical_crossentropy", "soft"),  # fused, probabilities
    ("sigmoid", 10, "categorical_crossentropy", "onehot"),  # not fused: -sum t log(y+eps)/N
    ("sigmoid", 10, "binary_crossentropy_sum", "onehot"),
    ("sigmoid", 1, "binary_crossentropy_sum", "bits"),
    ("sigmoid", 10, "mse", "int"),
    ("linear", 10, "mse", "onehot"),
]


@pytest.mark.parametrize(("output", "units", "loss", "labels"), CASES)
def test_loss_and_gradients_match_numpy(output, units, loss, labels):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 12))
    y = rng.integers(0, 2, size=6) if labels == "bits" else labels_for(labels, 6, units, rng)
    ref = mlp(output, units)
    ref.compile("sgd", loss)
    model = to_torch(ref)
    assert model.loss_path == ref.loss_path
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    loss_value, grads = model.loss_and_grads(x, y)
    assert loss_value == pytest.approx(ref_loss, rel=FWD, abs=FWD)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=GRAD, atol=GRAD,
                                   err_msg=name)
    np.testing.assert_allclose(model.predict(x), ref.predict(x), rtol=FWD, atol=FWD)
    assert model.evaluate(x, y) == pytest.approx(ref.evaluate(x, y), rel=FWD, abs=FWD)


def test_cnn_loss_and_gradients_match_numpy():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 1, 12, 12)), rng.integers(0, 10, size=5)
    ref = cnn()
    ref.compile("adam", "sparse_categorical_crossentropy")
    model = to_torch(ref)
    ref_loss, ref_grads = ref.loss_and_grads(x, y, training=False)
    loss_value, grads = model.loss_and_grads(x, y, training=False)
    assert loss_value == pytest.approx(ref_loss, rel=FWD)
    for name in ref_grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=GRAD, atol=GRAD,
                                   err_msg=name)


def test_channels_last_gives_the_same_numbers():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 1, 12, 12))
    ref = cnn(dtype="float32")
    plain, nhwc = to_torch(ref), to_torch(ref, channels_last=True)
    np.testing.assert_allclose(nhwc.predict(x), plain.predict(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain.predict(x), ref.predict(x), rtol=1e-5, atol=1e-6)


# ---- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_training_matches_numpy_step_for_step(optimizer):
    """Same seed, same epoch order, same optimizer formulas: the same weights after fit."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 12)), rng.integers(0, 10, size=40)
    xv, yv = rng.normal(size=(10, 12)), rng.integers(0, 10, size=10)
    ref = mlp()
    ref.compile(optimizer, "sparse_categorical_crossentropy")
    model = to_torch(mlp())  # fresh model from the same seed: the same initial weights
    model.compile(optimizer, "sparse_categorical_crossentropy")
    kw = dict(epochs=3, batch_size=16, validation_data=(xv, yv), shuffle=True, seed=7,
              verbose=0, log_every=2)
    h_ref, h = ref.fit(x, y, **kw), model.fit(x, y, **kw)
    for name, w in ref.get_weights().items():
        np.testing.assert_allclose(model.get_weights()[name], w, rtol=1e-9, atol=1e-10)
    assert h.epoch == h_ref.epoch == [0, 1, 2]
    assert h.history.keys() == h_ref.history.keys() == {"loss", "accuracy", "val_loss",
                                                         "val_accuracy"}
    for key, values in h_ref.history.items():
        np.testing.assert_allclose(h.history[key], values, rtol=1e-9, err_msg=key)
    assert [s for s, _ in h.steps] == [s for s, _ in h_ref.steps] == [2, 4, 6, 8, 9]
    np.testing.assert_allclose([v for _, v in h.steps], [v for _, v in h_ref.steps],
                               rtol=1e-9)
    np.testing.assert_allclose(model.optimizer.get_state()["iterations"], 9)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_switching_engines_mid_training_keeps_optimizer_state(optimizer):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(32, 12)), rng.integers(0, 10, size=32)
    ref = mlp()
    ref.compile(optimizer, "sparse_categorical_crossentropy")
    for _ in range(3):
        ref.train_step(x, y)
    model = to_torch(ref)  # weights, optimizer hyperparameters and state carry over
    assert model.optimizer.get_config() == ref.optimizer.get_config()
    for _ in range(2):
        ref.train_step(x, y)
        model.train_step(x, y)
    for name, w in ref.get_weights().items():
        np.testing.assert_allclose(model.get_weights()[name], w, rtol=1e-9, atol=1e-10)
    back = to_numpy(model)  # and back again
    for key, value in ref.optimizer.get_state().items():
        np.testing.assert_allclose(back.optimizer.get_state()[key], value, rtol=1e-9,
                                   atol=1e-12, err_msg=key)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_changing_the_learning_rate_matches_numpy(optimizer):
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(16, 12)), rng.integers(0, 10, size=16)
    ref = mlp()
    ref.compile(optimizer, "sparse_categorical_crossentropy")
    model = to_torch(mlp())
    model.compile(optimizer, "sparse_categorical_crossentropy")
    for lr in (0.1, 0.1, 0.02, 0.05):
        ref.optimizer.lr = model.optimizer.lr = lr
        ref.train_step(x, y)
        model.train_step(x, y)
    for name, w in ref.get_weights().items():
        np.testing.assert_allclose(model.get_weights()[name], w, rtol=1e-9, atol=1e-10)


def test_fit_with_dropout_is_seeded():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(24, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, size=24)

    def run():
        model = to_torch(cnn(dtype="float32"))
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
        return model.get_weights()

    first, second = run(), run()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.fixture
def nan_inputs_allowed(monkeypatch):
    """fit refuses NaN inputs up front (nn.network.check_finite); these tests switch that
    off to reach the step-divergence path behind it with a NaN in one batch."""
    monkeypatch.setattr("mnistlab.nn.network.check_finite", lambda x, what: None)


def test_divergence_names_epoch_and_step(nan_inputs_allowed):
    x = np.zeros((20, 12))
    x[13, 0] = np.nan  # in the second batch of 8 when not shuffled
    model = to_torch(mlp())
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(TrainingDivergedError, match="epoch 1, step 2"):
        model.fit(x, np.zeros(20, dtype=int), batch_size=8, shuffle=False, verbose=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_diverging_step_and_every_later_one_change_no_weight(optimizer, nan_inputs_allowed):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 12)), rng.integers(0, 10, size=40)
    x[13, 0] = np.nan  # in the second batch of 8; three more batches follow it
    model, first_batch_only = to_torch(mlp()), to_torch(mlp())
    for m in (model, first_batch_only):
        m.compile(optimizer, "sparse_categorical_crossentropy")
    first_batch_only.fit(x[:8], y[:8], batch_size=8, shuffle=False, verbose=0)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan.*\(epoch 1, step 2\)"):
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)  # read once, at the epoch end
    for name, w in first_batch_only.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[name], w)
    assert model.optimizer.iterations == 1


def test_callbacks_see_batches_and_can_stop():
    class StopAfter3:
        def __init__(self):
            self.seen = []

        def on_batch_end(self, step, logs):
            self.seen.append((step, logs["batch_loss"], logs["loss"]))
            if step == 3:
                model.stop_training = True

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(64, 12)), rng.integers(0, 10, size=64)
    model = to_torch(mlp())
    model.compile("sgd", "sparse_categorical_crossentropy")
    callback = StopAfter3()
    history = model.fit(x, y, epochs=5, batch_size=8, callbacks=[callback], verbose=0)
    assert [s for s, *_ in callback.seen] == [1, 2, 3]
    assert history.epoch == [0]
    assert [s for s, _ in history.steps] == [1, 2, 3]
    assert [v for _, v in history.steps] == pytest.approx([b for _, b, _ in callback.seen])


# ---- files and conversions --------------------------------------------------------------
def test_torch_trained_model_loads_and_predicts_on_numpy(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.random((32, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 10, size=32)
    model = TorchSequential.from_spec(cnn(dtype="float32").spec(), seed=3)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = load_numpy(tmp_path / "m.safetensors")
    assert loaded.spec() == model.spec()
    out = model.predict(x)
    assert out.dtype == np.float32 and out.shape == (32, 10)
    np.testing.assert_allclose(loaded.predict(x), out, rtol=1e-5, atol=1e-5)
    via_engines = load_any(tmp_path / "m.safetensors", engine="torch")
    np.testing.assert_allclose(via_engines.predict(x), out, rtol=1e-6, atol=1e-6)


def test_numpy_trained_model_loads_and_predicts_on_torch(tmp_path):
    rng = np.random.default_rng(10)
    x, y = rng.random((48, 12), dtype=np.float32), rng.integers(0, 10, size=48)
    ref = mlp(dtype="float32")
    ref.compile("momentum", "sparse_categorical_crossentropy")
    ref.fit(x, y, epochs=2, batch_size=16, seed=0, verbose=0)
    ref.save(tmp_path / "m.safetensors")
    model = load_model(tmp_path / "m.safetensors")
    assert model.spec() == ref.spec()
    np.testing.assert_allclose(model.predict(x), ref.predict(x), rtol=1e-5, atol=1e-5)
    numpy_again = to_numpy(model)
    np.testing.assert_allclose(numpy_again.predict(x), ref.predict(x), rtol=0, atol=0)


def test_weights_use_numpy_names_and_layouts():
    ref = cnn(dtype="float32")
    model = to_torch(ref)
    weights = model.get_weights()
    assert list(weights) == list(ref.get_weights())
    for name, w in ref.get_weights().items():
        assert weights[name].shape == w.shape and weights[name].dtype == w.dtype
        np.testing.assert_array_equal(weights[name], w)
    assert weights["7.W"].shape == (20, 8)  # Dense (in, out)
    assert model.net.layers[7].dense.weight.shape == (8, 20)  # nn.Linear (out, in)
    weights["7.W"][:] = 0.5
    model.set_weights(weights)
    np.testing.assert_array_equal(model.get_weights()["7.W"], 0.5)
    with pytest.raises(ValueError, match="missing"):
        model.set_weights({k: v for k, v in weights.items() if k != "0.b"})
    with pytest.raises(ValueError, match="shape"):
        model.set_weights({**weights, "7.W": weights["7.W"].T})


def test_same_seed_same_initial_weights_on_both_engines():
    spec = cnn(dtype="float32").spec()
    a = build_model(spec, engine="numpy", seed=11).get_weights()
    b = build_model(spec, engine="torch", seed=11).get_weights()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_layer_objects_build_like_numpy_sequential():
    layers = [Flatten(input_shape=(1, 28, 28)), Dense(32, "relu"), Dense(10, "softmax")]
    model = TorchSequential(layers, seed=4)
    ref = Sequential([Flatten(input_shape=(1, 28, 28)), Dense(32, "relu"),
                      Dense(10, "softmax")], seed=4)
    for name, w in ref.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[name], w)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(N, 1, 28, 28\)"):
        model.predict(np.zeros((2, 784)))


# ---- parameter counts -------------------------------------------------------------------
def test_param_counts_match_the_reference_models():
    mlp_ref = Sequential([Flatten(input_shape=(1, 28, 28)), Dense(1000, "relu"),
                          Dense(10, "softmax")], seed=0)
    cnn_ref = Sequential([Conv2D(32, 5, padding="same", activation="relu",
                                 input_shape=(1, 28, 28)),
                          MaxPooling2D(2), Conv2D(64, 2, padding="same", activation="relu"),
                          MaxPooling2D(2), Dropout(0.25), Flatten(), Dense(1000, "relu"),
                          Dense(10, "softmax")], seed=0)
    for ref, expected in ((mlp_ref, 795_010), (cnn_ref, 3_156_098)):
        model = to_torch(ref)
        lines = []
        assert model.count_params() == ref.count_params() == expected
        assert model.summary(print_fn=lines.append) == expected
        assert f"Total params: {expected:,}" in lines


# ---- devices and the optional dependency -------------------------------------------------
def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with pytest.raises(EngineUnavailableError, match="CUDA is not available"):
        TorchSequential.from_spec(mlp().spec(), device="cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")
    with pytest.raises(ValueError, match="numpy engine runs on the CPU"):
        build_model(mlp().spec(), engine="numpy", device="cuda")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


def test_import_mnistlab_does_not_import_torch():
    result = run_python(
        "import sys, mnistlab, mnistlab.nn, mnistlab.engines.io, mnistlab.training\n"
        "import mnistlab.engines\n"
        "from mnistlab.engines import build_model\n"
        "from mnistlab import Sequential\nfrom mnistlab.nn import Dense\n"
        "m = Sequential([Dense(3, 'softmax')], input_shape=(4,), seed=0)\n"
        "build_model(m.spec(), engine='numpy').predict([[0.0, 1.0, 2.0, 3.0]])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    assert result.returncode == 0, result.stderr


def test_without_torch_the_error_says_how_to_install_it():
    result = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from mnistlab.engines import EngineUnavailableError, build_model\n"
        "from mnistlab.errors import MnistlabError\n"
        "try:\n"
        "    import mnistlab.engines.torch\n"
        "except EngineUnavailableError as exc:\n"
        "    assert isinstance(exc, MnistlabError)\n"
        "    print(exc)\n"
        "try:\n"
        "    build_model({}, engine='torch')\n"
        "except EngineUnavailableError as exc:\n"
        "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'mnistlab[torch]'" in line and "torch==2.13.0" in line


def test_a_batch_size_that_is_not_a_positive_integer_is_named_in_the_error() -> None:
    model = TorchSequential([Dense(3, "softmax", input_shape=(2,))], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((6, 2), np.float32), np.zeros(6, np.int64)
    for call in (lambda: model.fit(x, y, batch_size=0, verbose=0),
                 lambda: model.predict(x, batch_size=-1),
                 lambda: model.evaluate(x, y, batch_size=2.5)):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            call()
