"""Phase timing: nested phases, compile time split out, no-op without a profile."""

import time

import jax
import jax.numpy as jnp

from jaxmem.profiling import Profile, phase


def test_nested_phases_charge_the_innermost():
    with Profile() as prof:
        with phase("outer"):
            time.sleep(0.05)
            with phase("inner"):
                time.sleep(0.1)
            time.sleep(0.05)
        with phase("inner"):
            time.sleep(0.02)
    s = prof.seconds
    assert 0.09 <= s["outer"] < 0.2 and 0.11 <= s["inner"] < 0.25, s
    assert prof.calls == {"outer": 1, "inner": 2}
    assert abs(sum(s.values()) - prof.total) < 1e-6  # every second charged exactly once
    rows = prof.table()
    assert rows[-1]["phase"] == "total" and rows[0]["phase"] == "inner"


def test_compile_time_moves_to_compile():
    def f(x):
        for i in range(40):
            x = jnp.sin(x * i + 1.0)
        return x

    with Profile() as prof:
        with phase("work"):
            jax.jit(f)(jnp.ones(3)).block_until_ready()  # traced, lowered, compiled here
    assert prof.seconds.get("compile", 0) > 0, prof.seconds
    assert abs(sum(prof.seconds.values()) - prof.total) < 1e-6


def test_phase_without_profile_is_a_no_op():
    with phase("nothing"):
        pass
