"""``jaxmem attack``: membership inference on a base model, a run's checkpoint or a PEFT
adapter (:func:`jaxmem.targets.load_target` chooses), from a corpus split or two text files
of any size (streamed, resumable)."""

from __future__ import annotations

import sys

from jaxmem import streaming as S
from jaxmem.attacks import needs
from jaxmem.audit import AuditConfig, metrics_table, run_attacks_on
from jaxmem.chunked import resume_point
from jaxmem.cli.common import check_chunk_size, corpus, follow_run, main_process
from jaxmem.config import dataclass_from_args
from jaxmem.io import check_writable, markdown_table
from jaxmem.reference_attacks import check_run_attack, run_references
from jaxmem.runs import SCORES, claim_attack_dir
from jaxmem.targets import load_target


def cmd_attack(args) -> int:
    # before any model is loaded: earlier results, a folder not jaxmem's, or one not writable
    claim_attack_dir(args.out_dir, overwrite=args.overwrite)
    check_writable(args.out_dir, "--out-dir")
    if args.run_dir:
        follow_run(args)
    check_chunk_size(args)
    acfg = dataclass_from_args(AuditConfig, args)
    with_references = "references" in needs(acfg.attacks)  # lira / rmia
    if with_references:  # refused before any work without a run to repeat, streamed, on a mesh
        check_run_attack(args.run_dir, streamed=bool(args.members or args.nonmembers),
                         mesh=args.mesh)
    streamed = None
    if args.members or args.nonmembers:
        # files of any size: streamed, scored chunk by chunk, resumable (jaxmem.streaming)
        if not (args.members and args.nonmembers):
            raise ValueError("--members and --nonmembers go together.")
        kw = dict(text_column=args.text_column, strict=args.strict)
        streamed = (S.scan_input(args.members, **kw), S.scan_input(args.nonmembers, **kw))
        settings = S.attack_settings(
            *streamed, acfg, chunk_size=args.chunk_size, model=args.model,
            tokenizer=args.tokenizer, run_dir=args.run_dir, epoch=args.epoch,
            adapter=args.adapter, reference=args.reference)
        done = resume_point(f"{args.out_dir}/{SCORES}", settings, overwrite=args.overwrite)
        n_members, n_nonmembers = streamed[0].n_texts, streamed[1].n_texts
    else:
        c = corpus(args)
        members, nonmembers = c.members, c.nonmembers
        held_out = c.validation  # never trained on nor audited: ReCaLL's prefix
        n_members, n_nonmembers = len(members), len(nonmembers)
    t = load_target(args.model, run_dir=args.run_dir, epoch=args.epoch, adapter=args.adapter,
                    reference=args.reference, tokenizer=args.tokenizer,
                    attention_impl=args.attention, mesh=args.mesh)
    if main_process():
        print(f"attacking {t.description}: {n_members} members vs {n_nonmembers} non-members",
              file=sys.stderr)
        if streamed and done:
            print(f"resuming {args.out_dir}: {done} texts already scored", file=sys.stderr)
    if streamed:
        res = S.attack_files(t.params, t.cfg, t.tokenizer, *streamed, acfg, out_dir=args.out_dir,
                             settings=settings, reference_params=t.reference,
                             overwrite=args.overwrite, title=t.description, mesh=args.mesh,
                             chunk_size=args.chunk_size)
    else:
        # lira / rmia: K references trained like the run, cached in <run>/references/
        refs = (run_references(args.run_dir, t.base, t.cfg, t.tokenizer, c, dataset=args.corpus,
                               epoch=args.epoch, text_column=args.text_column,
                               progress=main_process()) if with_references else None)
        res = run_attacks_on(t.params, t.cfg, t.tokenizer, members, nonmembers, acfg,
                             reference_params=t.reference, out_dir=args.out_dir,
                             overwrite=args.overwrite, title=t.description, mesh=args.mesh,
                             prefix_texts=held_out, param_labels=t.labels, references=refs,
                             progress=main_process())
    if not main_process():
        return 0
    blind = res["info"].get("blind")  # the split check (jaxmem.blind), None with --no-blind
    print(markdown_table(metrics_table(res["metrics"], blind)))
    if blind and blind["shifted"]:
        print(f"\nWARNING: {blind['warning']}")
    elif blind and blind.get("reason"):
        print(f"\nblind baseline not computed: {blind['reason']}")
    print(f"\nwrote {args.out_dir}/: scores.parquet, metrics.json, roc.png, histograms.png")
    return 0
