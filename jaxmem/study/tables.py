"""The tables of a study's report, and the text around them: each (model, dataset)'s last
epoch, verbatim extraction and DP privacy, every TPR with its Clopper-Pearson interval.

Each function takes result rows (:mod:`jaxmem.study.rows`, summarized over seeds by
:func:`jaxmem.seeds.over_seeds` where a study has several) and returns rows for
:func:`jaxmem.io.markdown_table`, or the lines of the report.

Example:
    >>> strongest_text({"attack": "loss", "tpr": 0.25, "fpr": 0.01}, n_members=100)
    'loss: TPR 0.25 [0.169, 0.347] @ 1% FPR'
"""

from __future__ import annotations

from jaxmem.dp import clopper_pearson, empirical_epsilon_cap
from jaxmem.io import markdown_table
from jaxmem.metrics import TPR_KEYS, strongest_attack, tpr_unsupported_reason
from jaxmem.seeds import mean_sd_text
from jaxmem.study.utility import base_val_ppl, comparable_utility
from jaxmem.tuning.names import display_name

__all__ = ["PAPER_TABLE2", "extraction_table", "largest_empirical_epsilon",
           "largest_empirical_epsilon_text", "last_epoch_table", "privacy_lines",
           "privacy_table", "strongest_attacks", "strongest_text", "tpr_ci", "tpr_note",
           "tpr_text"]

# The paper's Table 2 (LLaMA2-7B, 5 epochs, LOSS AUC), for side-by-side reading where the
# setting matches.
PAPER_TABLE2 = {
    "webnlg": {"head": .905, "lora": .852, "prefix": .621, "prompt": .582, "ptuning": .626},
    "wikitext": {"head": .889, "lora": .787, "prefix": .484, "prompt": .478, "ptuning": .487},
    "xsum": {"head": .823, "lora": .716, "prefix": .522, "prompt": .528, "ptuning": .532},
}

def strongest_text(best: dict | None, n_nonmembers: int | None = None,
                   n_members: int | None = None) -> str:
    """:func:`strongest_attack`'s answer for a table: ``"min_k_pp: TPR 0.12 @ 1% FPR"``, with
    the TPR's Clopper-Pearson 95% interval (:func:`tpr_ci`) when ``n_members`` is given."""
    if best is None:
        return (tpr_unsupported_reason(max(TPR_KEYS.values()), n_nonmembers)
                if n_nonmembers is not None else "n/a")
    ci = tpr_ci({"tpr": best["tpr"], "n_members": n_members}, "tpr") if n_members else None
    return (f"{best['attack']}: TPR {best['tpr']:.3g}"
            + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" @ {best['fpr'] * 100:g}% FPR")


def strongest_attacks(final: list[dict]) -> dict[str, dict]:
    """Per method, the row of its :func:`strongest_attack`. ``final`` is one (model,
    dataset)'s last-epoch rows.

    Returns:
        ``{method: row}``; methods whose non-members support no FPR of :data:`TPR_KEYS` are
        left out.
    """
    by_method: dict[str, dict] = {}
    for r in final:
        by_method.setdefault(r["method"], {})[r["attack"]] = r
    best = {m: strongest_attack(rs) for m, rs in by_method.items()}
    return {m: by_method[m][b["attack"]] for m, b in best.items() if b is not None}


def tpr_ci(r: dict, key: str) -> tuple[float, float] | None:
    """A row's TPR as its Clopper-Pearson 95% interval over the members (the TPR is k of
    ``n_members`` members above the threshold the non-members set; the threshold's own noise
    is not in it); None without a TPR or a member count."""
    if r.get(key) is None or not r.get("n_members"):
        return None
    n = int(r["n_members"])
    low, high = clopper_pearson(int(round(r[key] * n)), n, 0.05)
    return float(low), float(high)


def tpr_note(sub: list[dict]) -> str:
    """The caveat under a table whose TPR at 1% FPR rests on fewer than 1,000 non-members:
    there it is the TPR at about ``n_nonmembers / 100`` false positives (empty otherwise)."""
    ns = [r["n_nonmembers"] for r in sub if r.get("n_nonmembers")]
    if not ns or tpr_unsupported_reason(0.01, min(ns)) or min(ns) >= 1000:
        return ""
    n = min(ns)
    k = n // 100
    return (f"TPR intervals are Clopper-Pearson 95% over the members (exact binomial), at the "
            "threshold the non-members set (with several training seeds: one run's interval at "
            f"the mean count, beside mean ± sd over the seeds). With {n} non-members, TPR at "
            "1% FPR is the TPR at "
            f"{'one false positive' if k == 1 else f'{k} false positives'} at most: that "
            "threshold's own noise is not in the interval, and a TPR at 1% FPR taken as a "
            "headline needs >= 1,000 non-members (10 false positives).")


def tpr_text(r: dict, key: str):
    """A TPR for a table: ``"0.250 [0.176, 0.337]"`` (its Clopper-Pearson 95% interval over the
    members, :func:`tpr_ci`), or why the non-members cannot support it. A row summarized over
    several training seeds (:func:`jaxmem.seeds.over_seeds`) reads ``"0.250 ± 0.020 [0.176,
    0.337]"``: mean ± sd over the seeds, and the interval of one run at the mean count."""
    if "n_nonmembers" in r and tpr_unsupported_reason(TPR_KEYS[key], r["n_nonmembers"]):
        return tpr_unsupported_reason(TPR_KEYS[key], r["n_nonmembers"])
    if r.get(key) is None:
        return "n/a"
    ci = tpr_ci(r, key)
    value = mean_sd_text(r, key) if r.get("n_seeds", 1) > 1 else f"{r[key]:.3f}"
    return value + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def last_epoch_table(sub: list[dict], attack: str, model: str, dataset: str) -> list[dict]:
    """One row per method: epoch, validation perplexity and whether it is at comparable utility
    (:func:`comparable_utility`), every attack's AUC (the main attack's with its interval), the
    main attack's TPR at each FPR, and the strongest attack (:func:`strongest_attack`)."""
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    base = base_val_ppl(sub, model, dataset)
    table = []
    for method in dict.fromkeys(r["method"] for r in sub):
        rs = {r["attack"]: r for r in sub if r["method"] == method}
        any_row = next(iter(rs.values()))
        row = {"method": display_name(method), "epoch": any_row["epoch"],
               "val ppl": (mean_sd_text(any_row, "val_ppl", ".2f") if any_row.get("n_seeds", 1) > 1
                           else round(any_row["val_ppl"], 3))}
        if base is not None:
            ppl = any_row["val_ppl"]
            verdict = "comparable" if comparable_utility(ppl, base) else "NOT comparable"
            row["utility"] = ("reference" if method == "base"
                              else f"{verdict} ({ppl / base:.2f}x base ppl)")
        if any_row.get("gap") is not None:
            row["train-val gap"] = mean_sd_text(any_row, "gap", ".2f")
        several = any_row.get("n_seeds", 1) > 1  # mean ± sd over training seeds
        for a in attacks:
            row[f"{a} AUC"] = (mean_sd_text(rs[a], "auc") if several
                               else f"{rs[a]['auc']:.3f} [{rs[a]['auc_lo']:.2f}, "
                               f"{rs[a]['auc_hi']:.2f}]" if a == attack
                               else round(rs[a]["auc"], 3))
        for key in TPR_KEYS:
            row[f"{attack} TPR@{key[4:-4]}%FPR"] = tpr_text(rs[attack], key)
        row["strongest attack"] = strongest_text(strongest_attack(rs),
                                                 any_row.get("n_nonmembers"),
                                                 any_row.get("n_members"))
        paper = PAPER_TABLE2.get(dataset, {}).get(method.partition(":")[0])
        if model == "llama-2-7b" and paper is not None:
            row["paper LOSS AUC"] = paper
        table.append(row)
    return table


def extraction_table(sub: list[dict]) -> list[dict]:
    """One row per (method, epoch) with verbatim extraction (the study's ``extraction:``):
    the k-extractable rate and the fraction of suffix tokens reproduced, members against
    non-members (the control)."""
    table, seen = [], set()
    for r in sub:
        key = (r["method"], r["epoch"])
        if "k_extractable_rate_members" not in r or key in seen:
            continue
        seen.add(key)
        row = {"method": display_name(r["method"]), "epoch": r["epoch"],
               "k-extractable, members": round(r["k_extractable_rate_members"], 3),
               "k-extractable, non-members": round(r["k_extractable_rate_nonmembers"], 3),
               "tokens reproduced, members": round(r["token_match_members"], 3),
               "tokens reproduced, non-members": round(r["token_match_nonmembers"], 3)}
        for col in r:  # one column per n: "(n, p)-discoverable, members / non-members"
            if col.startswith("discoverable_n") and col.endswith("_members"):
                n = col[len("discoverable_n"):-len("_members")]
                row[f"({n}, {r['discoverable_p']:g})-discoverable, members / non-members"] = (
                    f"{r[col]:.3f} / {r[f'discoverable_n{n}_nonmembers']:.3f}")
        table.append(row)
    return table


def privacy_table(sub: list[dict]) -> list[dict]:
    """One row per method (last epoch): the DP-SGD accountant's epsilon (infinite without DP)
    and noise multiplier, and the empirical epsilon each attack's ROC proves
    (``empirical_epsilon`` of the rows, :func:`jaxmem.dp.empirical_epsilon`), the largest
    named."""
    attacks = list(dict.fromkeys(r["attack"] for r in sub))
    table = []
    for method in dict.fromkeys(r["method"] for r in sub):
        rs = {r["attack"]: r for r in sub if r["method"] == method}
        r0 = next(iter(rs.values()))
        eps = r0.get("dp_epsilon")
        row = {"method": display_name(method), "epoch": r0["epoch"],
               "DP-SGD epsilon": ("reference" if method == "base" else "inf (no DP)"
                                  if eps is None else f"{eps:.2f} (delta {r0['dp_delta']:g})"),
               "noise multiplier": "" if eps is None else round(r0["dp_noise_multiplier"], 3)}
        for a in attacks:
            v = rs[a].get("empirical_epsilon") if a in rs else None
            row[f"{a} emp. eps"] = "n/a" if v is None else round(v, 2)
        row["largest"] = largest_empirical_epsilon_text(rs)
        table.append(row)
    return table


def largest_empirical_epsilon(by_attack: dict[str, dict]) -> tuple[float | None, str | None]:
    """(the largest ``empirical_epsilon`` of one cell's rows ``{attack: row}``, its attack);
    (None, None) when no row has one."""
    known = {a: r["empirical_epsilon"] for a, r in by_attack.items()
             if r.get("empirical_epsilon") is not None}
    if not known:
        return None, None
    top = max(known, key=known.get)
    return known[top], top


def largest_empirical_epsilon_text(by_attack: dict[str, dict]) -> str:
    """:func:`largest_empirical_epsilon` for a table: ``"1.23 (ref)"``, ``"0"`` or ``"n/a"``."""
    v, attack = largest_empirical_epsilon(by_attack)
    return "n/a" if v is None else f"{v:.2f} ({attack})" if v > 0 else "0"


def privacy_lines(sub: list[dict]) -> list[str]:
    """The report's DP section for one (model, dataset): :func:`privacy_table` and what it
    means, with the most any attack could prove on this many examples."""
    if not any(r.get("dp_epsilon") is not None for r in sub):
        return []  # no DP: nothing to set the empirical epsilons against (they are in results.csv)
    r0 = sub[0]
    delta = max((r.get("dp_delta") or 0) for r in sub)
    cap = empirical_epsilon_cap(r0["n_members"], r0["n_nonmembers"], delta=delta)
    return [f"Privacy (DP-SGD, delta {delta:g}): the accountant's epsilon (an upper bound, "
            "`jaxmem.dp`) against the empirical epsilon each attack's ROC proves (a lower bound "
            "at 95% confidence per attack, Clopper-Pearson over every threshold; Jagielski et "
            "al. 2020). Where the guarantee holds, every empirical epsilon should stay below "
            "the accountant's, up to chance (the largest of several attacks is not a 95% bound: "
            "no correction for multiple testing) and the accountant's Poisson-sampling "
            f"assumption. With {r0['n_members']} members and {r0['n_nonmembers']} non-members "
            f"no attack can prove more than {cap:.2f}. The base model never saw the members: a "
            "positive value there measures the split, not training.", "",
            markdown_table(privacy_table(sub)), ""]
