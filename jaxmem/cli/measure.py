"""``jaxmem extract`` (verbatim extraction) and ``jaxmem canaries`` (canary exposure): a run's
checkpoint or the base model, measured on one device."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from jaxmem.canaries import Canaries, exposure_report
from jaxmem.cli.common import corpus, follow_identity, follow_run, rounded, write_output
from jaxmem.config import dataclass_from_args
from jaxmem.data.files import read_text_file
from jaxmem.extraction import ExtractionConfig, extraction_metrics
from jaxmem.figures import plot_exposure
from jaxmem.io import check_output_file, markdown_table
from jaxmem.runs import CANARIES, read_run_spec
from jaxmem.targets import load_target


def cmd_extract(args) -> int:
    """Verbatim extraction (jaxmem.extraction) of members vs non-members, on one device."""
    ecfg = dataclass_from_args(ExtractionConfig, args)  # bad numbers cost nothing
    if args.out:  # so does an output that could not be written at the end
        check_output_file(args.out, option="--out", suffixes=(".json",),
                          overwrite=args.overwrite)
    if args.run_dir:
        follow_run(args)
    if args.members or args.nonmembers:
        if not (args.members and args.nonmembers):
            raise ValueError("--members and --nonmembers go together.")
        members, nonmembers = (read_text_file(f, text_column=args.text_column)
                               for f in (args.members, args.nonmembers))
    else:
        c = corpus(args)
        members, nonmembers = c.members, c.nonmembers
    t = load_target(args.model, run_dir=args.run_dir, epoch=args.epoch,
                    tokenizer=args.tokenizer, attention_impl=args.attention)
    res = extraction_metrics(t.params, t.cfg, t.tokenizer, members, nonmembers, ecfg,
                             progress=True)
    keys = ("n_evaluated", "n_skipped", "k_extractable_rate", "token_match")
    print(markdown_table([{"texts": name, **{k: res[name][k] for k in keys},
                           **res[name]["discoverable"]} for name in ("members", "nonmembers")]))
    if args.out:
        write_output(args.out, json.dumps(res, indent=1))
        print(f"\nwrote {args.out}")
    return 0


def cmd_canaries(args) -> int:
    """Canary exposure (jaxmem.canaries) of a trained run, or of a base model (the baseline)."""
    if not args.canaries_json and not args.run_dir:
        raise ValueError("jaxmem canaries needs --run-dir (a run trained with --canaries) or "
                         "--canaries-json (a canary record).")
    # before any work: outputs that could not be written at the end (plot_exposure: PNG)
    for option, path, suffixes in (("--out", args.out, (".json",)),
                                   ("--figure", args.figure, (".png",))):
        if path:
            check_output_file(path, option=option, suffixes=suffixes, overwrite=args.overwrite)
    if args.out and args.figure and os.path.abspath(args.out) == os.path.abspath(args.figure):
        raise ValueError("--out and --figure name the same file; give two.")
    if args.run_dir and not args.canaries_json:
        read_run_spec(args.run_dir)  # a folder that is no run is named as such
    # a bad record costs nothing; by default the run's own
    canaries = Canaries.load(args.canaries_json or Path(args.run_dir) / CANARIES)
    # measurement settings given on the command line replace the record's
    keep = {k: getattr(args, k) for k in ("n_samples", "exact_max", "batch_size", "dtype")
            if k in args.given}
    canaries.config = dataclasses.replace(canaries.config, **keep)
    if args.run_dir:
        spec = read_run_spec(args.run_dir)
        if "model" in args.given and spec.get("model") not in (None, args.model):
            raise ValueError(f"{args.run_dir} was trained from {spec['model']}, but --model "
                             f"{args.model} was given; omit --model.")
        args.model = spec.get("model") or args.model
        follow_identity(args, spec, corpus=False)
    t = load_target(args.model, run_dir=args.run_dir, epoch=args.epoch,
                    tokenizer=args.tokenizer, attention_impl=args.attention)
    rep = exposure_report(t.params, t.cfg, t.tokenizer, canaries, seed=args.seed, progress=True)
    rows = [{"repeats": r, **v} for r, v in rep["by_repeats"].items()]
    print(f"|R| = {rep['space_size']} (log2 {rep['log2_space']:.2f}), "
          f"{rep['n_samples']} sampled references")
    print(markdown_table([rounded(row, 3) for row in rows]))
    if args.out:
        write_output(args.out, rep)
        print(f"\nwrote {args.out}")
    if args.figure:
        name = args.run_dir or args.model
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        plot_exposure({str(name): rep}, args.figure)
        print(f"wrote {args.figure}")
    return 0
