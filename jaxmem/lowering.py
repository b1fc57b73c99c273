"""Lowering a jitted step for TPU and CUDA without the hardware, and reading what came out.

``jax.export`` lowers a jitted function to StableHLO for any platform from a CPU host, over
abstract arguments (``jax.ShapeDtypeStruct``, sharded ones included). :func:`export_for` does
that; :func:`findings` reads the module's text for what must not be on an accelerator's hot
path (float64, host callbacks, matmuls not in the compute dtype) and what it holds (custom
calls, collectives). The SPMD partitioner inserts the collectives of a sharded step only when
the target compiles it, so :func:`all_gathers` reads a *compiled* module's HLO text (e.g.
``jitted.lower(...).compile().as_text()`` on forced CPU devices: the same partitioner), and
:func:`full_weight_gathers` names the gathers that re-assemble a whole sharded weight.

Example:
    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda x, w: jnp.tanh(x @ w))
    >>> x = jax.ShapeDtypeStruct((4, 8), jnp.bfloat16)
    >>> w = jax.ShapeDtypeStruct((8, 8), jnp.bfloat16)
    >>> exp = export_for(f, x, w)
    >>> exp.platforms
    ('tpu', 'cuda')
    >>> info = findings(exp.mlir_module())
    >>> info["f64"], info["host_callbacks"], info["dots_not_in"]("bf16")
    ([], [], [])
"""

from __future__ import annotations

import re

import jax
import numpy as np

PLATFORMS = ("tpu", "cuda")

#: custom_call targets and ops by which a module calls back into the Python host
#: (``jax.pure_callback``, ``io_callback``, ``jax.debug.print``...): CPU/GPU use custom calls,
#: TPU host transfers (send/recv to the host).
HOST_CALLBACK_TARGETS = re.compile(r"python|callback|host", re.I)

_CUSTOM_CALL = re.compile(r"custom_call\s+@([\w.$-]+)|call_target_name\s*=\s*\"([^\"]+)\"")
_F64 = re.compile(r"[x<]f64>|\bf64\b|complex<f64>")
_DOT = re.compile(r"stablehlo\.(?:dot_general|dot)\b[^\n]*?:\s*\(([^)]*)\)")
_COLLECTIVE = re.compile(r"stablehlo\.(all_gather|all_reduce|reduce_scatter|all_to_all|"
                         r"collective_permute|collective_broadcast)\b")
_ELEM = re.compile(r"tensor<(?:[\d?]+x)*(\w+)>")


def abstract(tree, shardings=None):
    """``jax.ShapeDtypeStruct`` leaves for a tree of arrays (or of anything with shape and
    dtype), with the matching leaf of ``shardings`` attached when given."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                        tree, shardings)


def export_for(jitted, *args, platforms=PLATFORMS, **kwargs) -> jax.export.Exported:
    """``jax.export.export(jitted, platforms=platforms)(*args, **kwargs)``: one module that
    runs on every platform named (jitted must come from ``jax.jit``; static arguments by
    keyword or position as its own call takes them)."""
    return jax.export.export(jitted, platforms=tuple(platforms))(*args, **kwargs)


def _elem(tensor_type: str) -> str:
    m = _ELEM.search(tensor_type.strip())
    return m.group(1) if m else tensor_type.strip()


def findings(mlir: str) -> dict:
    """What a StableHLO module's text holds.

    Returns a dict of:
      ``f64``: lines that name a float64 type (none belongs on an accelerator's hot path);
      ``custom_calls``: the sorted custom_call targets;
      ``host_callbacks``: those targets, and send/recv ops, that reach the Python host;
      ``collectives``: the collective ops, by name (a partitioned module's; none before);
      ``dots``: the element types of each matmul's operands, e.g. ``("bf16", "bf16")``;
      ``dots_not_in(dtype)``: the dots whose operands are not all ``dtype`` (a function).
    """
    lines = mlir.splitlines()
    targets = sorted({a or b for a, b in _CUSTOM_CALL.findall(mlir)})
    host = [t for t in targets if HOST_CALLBACK_TARGETS.search(t)]
    host += [ln.strip()[:200] for ln in lines
             if re.search(r"stablehlo\.(send|recv)\b", ln) and "is_host_transfer" in ln]
    dots = [tuple(_elem(t) for t in re.split(r",\s*(?=tensor<)", ops))
            for ops in _DOT.findall(mlir)]
    collectives: dict[str, int] = {}
    for name in _COLLECTIVE.findall(mlir):
        collectives[name] = collectives.get(name, 0) + 1
    return {
        "f64": [ln.strip()[:200] for ln in lines if _F64.search(ln)],
        "custom_calls": targets,
        "host_callbacks": host,
        "collectives": collectives,
        "dots": dots,
        "dots_not_in": lambda dtype: [d for d in dots if any(e != dtype for e in d)],
    }


_GATHER = re.compile(r"=\s*\(?(\w+)\[([\d,]*)\][^=]*?\ball-gather(?:-start)?\(")


def all_gathers(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """(element type, result shape) of every all-gather in a compiled module's HLO text."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d))
            for dt, dims in _GATHER.findall(hlo)]


def full_weight_gathers(hlo: str, params, shardings) -> list[tuple[str, tuple[int, ...]]]:
    """The all-gathers of ``hlo`` whose result has the full shape of a weight that
    ``shardings`` splits (any element type: a master weight, its bfloat16 copy, an optimizer
    moment or its gradient).

    Used on weights stacked over layers ([L, ...], the scanned blocks): FSDP gathers such a
    weight one layer at a time inside the layer scan, so a gather of all L layers at once
    holds the whole model on every device, which is what FSDP exists to avoid.
    """
    sharded = {tuple(np.shape(x)) for x, s in zip(jax.tree.leaves(params),
                                                   jax.tree.leaves(shardings))
               if any(a is not None for a in s.spec)}
    return [g for g in all_gathers(hlo) if g[1] in sharded]


__all__ = ["HOST_CALLBACK_TARGETS", "PLATFORMS", "abstract", "all_gathers", "export_for",
           "findings", "full_weight_gathers"]
