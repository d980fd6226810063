"""Each speed kernel of nn/kernels.py against the plain algorithm it replaces.

The plain path is the layer with ``use_kernels = False``. Tiled max pooling reorders
exact operations (max, and multiplying or subtracting by exactly 0 or all of a value),
so its y and dx equal the plain ones bit for bit, except the sign of a zero gradient
(kernels.maxpool_tiled_backward says why). Dense's small_matmul_t is the same product
with the operand in another memory layout, which BLAS may sum in another order: it is
held to the rounding error bound of a dot product (see dot_error_bound).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from mnistlab.nn import Dense, MaxPooling2D, kernels
from mnistlab.nn.layers import pad2d

DTYPES = [np.float32, np.float64]


def built(layer, input_shape, use_kernels, dtype, seed=0):
    layer.use_kernels = use_kernels
    layer.build(tuple(input_shape), np.random.default_rng(seed), np.dtype(dtype))
    return layer


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_bits_but_zero_sign(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit equal once -0.0 reads +0.0 (x + 0 turns -0.0 into +0.0, nothing else)."""
    zero = a.dtype.type(0)
    return same_bits(np.ascontiguousarray(a) + zero, np.ascontiguousarray(b) + zero)


# --- tiled max pooling ---------------------------------------------------------------------

POOLS = [  # (pool_size, padding, (N, C, H, W)): every one tiles (strides == pool_size)
    (2, "valid", (2, 3, 8, 8)),
    (2, "valid", (3, 2, 7, 9)),  # odd sizes: the last row and column belong to no window
    (2, "same", (2, 3, 7, 5)),  # odd sizes padded with -inf below and on the right
    (2, "same", (1, 4, 28, 28)),  # the usual MNIST case
    (3, "valid", (2, 2, 10, 8)),
    (3, "same", (1, 3, 8, 7)),
    ((2, 3), "same", (2, 2, 5, 7)),
    ((3, 2), "valid", (1, 2, 7, 6)),
    ((1, 2), "valid", (2, 1, 4, 5)),
    ((2, 1), "same", (2, 1, 5, 3)),
    (1, "valid", (2, 2, 3, 3)),  # a window of one pixel: y = x
    (4, "valid", (1, 1, 9, 9)),
]


def pool_input(kind: str, shape: tuple[int, ...], dtype, rng: np.random.Generator) -> np.ndarray:
    if kind == "ties":  # three values: most windows hold their max more than once
        return rng.integers(-1, 2, shape).astype(dtype)
    if kind == "constant":  # every pixel ties: dy goes to each window's first pixel
        return np.full(shape, 0.5, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "constant"])
@pytest.mark.parametrize(("pool", "padding", "shape"), POOLS)
def test_tiled_maxpool_kernel_equals_the_plain_running_max(pool, padding, shape, kind,
                                                           dtype) -> None:
    rng = np.random.default_rng(zlib.crc32(repr((pool, padding, shape, kind)).encode()))
    x = pool_input(kind, shape, dtype, rng)
    fast = built(MaxPooling2D(pool, padding=padding), shape[1:], True, dtype)
    plain = built(MaxPooling2D(pool, padding=padding), shape[1:], False, dtype)
    y_fast, y_plain = fast.forward(x), plain.forward(x)
    assert fast.via_kernel and not plain.via_kernel  # each took the path under test
    dy = rng.standard_normal(y_plain.shape).astype(dtype)
    dx_fast, dx_plain = fast.backward(dy), plain.backward(dy)

    assert same_bits(y_fast, y_plain)
    assert same_bits_but_zero_sign(dx_fast, dx_plain)
    np.testing.assert_array_equal(dx_fast, dx_plain)
    assert dx_fast.shape == x.shape and dx_fast.dtype == dy.dtype

    # the kernels called directly give what the layer returned
    xp = pad2d(x, fast.pads, value=-np.inf)
    y, row_max = kernels.maxpool_tiled_forward(xp, fast.pool_size, fast.out_hw)
    dxp = kernels.maxpool_tiled_backward(dy, xp, y, row_max, fast.pool_size)
    top, _, left, _ = fast.pads
    assert same_bits(y, y_fast)
    assert same_bits(dxp[:, :, top : top + shape[2], left : left + shape[3]].copy(),
                     np.ascontiguousarray(dx_fast))


def test_each_maxpool_gradient_goes_to_one_pixel_on_both_paths() -> None:
    """All of dy reaches x, each window's share in one pixel: none lost, none doubled."""
    x = np.zeros((2, 3, 6, 6))  # every window ties everywhere
    dy = np.random.default_rng(1).uniform(1, 2, (2, 3, 3, 3))
    for use_kernels in (True, False):
        layer = built(MaxPooling2D(2), (3, 6, 6), use_kernels, np.float64)
        layer.forward(x)
        dx = layer.backward(dy)
        np.testing.assert_array_equal(dx[:, :, 0::2, 0::2], dy)  # the first pixel of each
        assert np.count_nonzero(dx) == dy.size


@pytest.mark.parametrize(("pool", "strides"), [(2, 1), (3, 2), ((2, 3), (1, 2))])
def test_overlapping_pools_always_run_the_plain_path(pool, strides) -> None:
    layer = built(MaxPooling2D(pool, strides=strides), (1, 7, 7), True, np.float64)
    layer.forward(np.zeros((1, 1, 7, 7)))
    assert not layer.via_kernel


def test_a_replica_takes_the_path_of_its_own_forward() -> None:
    layer = built(MaxPooling2D(2), (1, 4, 4), True, np.float64)
    twin = layer.replica()
    twin.use_kernels = False
    x = np.random.default_rng(2).standard_normal((2, 1, 4, 4))
    y_twin, y = twin.forward(x), layer.forward(x)
    assert layer.via_kernel and not twin.via_kernel
    dy = np.ones_like(y)
    assert same_bits(y, y_twin)
    assert same_bits_but_zero_sign(layer.backward(dy), twin.backward(dy))


# --- Dense: dx through a contiguous copy of a small W.T -------------------------------------

DENSE = [  # (N, in, units): W is (in, units)
    (100, 1000, 10),  # the 100x10 @ 10x1000 case of the kernel's docstring
    (32, 784, 50),
    (7, 13, 5),
    (1, 1, 1),
    (3, 256, 256),  # W.size == SMALL_MATRIX: still the kernel
    (5, 257, 255),  # 65535 elements: the kernel
    (4, 300, 256),  # beyond SMALL_MATRIX: the plain product on both paths
]


def dot_error_bound(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Twice the rounding error bound of a @ b summed in any order: 2 K eps (|a| @ |b|).

    Each of two results of a @ b is within K eps (|a| @ |b|) of the exact product
    (K = the inner size), whatever order BLAS sums in; so they are within twice that of
    each other. Bit-equal results are expected, but a BLAS may take another kernel for a
    transposed operand than for a contiguous one, so the test allows only this.
    """
    k, eps = a.shape[1], np.finfo(a.dtype).eps
    return 2 * k * eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "n_in", "units"), DENSE)
def test_small_matmul_t_equals_the_plain_dz_at_w_t(n, n_in, units, dtype) -> None:
    rng = np.random.default_rng(n * 7919 + n_in * 31 + units)
    w = rng.standard_normal((n_in, units)).astype(dtype)
    dz = rng.standard_normal((n, units)).astype(dtype)
    fast, plain = kernels.small_matmul_t(dz, w), dz @ w.T
    assert fast.dtype == plain.dtype and fast.shape == plain.shape == (n, n_in)
    difference = np.abs(fast.astype(np.float64) - plain)
    assert np.all(difference <= dot_error_bound(dz, w.T))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "n_in", "units"), DENSE)
def test_dense_backward_with_and_without_kernels(n, n_in, units, dtype) -> None:
    rng = np.random.default_rng(n + n_in + units)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    dz = rng.standard_normal((n, units)).astype(dtype)
    fast = built(Dense(units), (n_in,), True, dtype)
    plain = built(Dense(units), (n_in,), False, dtype)
    assert same_bits(fast.linear_forward(x), plain.linear_forward(x))
    dx_fast, dx_plain = fast.linear_backward(dz), plain.linear_backward(dz)
    for name in ("W", "b"):  # no kernel here: the same bits
        assert same_bits(fast.grads[name], plain.grads[name])
    difference = np.abs(dx_fast.astype(np.float64) - dx_plain)
    assert np.all(difference <= dot_error_bound(dz, plain.params["W"].T))
    if n_in * units <= kernels.SMALL_MATRIX:  # the kernel ran: it is what fast returned
        assert same_bits(dx_fast, kernels.small_matmul_t(dz, fast.params["W"]))
    else:  # beyond the kernel's cases both layers run the plain product
        assert same_bits(dx_fast, dx_plain)
