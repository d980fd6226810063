"""Gradient check: backprop's gradients against central differences, parameter by parameter.

    numeric dL/dp_i = (L(p_i + eps) - L(p_i - eps)) / (2 eps)

Run it on a float64 model with small inputs; float32 round-off (~1e-7) would drown
the comparison. Dropout layers redraw the same mask for every evaluation (their
random generators are rewound), and layers' non-trainable state (BatchNormalization's
moving statistics, which training-mode evaluations move) is restored after every one, so
training-mode models can be checked too and the model is left as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from mnistlab.nn.network import Network


@dataclass
class ParamCheck:
    """Comparison for one parameter array; errors are max-norm over its checked entries."""

    name: str
    shape: tuple[int, ...]
    checked: int  # how many entries were perturbed
    max_abs_error: float
    rel_error: float  # max |analytic - numeric| / max(max |analytic|, max |numeric|)


@dataclass
class GradcheckReport:
    loss: float
    params: list[ParamCheck] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((p.rel_error for p in self.params), default=0.0)

    def passed(self, tol: float = 1e-6) -> bool:
        return self.max_rel_error < tol

    def __str__(self) -> str:
        lines = [f"{'param':<8}{'shape':<18}{'checked':>8}{'max abs err':>14}{'rel err':>12}"]
        lines += [f"{p.name:<8}{p.shape!s:<18}{p.checked:>8}{p.max_abs_error:>14.3e}"
                  f"{p.rel_error:>12.3e}" for p in self.params]
        lines.append(f"loss {self.loss:.6g}; max relative error {self.max_rel_error:.3e}")
        return "\n".join(lines)


def gradcheck(model: Network, x: np.ndarray, y: np.ndarray, *, eps: float = 1e-6,
              training: bool = True, max_entries: int | None = None,
              seed: int = 0) -> GradcheckReport:
    """Compare ``model.loss_and_grads`` with central differences for every parameter.

    ``max_entries`` checks only that many randomly chosen entries per parameter
    (all of them when None). The model must be compiled and float64.
    """
    if model.dtype != np.float64:
        raise ValueError("gradcheck needs a float64 model: Sequential(..., dtype='float64')")
    x = model.prepare_input(x)  # builds the model first, so we rewind the right generators
    rngs = {i: layer.rng for i, layer in enumerate(model.layers) if hasattr(layer, "rng")}
    start_states = {i: copy.deepcopy(rng.bit_generator.state) for i, rng in rngs.items()}
    layer_state = {name: v.copy() for name, v in model.named_state().items()}

    def rewind() -> None:  # every evaluation draws the same dropout masks, from the same state
        for i, rng in rngs.items():
            rng.bit_generator.state = copy.deepcopy(start_states[i])
        for name, v in model.named_state().items():
            np.copyto(v, layer_state[name])

    def loss_at() -> float:
        rewind()
        return model.forward_loss(x, y, training)[0]

    rewind()
    loss, grads = model.loss_and_grads(x, y, training=training)
    report, pick = GradcheckReport(loss=loss), np.random.default_rng(seed)
    for name, p in model.named_params().items():
        flat = p.reshape(-1)  # a view: writing flat[i] perturbs the model's weight
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = pick.choice(flat.size, size=max_entries, replace=False)
        numeric = np.empty(len(idx))
        for k, i in enumerate(idx):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss_at()
            flat[i] = saved - eps
            minus = loss_at()
            flat[i] = saved
            numeric[k] = (plus - minus) / (2 * eps)
        analytic = grads[name].reshape(-1)[idx]
        abs_err = float(np.max(np.abs(analytic - numeric), initial=0.0))
        scale = max(float(np.max(np.abs(analytic), initial=0.0)),
                    float(np.max(np.abs(numeric), initial=0.0)), 1e-12)
        report.params.append(ParamCheck(name, p.shape, len(idx), abs_err, abs_err / scale))
    rewind()
    return report
