"""Where a study's wall time goes: named phases, with JAX's compile time split out.

The library marks its phases with :func:`phase` ("train steps", "validation", "scoring", ...);
outside a :class:`Profile` that is a no-op. Inside one, each second of wall time is charged to
the innermost open phase, except the seconds JAX spends tracing, lowering and compiling, which
go to "compile" (JAX reports them through ``jax.monitoring``; compiled executables loaded from
the persistent cache count as compiles too, only shorter).

Example:
    >>> import jax, jax.numpy as jnp
    >>> with Profile() as prof:
    ...     with phase("load data"):
    ...         time.sleep(0.3)
    ...     with phase("scoring"):  # its compile time is charged to "compile"
    ...         y = jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3))
    >>> rows = {r["phase"]: r for r in prof.table()}  # the largest first, then "total"
    >>> {"load data", "compile", "total"} <= set(rows), rows["load data"]["seconds"] >= 0.3
    (True, True)
"""

from __future__ import annotations

import contextlib
import threading
import time

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_active: list["Profile"] = []  # the open profiles (usually none or one)
_listener_installed = False
_lock = threading.Lock()


def _on_event(event: str, seconds: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        for prof in list(_active):
            prof._compiled(seconds)


def _install_listener() -> None:
    global _listener_installed
    with _lock:
        if not _listener_installed:
            import jax

            jax.monitoring.register_event_duration_secs_listener(_on_event)
            _listener_installed = True


class Profile:
    """Collects phase times while open (a context manager); see the module docstring."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list] = []  # [name, start of its current slice]
        self._start = self._end = None

    def __enter__(self) -> "Profile":
        _install_listener()
        self._start = time.perf_counter()
        self._stack = [["other", self._start]]
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        now = time.perf_counter()
        while self._stack:
            self._close_slice(now)
            self._stack.pop()
        self._end = now
        _active.remove(self)

    def _close_slice(self, now: float) -> None:
        name, since = self._stack[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + now - since
        self._stack[-1][1] = now

    def _enter(self, name: str) -> None:
        now = time.perf_counter()
        self._close_slice(now)
        self._stack.append([name, now])
        self.calls[name] = self.calls.get(name, 0) + 1

    def _exit(self) -> None:
        now = time.perf_counter()
        self._close_slice(now)
        self._stack.pop()
        self._stack[-1][1] = now

    def _compiled(self, seconds: float) -> None:
        # Compile events arrive after the fact, inside the phase that triggered them: move
        # their seconds from that phase to "compile".
        name = self._stack[-1][0] if self._stack else "other"
        self.seconds[name] = self.seconds.get(name, 0.0) - seconds
        self.seconds["compile"] = self.seconds.get("compile", 0.0) + seconds

    @property
    def total(self) -> float:
        end = self._end if self._end is not None else time.perf_counter()
        return end - self._start

    def table(self) -> list[dict]:
        """Rows {phase, seconds, share, calls}, the largest first (a Markdown table's rows)."""
        total = self.total or 1.0
        rows = [{"phase": k, "seconds": round(v, 2), "share": f"{100 * v / total:.0f}%",
                 "calls": self.calls.get(k, "")}
                for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1]) if v > 0.005]
        return rows + [{"phase": "total", "seconds": round(total, 2), "share": "100%",
                        "calls": ""}]


@contextlib.contextmanager
def phase(name: str):
    """Charges the enclosed wall time to ``name`` in every open :class:`Profile` (nested phases
    take their own time out of the enclosing one). A no-op when no profile is open."""
    profs = list(_active)
    for p in profs:
        p._enter(name)
    try:
        yield
    finally:
        for p in profs:
            p._exit()
