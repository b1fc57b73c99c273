"""What a user sees while jaxmem works: messages, progress bars, and time estimates.

* :func:`say`: one line on stderr, through tqdm so that a bar in progress is not cut in two;
* :func:`bar`: a tqdm bar on stderr, or None when progress is off (library calls are quiet
  unless asked: ``progress=True``);
* :func:`measure_flops`: the machine's speed, from a short matrix multiplication on the
  default device; :func:`count_params`: a model's size read from its config or GGUF header,
  without loading its weights. A study's plan (:mod:`jaxmem.study.plan`) turns them into an
  estimated time before any model is loaded: about ``6 x params x tokens`` FLOPs per
  training token (4 for methods that train no base weight), ``2 x params x tokens`` per
  scored token, at :data:`UTILIZATION` of the measured speed;
* :class:`WorkBar`: a bar over estimated work (FLOPs), so its ETA weighs a training epoch
  against an attack; tqdm's average rate replaces the estimate once the first unit finished.

Example:
    >>> from jaxmem.progress import bar, say
    >>> b = bar(3, "scoring", enabled=False)  # None: progress off
    >>> b is None
    True
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import sys
import time
from pathlib import Path

#: The share of the measured matmul speed a training or scoring step is assumed to reach: the
#: estimate's one free constant (small models and short blocks reach less; the bar's ETA,
#: from measured time, takes over after the first finished unit).
UTILIZATION = 0.3


def say(message: str) -> None:
    """Prints one line on stderr without breaking a progress bar that is running."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def bar(total: int | float | None, desc: str, *, enabled: bool = True, unit: str = "it",
        leave: bool = False, **kw):
    """A tqdm bar on stderr (None when not ``enabled``; callers test ``if b:``).

    Example:
        >>> b = bar(2, "demo", enabled=False)
        >>> b is None
        True
    """
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                file=sys.stderr, **kw)


def measure_flops(seconds: float = 0.5) -> float:
    """The default device's float32 matmul speed in FLOP/s, measured for about ``seconds``
    (after one warm-up call that compiles).

    Example:
        >>> measure_flops(0.05) > 1e6
        True
    """
    import jax
    import jax.numpy as jnp

    n = 1024 if jax.default_backend() == "cpu" else 4096
    a = jnp.ones((n, n), jnp.float32) / n
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    calls, t0 = 0, time.perf_counter()
    while True:
        f(a).block_until_ready()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return 2 * n**3 * calls / dt


def count_params(model: str) -> int | None:
    """The number of parameters of ``model`` (a name :func:`jaxmem.models.load_model` takes)
    without loading its weights: from a GGUF file's header or a config.json; None when neither
    is at hand (a hub model not in the local cache, an unreadable file).

    Example:
        >>> count_params("smollm2-135m")  # the embedded default, from its GGUF header
        134515008
    """
    from jaxmem.models.checkpoints import EMBEDDED, model_config

    try:
        name = str(model)
        if name in EMBEDDED or name.endswith(".gguf"):
            return gguf_param_count(EMBEDDED[name]() if name in EMBEDDED else name)
        cfg = model_config(name)
        if cfg is None:
            return None
        import jax

        from jaxmem.models import abstract_params
        return int(sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(cfg))))
    except Exception:  # an estimate only: never the reason a study fails
        return None


# GGUF value types -> their size in bytes (8: string, 9: array are read apart)
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_param_count(path: str | os.PathLike) -> int:
    """The number of weights a GGUF file (version 2 or 3) holds, summed over its tensor infos
    (the header only; reading it with the gguf package parses every tokenizer entry and took
    4 s for SmolLM2)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] < 2:
            raise ValueError(f"{path} is not a GGUF file of version 2 or later")
        n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
        pos = 24

        def skip_string(p):
            return p + 8 + struct.unpack_from("<Q", m, p)[0]

        def skip_value(p, vtype):
            if vtype == 8:
                return skip_string(p)
            if vtype == 9:
                atype, n = struct.unpack_from("<IQ", m, p)
                p += 12
                if atype in _GGUF_SIZES:
                    return p + n * _GGUF_SIZES[atype]
                for _ in range(n):
                    p = skip_value(p, atype)
                return p
            return p + _GGUF_SIZES[vtype]

        for _ in range(n_kv):
            pos = skip_string(pos)
            pos = skip_value(pos + 4, struct.unpack_from("<I", m, pos)[0])
        total = 0
        for _ in range(n_tensors):
            pos = skip_string(pos)
            n_dims = struct.unpack_from("<I", m, pos)[0]
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            pos += 4 + 8 * n_dims + 4 + 8  # dims, then the type and the data offset
            total += math.prod(dims)
        return total


def duration(seconds: float) -> str:
    """A duration for a person: ``"45 s"``, ``"12 min"``, ``"3.5 h"``.

    Example:
        >>> duration(42), duration(725), duration(12_600)
        ('42 s', '12 min', '3.5 h')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class WorkBar:
    """A bar over estimated work (FLOPs, or any unit), so its ETA weighs each finished unit by
    its size; before the first one finishes it shows the estimate from ``rate`` (work per
    second), after that tqdm's average over the measured time.

    Example:
        >>> wb = WorkBar(total=10.0, done=4.0, rate=2.0, desc="study", enabled=False)
        >>> wb.estimate_left()  # 6 units of work at 2 per second
        3.0
        >>> wb.update(2.0); wb.close()
    """

    def __init__(self, total: float, done: float, rate: float | None, desc: str,
                 enabled: bool = True):
        self.total, self.done, self.rate = total, done, rate
        self.t0 = time.perf_counter()
        self.done_start = done
        self.bar = bar(1.0, desc, enabled=enabled, leave=True, smoothing=0,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed{postfix}")
        self._show()

    def estimate_left(self) -> float | None:
        """Seconds left: measured once some work finished in this session, else from ``rate``."""
        left = self.total - self.done
        spent, worked = time.perf_counter() - self.t0, self.done - self.done_start
        if worked > 0:
            return left * spent / worked
        return left / self.rate if self.rate else None

    def _show(self) -> None:
        if not self.bar:
            return
        self.bar.n = self.done / self.total if self.total else 1.0
        left = self.estimate_left()
        self.bar.set_postfix_str("" if left is None else f"about {duration(left)} left",
                                 refresh=False)
        self.bar.refresh()

    def grow(self, extra: float) -> None:
        """The estimate changed by ``extra`` units (a corpus loaded with other sizes)."""
        self.total += extra
        self._show()

    def update(self, work: float) -> None:
        self.done += work
        self._show()

    def close(self) -> None:
        if self.bar:
            self.bar.close()


__all__ = ["UTILIZATION", "WorkBar", "bar", "count_params", "duration", "gguf_param_count",
           "measure_flops", "say"]
