"""``jaxmem study`` (the grid of models x datasets x methods x epochs x attacks) and ``jaxmem
frontier`` (one study per DP-SGD epsilon, then the privacy-utility frontier) and ``jaxmem
plan`` (a study's memory and hours on an accelerator, without training: jaxmem.capacity)."""

from __future__ import annotations

from jaxmem.cli.common import main_process
from jaxmem.io import markdown_table
from jaxmem.runs import STUDY_SPEC, refuse_foreign
from jaxmem.study import StudyConfig, run_study
from jaxmem.study.frontier import SPEC, frontier_table, load_frontier, run_frontier


def cmd_study(args) -> int:
    scfg = StudyConfig.from_yaml(args.config, args.set or [])
    refuse_foreign(args.out_dir, STUDY_SPEC, "study")
    rows = run_study(scfg, args.out_dir, overwrite=args.overwrite, mesh=args.mesh,
                     attention_impl=args.attention, remat=args.remat)
    if not main_process():
        return 0
    last = {}
    for r in rows:
        last[(r["model"], r["dataset"], r["method"])] = r["epoch"]
    first_attack = rows[0]["attack"]
    print(markdown_table([
        {k: (round(v, 4) if isinstance(v, float) else "n/a" if v is None else v)
         for k, v in r.items()
         if k in ("model", "dataset", "method", "epoch", "val_ppl", "attack", "auc", "tpr@1%fpr")}
        for r in rows if r["attack"] == first_attack
        and r["epoch"] == last[(r["model"], r["dataset"], r["method"])]]))
    print(f"\nreport: {args.out_dir}/report.md")
    return 0


def cmd_frontier(args) -> int:
    scfg, fcfg = load_frontier(args.config, args.set or [])
    refuse_foreign(args.out_dir, SPEC, "frontier")
    rows = run_frontier(scfg, fcfg, args.out_dir, overwrite=args.overwrite, mesh=args.mesh,
                        attention_impl=args.attention, remat=args.remat)
    if main_process():
        for group in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
            print(f"{group[0]} / {group[1]}")
            print(markdown_table(frontier_table([r for r in rows
                                                 if (r["model"], r["dataset"]) == group])))
        print(f"\nreport: {args.out_dir}/frontier.md")
    return 0


def cmd_plan(args) -> int:
    """Exit 0 when every cell fits on the device (with some remat), 2 when one does not."""
    import json

    from jaxmem.capacity import plan_lines, plan_rows

    scfg = StudyConfig.from_yaml(args.config, args.set or [])
    layout = args.layout or (scfg.mesh if scfg.mesh and "x" in str(scfg.mesh) else "1")
    remat = tuple(r.strip() for r in args.remat.split(",") if r.strip())
    rows = plan_rows(scfg, args.device, layout, remat=remat, utilization=args.utilization,
                     memory=args.memory)
    print("\n".join(plan_lines(scfg, rows, args.device, layout, args.utilization, args.memory)))
    print()
    print(markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r["fits"].startswith("NO")]
    if bad:
        print(f"\nerror: {len(bad)} of {len(rows)} cells do not fit on {args.device} with mesh "
              f"{layout} and remat {', '.join(remat)}: give a larger fsdp mesh (--mesh xN), "
              "--remat full (on study/train), or a device with more memory.")
        return 2
    return 0
