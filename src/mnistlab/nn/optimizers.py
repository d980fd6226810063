"""Optimizers: ``update(params, grads)`` changes each parameter array in place.

``params`` and ``grads`` are dicts keyed by the model's weight names ("0.W", ...);
per-parameter state (velocity, moments) is keyed the same way, so it survives
as long as the names do. A preallocated scratch array per parameter keeps the
update free of temporaries, which matters for the 3M-parameter CNN.

Each rule is written once, in ``step``: the amount to subtract from a parameter.
``update`` applies a step only if every step is finite, so a diverging run keeps its last
good weights. Large parameters are cut into contiguous pieces that ``threads`` threads
(the caller's included) handle at once (NumPy releases the GIL inside ufuncs), as
PyTorch spreads its elementwise kernels over its threads.
"""

from __future__ import annotations

import math

import numpy as np

from mnistlab.errors import TrainingDivergedError
from mnistlab.nn.parallel import default_threads, run_each

MIN_PIECE = 1 << 17  # elements; a smaller piece is not worth a thread hand-off

# (param or a slice of one, its grad, its state, whether it is a slice of a parameter
# that several threads share)
Piece = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], bool]


class Optimizer:
    """Base class: ``update`` in place; ``get_state``/``set_state`` for checkpoints."""

    name = ""

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)
        self.iterations = 0  # number of update() calls so far
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.threads = default_threads()

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Apply one step to every parameter, or to none: TrainingDivergedError if any step
        has a NaN or an infinity (the optimizer's own state is then not to be trusted).

        A thread applies the steps of its slices of large parameters as soon as its own
        steps are known finite, while they are still in cache (a separate pass would cost
        about 6% of an MLP training step); whole parameters wait until every thread has
        checked its steps. So a refused update leaves them exactly as they were, and moves
        back (w + step) any slice already moved, which restores it to within rounding.
        """
        self.iterations += 1
        shares = self._shares(params, grads)
        finite = run_each(self._step_share, shares)
        if all(finite):
            for p, _, state, sliced in (piece for share in shares for piece in share):
                if not sliced:
                    np.subtract(p, state["scratch"], out=p)
            return
        moved = [(p, state) for share, ok in zip(shares, finite, strict=True) if ok
                 for p, _, state, sliced in share if sliced]
        for p, state in moved:
            np.add(p, state["scratch"], out=p)
        where = "moved back, to within rounding" if moved else "left unchanged"
        raise TrainingDivergedError(f"the update has NaN or infinite values; "
                                    f"the weights were {where}")

    def _shares(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                ) -> list[list[Piece]]:
        """The work of one update, cut into one share per thread.

        A large contiguous parameter is cut into equal slices, one per share (reshape(-1)
        of a contiguous array is a view: writes to a slice land in the parameter); each
        small one goes whole to the share with the least work so far."""
        n_shares = max(1, self.threads)
        shares: list[list[Piece]] = [[] for _ in range(n_shares)]
        work = [0] * n_shares
        for name, p in params.items():
            g, state = grads[name], self._state_for(name, p)
            n = min(n_shares, p.size // MIN_PIECE)
            if n < 2 or not (p.flags.c_contiguous and g.flags.c_contiguous):
                k = work.index(min(work))
                shares[k].append((p, g, state, False))
                work[k] += p.size
                continue
            arrays = [p.reshape(-1), g.reshape(-1), *(v.reshape(-1) for v in state.values())]
            for k in range(n):
                s = slice(k * p.size // n, (k + 1) * p.size // n)
                p_s, g_s, *rest = (a[s] for a in arrays)
                shares[k].append((p_s, g_s, dict(zip(state, rest, strict=True)), True))
                work[k] += p_s.size
        return [share for share in shares if share]

    def _step_share(self, share: list[Piece]) -> bool:
        """Compute every step of a share (into each state's "scratch"); if all are finite,
        apply those of slices at once. True if all are finite."""
        # A diverging step overflows; the check right after catches that and update() names
        # it in a TrainingDivergedError, so NumPy's own warnings would only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            steps = [self.step(g, state) for _, g, state, _ in share]  # even after a bad one
            if not all(np.isfinite(step.sum()) for step in steps):  # a NaN or inf makes it so
                return False
        for (p, _, _, sliced), step in zip(share, steps, strict=True):
            if sliced:
                np.subtract(p, step, out=p)
        return True

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        """The amount to subtract from the parameter, written into ``state["scratch"]``."""
        raise NotImplementedError

    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter arrays this optimizer keeps (besides "scratch")."""
        return ()

    def _state_for(self, name: str, p: np.ndarray) -> dict[str, np.ndarray]:
        state = self.state.get(name)
        if state is None or state["scratch"].shape != p.shape or state["scratch"].dtype != p.dtype:
            state = {slot: np.zeros_like(p) for slot in (*self.slots(), "scratch")}
            self.state[name] = state
        return state

    def get_config(self) -> dict:
        return {"name": self.name, "lr": self.lr}

    def get_state(self) -> dict[str, np.ndarray]:
        """Flat copy of the state, e.g. {"m_sum.0.W": ..., "iterations": array(12)}."""
        out = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for name, state in self.state.items():
            out.update({f"{slot}.{name}": state[slot].copy() for slot in self.slots()})
        return out

    def set_state(self, flat: dict[str, np.ndarray]) -> None:
        """Restore what ``get_state`` returned (for resuming training)."""
        self.iterations = int(flat["iterations"])
        self.state = {}
        for key, value in flat.items():
            if key == "iterations":
                continue
            slot, name = key.split(".", 1)
            state = self.state.setdefault(name, {"scratch": np.zeros_like(value)})
            state[slot] = np.array(value, copy=True)


class SGD(Optimizer):
    """p -= lr * g."""

    name = "sgd"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        return np.multiply(g, self.lr, out=state["scratch"])


class Momentum(Optimizer):
    """v = momentum * v - lr * g;  p += v."""

    name = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = float(momentum)

    def slots(self) -> tuple[str, ...]:
        return ("v",)

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        v = state["v"]
        v *= self.momentum
        v -= np.multiply(g, self.lr, out=state["scratch"])
        return np.negative(v, out=state["scratch"])  # p += v

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


class Adam(Optimizer):
    """Adam as Keras computes it (same defaults, epsilon added to sqrt(v)):

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g**2
        p -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + epsilon)

    The moments are kept as exponentially weighted sums, m_sum = m / (1 - b1) and
    v_sum = v / (1 - b2), so that taking in a gradient is an addition without a
    multiplication (the update's time is memory traffic; this takes 11% off it):

        m_sum = b1 m_sum + g;   v_sum = b2 v_sum + g**2
        p -= alpha * m_sum / (sqrt(v_sum) + epsilon / sqrt(1 - b2))
        alpha = lr * sqrt(1 - b2**t) / (1 - b1**t) * (1 - b1) / sqrt(1 - b2)

    ``get_state`` saves the sums ("m_sum.0.W"), so a resumed run continues bit for bit;
    ``set_state`` also takes Keras's averages ("m.0.W", "v.0.W": the torch engine's state).
    """

    name = "adam"

    def __init__(
        self,
        lr: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        super().__init__(lr)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        for name, beta in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0 <= beta < 1:  # at 1 a moment never takes in a gradient
                raise ValueError(f"Adam's {name} must be in [0, 1), got {beta}")

    def slots(self) -> tuple[str, ...]:
        return ("m_sum", "v_sum")

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        t = self.iterations + 1  # bias correction for this step, shared by all parameters
        # Python floats, not np.float64: float32 moments times a NumPy float64 scalar
        # would be computed in float64 and cast back, 5x slower than the float32 loop.
        root = math.sqrt(1 - self.beta_2)
        self.alpha = (self.lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
                      * (1 - self.beta_1) / root)
        self.sum_epsilon = self.epsilon / root
        super().update(params, grads)

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        m_sum, v_sum, tmp = state["m_sum"], state["v_sum"], state["scratch"]
        m_sum *= self.beta_1  # m_sum = b1 m_sum + g
        m_sum += g
        v_sum *= self.beta_2  # v_sum = b2 v_sum + g^2
        v_sum += np.square(g, out=tmp)
        np.sqrt(v_sum, out=tmp)  # step = alpha m_sum / (sqrt(v_sum) + epsilon / sqrt(1 - b2))
        tmp += self.sum_epsilon
        np.divide(m_sum, tmp, out=tmp)
        tmp *= self.alpha
        return tmp

    def set_state(self, flat: dict[str, np.ndarray]) -> None:
        super().set_state(self.moments_as(flat, "sums"))

    def moments_as(self, flat: dict[str, np.ndarray], form: str) -> dict[str, np.ndarray]:
        """A state (``get_state``'s flat dict) with its moments as "sums" (this optimizer's
        m_sum, v_sum) or as "averages" (Keras's m = (1 - b1) m_sum and v = (1 - b2) v_sum,
        which the torch engine keeps), whichever form it had them in."""
        if form not in ("sums", "averages"):
            raise ValueError(f"form must be 'sums' or 'averages', got {form!r}")
        weights = {"m": 1 - self.beta_1, "v": 1 - self.beta_2}  # average = weight * sum
        out = {}
        for key, value in flat.items():
            slot, _, name = key.partition(".")
            average = slot.removesuffix("_sum")
            if form == "sums" and slot in weights:
                out[f"{slot}_sum.{name}"] = value / weights[slot]
            elif form == "averages" and slot.endswith("_sum") and average in weights:
                out[f"{average}.{name}"] = value * weights[average]
            else:
                out[key] = value
        return out

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def get_optimizer(optimizer: str | Optimizer) -> Optimizer:
    """An Optimizer from a name ("sgd", "momentum", "adam"; default hyperparameters) or itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[optimizer]()
