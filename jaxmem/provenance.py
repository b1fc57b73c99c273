"""What produced a result: :func:`provenance`, recorded in ``run.json``, ``study.json`` and
``metrics.json`` under ``"provenance"``.

It says how a job ran, not what it is, so a folder's identity check ignores it
(:func:`jaxmem.runs.claim_dir`'s ``ignore``): a run resumed with a newer jaxmem, on another host
or from another command line is the same run, and its spec file then records the last start.

Example:
    >>> from jaxmem.provenance import provenance
    >>> sorted(provenance())
    ['command', 'device', 'git_commit', 'host', 'jax', 'jaxmem']
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from pathlib import Path

import jax

import jaxmem

KEY = "provenance"  # the key of the record in run.json, study.json and metrics.json


def provenance() -> dict:
    """The jaxmem and jax versions, jaxmem's git commit, the host, the device kind and the
    command line of this process.

    Returns:
      ``{"jaxmem": "0.1.0", "jax": "0.4.38", "git_commit": "68f0716...-dirty" or None,
      "host": "node1", "device": "cpu" or e.g. "NVIDIA H100 80GB HBM3" (x8 when several),
      "command": sys.argv}``.
    """
    devices = jax.devices()
    kind = devices[0].device_kind
    return {"jaxmem": jaxmem.__version__, "jax": jax.__version__, "git_commit": git_commit(),
            "host": socket.gethostname(),
            "device": kind if len(devices) == 1 else f"{kind} x{len(devices)}",
            "command": list(sys.argv)}


@functools.cache
def git_commit() -> str | None:
    """The commit of the git checkout jaxmem is imported from (``-dirty`` appended when its
    tracked files have changes); None for an installed package or without git."""
    root = Path(jaxmem.__file__).resolve().parent.parent
    if not (root / ".git").exists():  # not a checkout (a wheel in site-packages)
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=10).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


__all__ = ["KEY", "git_commit", "provenance"]
