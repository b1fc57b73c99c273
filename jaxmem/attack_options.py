"""The options of the attacks that take ``name:key=value,...`` specs: ``lira`` and ``rmia``.

What :func:`jaxmem.attacks.parse_attack` needs to read their specs, and which reference sets a
list of specs asks for (:func:`reference_requests`), apart from the attacks themselves
(:mod:`jaxmem.reference_attacks`), which train and score reference models.

Example:
    >>> parse_options("rmia", "k=4,a=0.3", "rmia:k=4,a=0.3")
    ('rmia:k=4,a=0.3', {'k': 4, 'pop': None, 'a': 0.3, 'gamma': 1.0})
    >>> reference_requests(["loss", "lira:k=4", "rmia:k=4"])
    {(4, None): True}
"""

from __future__ import annotations

from typing import Sequence

OPTIONS = {"lira": ("k", "pop", "variance"), "rmia": ("k", "pop", "a", "gamma")}
DEFAULTS = {"k": 4, "pop": None, "variance": "global", "a": "tune", "gamma": 1.0}
EXAMPLES = {"lira": "lira:k=4", "rmia": "rmia:k=4,a=tune"}
# how --help shows each spec
HELP = {"lira": "lira:k=K,pop=P,variance=global|per_example",
        "rmia": "rmia:k=K,pop=P,a=tune|A,gamma=G"}


def _option(name: str, spec: str, key: str, raw: str):
    def bad(rule):
        return ValueError(f"Attack {spec!r}: {key} must be {rule}, got {raw!r} (e.g. "
                          f"{EXAMPLES[name]}).")

    if key in ("k", "pop"):
        try:
            v = int(raw)
        except ValueError:
            v = None
        if key == "k" and (v is None or v < 2 or v % 2):
            raise bad("an even integer >= 2 (the references train on complementary halves)")
        if key == "pop" and (v is None or v < 2):
            raise bad("an integer >= 2 (population texts; each reference trains on half)")
        return v
    if key == "variance":
        if raw not in ("global", "per_example"):
            raise bad("global or per_example")
        return raw
    if key == "a" and raw == "tune":
        return raw
    try:
        v = float(raw)
    except ValueError:
        v = None
    if key == "a" and (v is None or not 0 <= v <= 1):
        raise bad("tune or a number in [0, 1]")
    if key == "gamma" and (v is None or not v > 0):
        raise bad("a number > 0")
    return v


def parse_options(name: str, arg: str, spec: str) -> tuple[str, dict]:
    """``("rmia", "k=4,a=0.3")`` -> (canonical spec ``"rmia:k=4,a=0.3"``, options).

    The canonical spec names ``k`` (and RMIA's ``a``) always, other options where not default.

    Raises:
      ValueError: an unknown option, a bad value, or ``a=tune`` with k < 4; naming the fix.
    """
    opts = {key: DEFAULTS[key] for key in OPTIONS[name]}
    for item in filter(None, (x.strip() for x in arg.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in opts:
            raise ValueError(f"Attack {spec!r}: {name} takes options {', '.join(OPTIONS[name])} "
                             f"as key=value, comma-separated (e.g. {EXAMPLES[name]}); got "
                             f"{item!r}.")
        opts[key] = _option(name, spec, key, raw.strip())
    if opts.get("a") == "tune" and opts["k"] < 4:
        raise ValueError(f"Attack {spec!r}: RMIA tunes a by attacking each reference with the "
                         f"others, which needs k >= 4; give a number (rmia:k={opts['k']},a=0.5) "
                         "or k=4.")
    shown = [f"k={opts['k']}"] + [f"{key}={opts[key]:g}" if isinstance(opts[key], float)
                                  else f"{key}={opts[key]}" for key in OPTIONS[name]
                                  if key != "k" and (key == "a" or opts[key] != DEFAULTS[key])]
    return f"{name}:{','.join(shown)}", opts


def reference_requests(specs: Sequence[str]) -> dict[tuple, bool]:
    """{(k, pop): whether the population's log-likelihoods are needed (RMIA)} of the LiRA /
    RMIA specs among ``specs``."""
    out: dict[tuple, bool] = {}
    for spec in specs:
        name, _, arg = spec.partition(":")
        if name in OPTIONS:
            _, opts = parse_options(name, arg, spec)
            key = (opts["k"], opts["pop"])
            out[key] = out.get(key, False) or name == "rmia"
    return out


__all__ = ["DEFAULTS", "EXAMPLES", "HELP", "OPTIONS", "parse_options", "reference_requests"]
