"""torch.optim without loading torch._dynamo, while nothing in the process compiles.

An optimizer's constructor, ``step``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` import ``torch._dynamo`` on their first call (about 1 s on 2 cores,
and 0.4 s more when the process exits), only to tell a ``torch.compile`` trace to skip
them or to break its graph there. While ``torch._dynamo`` is not loaded no trace runs,
so the torch engine calls them as they are (``dynamo_free``, ``step``); once anything has
loaded it, both are the plain calls. Measured by benchmarks/bench_process.py.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim import optimizer as _optimizer  # the module (torch.optim hides its name)

# The optimizer methods torch wraps in torch._disable_dynamo (constructors call
# add_param_group); the wrapper keeps the undecorated function under this attribute.
WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_CACHE = "__dynamo_disable"


def _loaded() -> bool:
    return "torch._dynamo" in sys.modules


@contextmanager
def dynamo_free(kind: type[torch.optim.Optimizer]) -> Iterator[None]:
    """In the block, ``kind``'s torch._disable_dynamo methods run undecorated (torch's
    own cache slot set to the function itself, for the block only)."""
    if _loaded():
        yield
        return
    set_here = []
    for name in WRAPPED:
        fn = inspect.unwrap(getattr(kind, name))
        if getattr(fn, _CACHE, None) is None:
            setattr(fn, _CACHE, fn)
            set_here.append(fn)
    try:
        yield
    finally:
        for fn in set_here:
            if getattr(fn, _CACHE, None) is fn:
                delattr(fn, _CACHE)


def step(optimizer: torch.optim.Optimizer) -> Any:
    """``optimizer.step()``: without its wrappers (no step hooks, grad mode off, as its own
    wrapper sets it) while torch._dynamo is unloaded and nothing hooks or profiles it."""
    # torch's private names, read with defaults that fall back to the plain call, so a
    # torch without them still steps correctly (only without the saving)
    if (
        _loaded()
        or optimizer.defaults.get("differentiable")
        or getattr(optimizer, "_optimizer_step_pre_hooks", True)
        or getattr(optimizer, "_optimizer_step_post_hooks", True)
        or getattr(_optimizer, "_global_optimizer_pre_hooks", True)
        or getattr(_optimizer, "_global_optimizer_post_hooks", True)
        or getattr(torch.autograd, "_profiler_enabled", lambda: True)()
    ):
        return optimizer.step()
    with torch.no_grad():
        return inspect.unwrap(type(optimizer).step)(optimizer)
