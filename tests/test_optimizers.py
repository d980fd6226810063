"""Optimizers: one step of each matches the numbers worked out by hand, updates happen in
place, and state can be saved and restored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnistlab.errors import TrainingDivergedError
from mnistlab.nn import SGD, Adam, AdamW, Momentum, RMSprop, get_optimizer


def one_param(value=(1.0, -2.0, 0.5)):
    return {"0.W": np.array(value, dtype=np.float64)}


GRAD = {"0.W": np.array([0.5, 0.25, -1.0])}


def test_sgd_subtracts_lr_times_gradient_in_place() -> None:
    params = one_param()
    w = params["0.W"]
    SGD(lr=0.1).update(params, GRAD)
    assert params["0.W"] is w  # the model's own array was changed
    np.testing.assert_allclose(w, [0.95, -2.025, 0.6])


def test_momentum_accumulates_velocity() -> None:
    params = one_param()
    opt = Momentum(lr=0.1, momentum=0.9)
    opt.update(params, GRAD)  # v1 = -0.1 g
    opt.update(params, GRAD)  # v2 = 0.9 v1 - 0.1 g = -0.19 g;  w = w0 - 0.29 g
    np.testing.assert_allclose(params["0.W"], np.array([1.0, -2.0, 0.5]) - 0.29 * GRAD["0.W"])


def test_adam_first_step_is_lr_times_sign_thanks_to_bias_correction() -> None:
    params = one_param()
    Adam(lr=0.01).update(params, GRAD)
    # m1 = 0.1 g, v1 = 0.001 g^2, alpha = 0.01 sqrt(0.001) / 0.1
    # step = alpha m1 / (sqrt(v1) + 1e-7), i.e. 0.01 * sign(g) up to epsilon
    g = GRAD["0.W"]
    alpha = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9)
    step = alpha * 0.1 * g / (np.sqrt(0.001 * g * g) + 1e-7)
    np.testing.assert_allclose(params["0.W"], np.array([1.0, -2.0, 0.5]) - step, rtol=1e-12)
    np.testing.assert_allclose(step, 0.01 * np.sign(g), rtol=1e-4)


def test_adam_second_step_uses_the_keras_formula() -> None:
    params = one_param()
    opt = Adam(lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    g1, g2 = GRAD["0.W"], np.array([-0.1, 0.3, 2.0])
    opt.update(params, {"0.W": g1})
    opt.update(params, {"0.W": g2})
    m = 0.9 * (0.1 * g1) + 0.1 * g2
    v = 0.999 * (0.001 * g1**2) + 0.001 * g2**2
    w1 = np.array([1.0, -2.0, 0.5]) - 0.001 * math.sqrt(0.001) / 0.1 * (0.1 * g1) / (
        np.sqrt(0.001 * g1**2) + 1e-7)
    w2 = w1 - 0.001 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(params["0.W"], w2, rtol=1e-12)
    assert opt.iterations == 2


def test_keras_default_hyperparameters() -> None:
    adam = Adam()
    assert (adam.lr, adam.beta_1, adam.beta_2, adam.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert Momentum().momentum == 0.9


@pytest.mark.parametrize("betas", [{"beta_1": 1.0}, {"beta_2": 1.0}, {"beta_1": -0.1}])
def test_adam_refuses_betas_outside_0_to_1(betas) -> None:
    name = next(iter(betas))
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\)"):
        Adam(**betas)


def test_names_give_optimizers_with_default_settings() -> None:
    assert isinstance(get_optimizer("sgd"), SGD)
    assert isinstance(get_optimizer("momentum"), Momentum)
    assert isinstance(get_optimizer("adam"), Adam)
    custom = Adam(lr=0.1)
    assert get_optimizer(custom) is custom
    with pytest.raises(ValueError, match="adam"):
        get_optimizer("adagrad")


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1), lambda: Adam(0.1)])
def test_splitting_big_parameters_across_threads_changes_nothing(make) -> None:
    rng = np.random.default_rng(0)
    shapes = {"0.W": (700, 800), "0.b": (800,), "1.W": (800, 10)}  # one big enough to split
    start = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    grads = [{name: rng.standard_normal(shape).astype(np.float32)
              for name, shape in shapes.items()} for _ in range(3)]
    results = []
    for threads in (1, 2, 3):
        opt, params = make(), {name: w.copy() for name, w in start.items()}
        opt.threads = threads
        for g in grads:
            opt.update(params, g)
        results.append(params)
    for params in results[1:]:
        for name in shapes:
            np.testing.assert_array_equal(params[name], results[0][name])


def test_saved_state_resumes_exactly() -> None:
    rng = np.random.default_rng(1)
    grads = [{"0.W": rng.standard_normal(3)} for _ in range(4)]
    straight, params = Adam(0.1), one_param()
    for g in grads:
        straight.update(params, g)

    first, resumed_params = Adam(0.1), one_param()
    for g in grads[:2]:
        first.update(resumed_params, g)
    second = Adam(0.1)
    second.set_state(first.get_state())
    for g in grads[2:]:
        second.update(resumed_params, g)
    np.testing.assert_array_equal(resumed_params["0.W"], params["0.W"])
    assert set(first.get_state()) == {"iterations", "m_sum.0.W", "v_sum.0.W"}


def test_adam_keeps_its_moments_as_exponentially_weighted_sums() -> None:
    g1, g2 = GRAD["0.W"], np.array([-0.1, 0.3, 2.0])
    opt = Adam(beta_1=0.9, beta_2=0.999)
    params = one_param()
    opt.update(params, {"0.W": g1})
    opt.update(params, {"0.W": g2})
    state = opt.get_state()
    np.testing.assert_allclose(state["m_sum.0.W"], 0.9 * g1 + g2, rtol=1e-15)
    np.testing.assert_allclose(state["v_sum.0.W"], 0.999 * g1**2 + g2**2, rtol=1e-15)
    averages = opt.moments_as(state, "averages")  # Keras's m and v
    np.testing.assert_allclose(averages["m.0.W"], 0.1 * (0.9 * g1 + g2), rtol=1e-15)
    np.testing.assert_allclose(averages["v.0.W"], 0.001 * (0.999 * g1**2 + g2**2), rtol=1e-15)
    assert set(averages) == {"iterations", "m.0.W", "v.0.W"}


def test_adam_resumes_from_keras_averages_as_from_its_own_sums() -> None:
    # the torch engine's state, and checkpoints written before the sums, hold m and v
    g1, g2 = GRAD["0.W"], np.array([-0.1, 0.3, 2.0])
    straight, params = Adam(0.01), one_param()
    straight.update(params, {"0.W": g1})
    straight.update(params, {"0.W": g2})

    resumed, resumed_params = Adam(0.01), one_param()
    resumed.update(resumed_params, {"0.W": g1})
    resumed.set_state({"iterations": np.array(1), "m.0.W": 0.1 * g1, "v.0.W": 0.001 * g1**2})
    resumed.update(resumed_params, {"0.W": g2})
    np.testing.assert_allclose(resumed_params["0.W"], params["0.W"], rtol=1e-14)
    with pytest.raises(ValueError, match="form must be"):
        resumed.moments_as({}, "means")


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the error says it all, no NumPy warning
@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1), lambda: Adam(0.1)])
def test_a_non_finite_update_is_refused_and_changes_no_weight(make) -> None:
    params = {"0.W": np.ones(3), "0.b": np.ones(2)}
    grads = {"0.W": np.array([1.0, 2.0, 3.0]), "0.b": np.array([np.inf, 0.0])}
    opt = make()
    opt.threads = 2  # the two parameters go to different threads
    assert len(opt._shares(params, grads)) == 2
    with pytest.raises(TrainingDivergedError, match="unchanged"):
        opt.update(params, grads)
    np.testing.assert_array_equal(params["0.W"], 1.0)  # not even the finite one moved
    np.testing.assert_array_equal(params["0.b"], 1.0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_parameter_split_across_threads_is_moved_back_when_another_share_diverges() -> None:
    # 2 threads cut this parameter in two; only the second half of its gradient is bad,
    # so the first share applies its steps before the second finds its own are not finite.
    start = np.random.default_rng(0).standard_normal(600_000).astype(np.float32)
    grad = np.ones_like(start)
    grad[-1] = np.nan
    params, opt = {"0.W": start.copy()}, Adam(0.1)
    opt.threads = 2
    assert len(opt._shares(params, {"0.W": grad})) == 2
    with pytest.raises(TrainingDivergedError, match="moved back"):
        opt.update(params, {"0.W": grad})
    np.testing.assert_allclose(params["0.W"], start, rtol=0, atol=1e-6)  # back, within rounding
    np.testing.assert_array_equal(params["0.W"][300_000:], start[300_000:])  # never moved


def test_adam_scales_float32_moments_by_a_python_float() -> None:
    # a NumPy float64 scalar would make every float32 ufunc run in float64 and cast back
    opt = Adam()
    opt.update({"0.W": np.ones(3, np.float32)}, {"0.W": np.ones(3, np.float32)})
    assert type(opt.alpha) is float


@pytest.mark.parametrize("make", [
    lambda: SGD(0.1, momentum=0.9, nesterov=True),
    lambda: Adam(0.01, amsgrad=True),
    lambda: AdamW(0.01, weight_decay=0.1),
    lambda: RMSprop(0.01, momentum=0.5, centered=True),
], ids=["nesterov", "amsgrad", "adamw", "rmsprop"])
def test_every_optimizer_resumes_bit_for_bit_from_its_state(make) -> None:
    rng = np.random.default_rng(0)
    grads = [{"w": rng.normal(size=(5, 3)).astype("float32")} for _ in range(6)]
    straight, first = make(), make()
    p_straight, p_first = {"w": np.ones((5, 3), "float32")}, {"w": np.ones((5, 3), "float32")}
    for g in grads:
        straight.update(p_straight, g)
    for g in grads[:3]:
        first.update(p_first, g)
    resumed = make()
    resumed.set_state(first.get_state())
    for g in grads[3:]:
        resumed.update(p_first, g)
    np.testing.assert_array_equal(p_first["w"], p_straight["w"])
    assert resumed.iterations == straight.iterations == 6
