"""JAX's persistent compilation cache, switched on for jaxmem's command line and test suite.

A compiled train step or scoring pass of the 135M default model costs 1-5 s to compile on a
2-core CPU, and a study compiles dozens of them; a second process with the same shapes, flags
and jax version loads the executables from disk instead. JAX keys each entry on the HLO, the
compile options, the backend and the jax/jaxlib versions, so a stale entry is never reused.

Where the cache lives (first match wins):

1. ``JAXMEM_COMPILE_CACHE=off`` (or ``0``, ``false``, ``no``, ``none``): no cache;
2. ``JAXMEM_COMPILE_CACHE=/some/dir``: that directory;
3. ``$XDG_CACHE_HOME/jaxmem/xla``, by default ``~/.cache/jaxmem/xla``.

A user who set ``jax_compilation_cache_dir`` themselves (``JAX_COMPILATION_CACHE_DIR``) keeps
it. Library users opt in with :func:`enable`.

Example:
    >>> from jaxmem import compile_cache
    >>> compile_cache.enable()  # before the first jit call
    PosixPath('...')
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "JAXMEM_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no", "none")
# Entries for compiles shorter than this are not written: cheap to redo, and they would
# crowd the directory (a study compiles many tiny helper functions).
MIN_COMPILE_SECONDS = 0.5
# Least recently used entries are evicted past this size (a 135M model's train step is ~10 MB).
MAX_BYTES = 4 * 2**30


def default_dir() -> Path | None:
    """The cache directory the environment asks for (see the module docstring), or None."""
    raw = os.environ.get(ENV, "").strip()
    if raw.lower() in _OFF:
        return None
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxmem" / "xla"


def enable(path: str | os.PathLike | None = None, *,
           min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Turns on JAX's persistent compilation cache; returns its directory (None: left off).

    Args:
      path: the directory; default :func:`default_dir`. Created if missing. A directory that
        cannot be created leaves the cache off (compiling still works), with a warning.
      min_compile_seconds: compiles shorter than this are not written (the environment
        variable ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` wins if set).
    """
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own setting wins
        return Path(jax.config.jax_compilation_cache_dir)
    target = Path(path).expanduser() if path is not None else default_dir()
    if target is None:
        return None
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        import warnings

        warnings.warn(f"Compilation cache off: cannot create {target} ({e}). Set {ENV} to a "
                      "writable directory, or to 'off'.", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(target))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return target
