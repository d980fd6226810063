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


def _rate(learning_rate: float | None, lr: float | None, default: float) -> float:
    """Keras's ``learning_rate=``, or this project's older ``lr=`` (one of them)."""
    if learning_rate is not None and lr is not None and float(learning_rate) != float(lr):
        raise ValueError(f"give learning_rate or lr, not both ({learning_rate} and {lr})")
    rate = learning_rate if learning_rate is not None else lr
    return float(default if rate is None else rate)


class Optimizer:
    """Base class: ``update`` in place; ``get_state``/``set_state`` for checkpoints.
    ``learning_rate`` (alias ``lr``) may change between updates (schedules)."""

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

    @property
    def learning_rate(self) -> float:
        """Keras's name for ``lr``."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = float(value)

    def get_config(self) -> dict:
        """Constructor arguments: ``type(get_optimizer(name))(**rest)`` rebuilds it."""
        return {"name": self.name, "learning_rate": self.lr}

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
    """Keras 3's SGD. momentum 0: p -= lr * g. Otherwise, with a velocity v:

        v = momentum * v - lr * g;   p += v                        (nesterov=False)
        v = momentum * v - lr * g;   p += momentum * v - lr * g    (nesterov=True)
    """

    name = "sgd"

    def __init__(self, learning_rate: float | None = None, momentum: float = 0.0,
                 nesterov: bool = False, *, lr: float | None = None) -> None:
        super().__init__(_rate(learning_rate, lr, 0.01))
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")

    def slots(self) -> tuple[str, ...]:
        return ("v",) if self.momentum else ()

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        lr_g = np.multiply(g, self.lr, out=state["scratch"])
        if not self.momentum:
            return lr_g
        v = state["v"]
        v *= self.momentum
        v -= lr_g
        if self.nesterov:  # step = lr g - momentum v
            lr_g -= np.multiply(v, self.momentum, out=np.empty_like(v))
            return lr_g
        return np.negative(v, out=state["scratch"])  # p += v

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Momentum(SGD):
    """SGD with momentum 0.9 by default (the textbook's Momentum): v = momentum * v - lr * g;
    p += v."""

    name = "momentum"

    def __init__(self, learning_rate: float | None = None, momentum: float = 0.9,
                 nesterov: bool = False, *, lr: float | None = None) -> None:
        super().__init__(learning_rate, momentum, nesterov, lr=lr)


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

    With ``amsgrad`` the denominator uses the running maximum of v (v_hat_sum), as Keras.

    ``get_state`` saves the sums ("m_sum.0.W"), so a resumed run continues bit for bit;
    ``set_state`` also takes Keras's averages ("m.0.W", "v.0.W": the torch engine's state).
    """

    name = "adam"

    def __init__(
        self,
        learning_rate: float | None = None,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        *,
        lr: float | None = None,
    ) -> None:
        super().__init__(_rate(learning_rate, lr, 0.001))
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.amsgrad = bool(amsgrad)
        for name, beta in (("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0 <= beta < 1:  # at 1 a moment never takes in a gradient
                raise ValueError(f"Adam's {name} must be in [0, 1), got {beta}")

    def slots(self) -> tuple[str, ...]:
        return ("m_sum", "v_sum", "v_hat_sum") if self.amsgrad else ("m_sum", "v_sum")

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
        if self.amsgrad:  # the largest v so far
            v_sum = np.maximum(state["v_hat_sum"], v_sum, out=state["v_hat_sum"])
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
        # average = weight * sum
        weights = {"m": 1 - self.beta_1, "v": 1 - self.beta_2, "v_hat": 1 - self.beta_2}
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
            "amsgrad": self.amsgrad,
        }


class AdamW(Adam):
    """Keras 3's AdamW: before each Adam step, decoupled weight decay of every parameter,
    p -= lr * weight_decay * p (Keras's ``_apply_weight_decay``; torch.optim.AdamW's too).

    A refused update (non-finite) undoes the decay again, to within rounding."""

    name = "adamw"

    def __init__(self, learning_rate: float | None = None, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, *, lr: float | None = None) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, lr=lr)
        self.weight_decay = float(weight_decay)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        keep = 1.0 - self.lr * self.weight_decay  # p -= lr wd p
        for p in params.values():
            p *= keep
        try:
            super().update(params, grads)
        except TrainingDivergedError:
            for p in params.values():
                p /= keep
            raise

    def get_config(self) -> dict:
        return {**super().get_config(), "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """Keras 3's RMSprop (epsilon inside the square root):

        v = rho v + (1 - rho) g**2;   a = rho a + (1 - rho) g         (a: centered only)
        step = lr g / sqrt(v + epsilon)   or   lr g / sqrt(v - a**2 + epsilon) (centered)
        with momentum > 0:  s = momentum s + step;  p -= s;   else p -= step
    """

    name = "rmsprop"

    def __init__(self, learning_rate: float | None = None, rho: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-7, centered: bool = False,
                 *, lr: float | None = None) -> None:
        super().__init__(_rate(learning_rate, lr, 0.001))
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)

    def slots(self) -> tuple[str, ...]:
        return ("v", *(("a",) if self.centered else ()), *(("s",) if self.momentum else ()))

    def step(self, g: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        v, tmp, rho = state["v"], state["scratch"], self.rho
        v *= rho  # v = rho v + (1 - rho) g^2
        v += np.multiply(np.square(g, out=tmp), 1 - rho, out=tmp)
        if self.centered:
            a = state["a"]
            a *= rho  # a = rho a + (1 - rho) g
            a += np.multiply(g, 1 - rho, out=tmp)
            np.subtract(v, np.square(a, out=tmp), out=tmp)
            tmp += self.epsilon
        else:
            np.add(v, self.epsilon, out=tmp)
        np.sqrt(tmp, out=tmp)  # step = lr g / sqrt(denominator)
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        if not self.momentum:
            return tmp
        s = state["s"]
        s *= self.momentum
        s += tmp
        np.copyto(tmp, s)
        return tmp

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam,
                                          "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(optimizer: str | Optimizer) -> Optimizer:
    """An Optimizer from a name, any case ("sgd", "SGD", "momentum", "adam", "Adam", "adamw",
    "AdamW", "rmsprop", "RMSprop"; default hyperparameters), or the optimizer itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    key = optimizer.lower() if isinstance(optimizer, str) else optimizer
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[key]()
