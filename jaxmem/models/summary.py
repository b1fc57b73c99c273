"""The parameter table of a model: every leaf's name, shape, dtype, logical axes and size.

Example:
    >>> from jaxmem import tiny_model
    >>> from jaxmem.io import markdown_table
    >>> params, cfg, tok = tiny_model()
    >>> rows = param_table(params, cfg)  # one dict per leaf
    >>> len(rows), sum(r["count"] for r in rows)
    (11, 21760)
    >>> print(markdown_table(rows[:2]))
    | name | shape | dtype | logical axes | count |
    |---|---|---|---|---|
    | final_norm/scale | (32,) | float32 | ('norm',) | 32 |
    | layers/attn/k_proj/kernel | (2, 32, 16) | float32 | ('layers', 'embed', 'kv') | 1024 |
"""

from __future__ import annotations

import math

from flax import traverse_util

from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import logical_axes


def param_table(params: dict, cfg: ModelConfig, labels: dict | None = None) -> list[dict]:
    """One row per leaf of ``params`` (arrays or ``jax.ShapeDtypeStruct``), in tree order.

    Args:
      params: the params tree, with any method's leaves.
      cfg: the model's architecture.
      labels: a method's label tree; adds a ``trains`` column.

    Returns:
      Rows ``{"name", "shape", "dtype", "logical axes", "count"[, "trains"]}``; stacked layer
      weights are one row each, their first axis "layers".
    """
    axes = traverse_util.flatten_dict(logical_axes(params, cfg))
    flat = traverse_util.flatten_dict(params)
    marks = traverse_util.flatten_dict(labels) if labels is not None else {}
    rows = []
    for path, x in flat.items():
        row = {"name": "/".join(path), "shape": tuple(int(d) for d in x.shape),
               "dtype": str(x.dtype), "logical axes": tuple(axes[path]),
               "count": math.prod(x.shape)}
        if labels is not None:
            row["trains"] = marks[path] == "trainable"
        rows.append(row)
    return rows


def format_param_table(rows: list[dict]) -> str:
    """The rows of :func:`param_table` as aligned text with totals (what ``jaxmem info``
    prints)."""
    cols = [c for c in ("name", "shape", "dtype", "logical axes", "count", "trains") if c in rows[0]]
    cell = {"shape": lambda v: "x".join(map(str, v)) or "()",
            "logical axes": lambda v: ", ".join(a or "-" for a in v) or "-",
            "count": lambda v: f"{v:,}", "trains": lambda v: "yes" if v else ""}
    text = [[cell.get(c, str)(r[c]) for c in cols] for r in rows]
    width = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    right = {"count"}
    fmt = lambda vals: "  ".join(v.rjust(w) if c in right else v.ljust(w)  # noqa: E731
                                 for v, w, c in zip(vals, width, cols)).rstrip()
    lines = [fmt(cols), fmt(["-" * w for w in width]), *map(fmt, text)]
    total = sum(r["count"] for r in rows)
    lines.append(f"\n{len(rows)} leaves, {total:,} parameters")
    if "trains" in cols:
        trained = sum(r["count"] for r in rows if r["trains"])
        lines.append(f"trainable: {trained:,} ({100 * trained / max(total, 1):.4g}%)")
    return "\n".join(lines)
