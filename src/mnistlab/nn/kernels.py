"""Speed kernels, kept apart from the plain layers of ``nn/layers.py``.

Each function here computes what a layer's plain NumPy algorithm computes, only faster
in the cases it covers: the same operations in another order, or a way around a BLAS
quirk. The layer that calls one says so in one line; ``Layer.use_kernels = False``
runs the plain algorithm instead, and ``tests/test_kernels.py`` checks each kernel equal
to its plain path.
"""

from __future__ import annotations

import numpy as np

# Dense's dx goes through small_matmul_t while W has at most this many elements.
SMALL_MATRIX = 1 << 16


def small_matmul_t(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w.T`` through a contiguous copy of ``w.T``: Dense's dx = dz W^T for a small W.

    OpenBLAS splits dz @ (a transposed view of a small W) over its threads and waits
    longer for them than the work takes (100x10 @ 10x1000: 0.07-0.4 ms); a contiguous
    copy of W.T takes microseconds and the product then 0.03 ms.
    """
    return a @ np.ascontiguousarray(w.T)


def maxpool_tiled_forward(
    xp: np.ndarray, pool_size: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling of padded NCHW ``xp`` by windows that tile it (strides == pool_size).

    The same max as MaxPooling2D's running max over the ph*pw window offsets, in two
    passes over shrinking arrays: across the columns of each window row (``row_max``,
    (N, C, OH*ph, OW)), then across those rows (``y``, (N, C, OH, OW)). Returns
    (y, row_max); maxpool_tiled_backward needs both.
    """
    (ph, pw), (oh, ow) = pool_size, out_hw
    tiles = xp[:, :, : oh * ph, : ow * pw]  # "valid" drops what no window covers
    row_max = tiles[..., 0::pw].copy()
    for j in range(1, pw):
        np.maximum(row_max, tiles[..., j::pw], out=row_max)
    y = row_max[:, :, 0::ph].copy()
    for i in range(1, ph):
        np.maximum(y, row_max[:, :, i::ph], out=y)
    return y, row_max


def maxpool_tiled_backward(
    dy: np.ndarray, xp: np.ndarray, y: np.ndarray, row_max: np.ndarray,
    pool_size: tuple[int, int],
) -> np.ndarray:
    """dL/dxp for maxpool_tiled_forward: each dy to the first pixel holding its max.

    Routes dy to the first window row holding the max, then to the first column of that
    row holding the row's max: row-major first, argmax's tie rule, as the plain path. It
    writes every pixel once, so it needs neither a zero-filled buffer (where the windows
    cover ``xp``) nor a mask of the windows not yet claimed.

    For finite dy the values equal the plain path's, but a pixel that takes no gradient
    holds -0.0 where its dy is negative (dy * 0 here, 0 + dy * 0 there). A window holding
    a NaN has y = NaN on both paths; the plain path sends its dy nowhere, this one to a
    pixel of the window's last row (the last candidate takes what is left).
    """
    (ph, pw), (oh, ow) = pool_size, y.shape[2:]
    d_rows = np.empty(row_max.shape, dtype=dy.dtype)  # dL/d row_max
    _claim_in_order(dy, y, [row_max[:, :, i::ph] for i in range(ph)],
                    [d_rows[:, :, i::ph] for i in range(ph)])
    covered = oh * ph == xp.shape[2] and ow * pw == xp.shape[3]
    dxp = (np.empty if covered else np.zeros)(xp.shape, dtype=dy.dtype)
    tiles, d_tiles = xp[:, :, : oh * ph, : ow * pw], dxp[:, :, : oh * ph, : ow * pw]
    _claim_in_order(d_rows, row_max, [tiles[..., j::pw] for j in range(pw)],
                    [d_tiles[..., j::pw] for j in range(pw)])
    return dxp


def _claim_in_order(grad: np.ndarray, best: np.ndarray, candidates: list[np.ndarray],
                    outs: list[np.ndarray]) -> None:
    """outs[k] = the part of ``grad`` that candidates[k] takes: all of it if it equals
    ``best`` and no earlier candidate did; the last takes whatever is left.

    ``remaining`` is the gradient no earlier candidate has claimed: an earlier one that
    holds the max takes all of it, so the later ones get exactly zero."""
    remaining, last = grad, len(candidates) - 1
    if last == 0:
        np.copyto(outs[0], grad)
    for k in range(last):
        np.multiply(remaining, candidates[k] == best, out=outs[k])
        # exactly 0 where outs[k] took it all, else unchanged; the last one is outs[-1]
        remaining = np.subtract(remaining, outs[k], out=outs[last] if k == last - 1 else None)


__all__ = ["SMALL_MATRIX", "maxpool_tiled_backward", "maxpool_tiled_forward", "small_matmul_t"]
