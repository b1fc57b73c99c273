"""The ``jaxmem`` command: a thin layer over the library.

    jaxmem score FILE [--model smollm2-135m] [--out scores.csv]   (any size; rerun resumes)
    jaxmem train --method lora --run-dir DIR [--corpus default] [--epochs 3]
    jaxmem attack --members M --nonmembers N [--model ...] [--out-dir DIR]
    jaxmem study CONFIG.yaml --out-dir DIR [--set train.epochs=3]
    jaxmem frontier CONFIG.yaml --out-dir DIR   (one study per DP epsilon + the frontier figure)
    jaxmem extract --members M --nonmembers N [--prefix-len 32 --suffix-len 32] [--out F.json]

Every command takes --mesh (shard over several devices: auto, DATAxFSDP such as 4x2, or xFSDP)
and --distributed (several processes: one per TPU host or per GPU, each running this command).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from jaxmem.config import add_dataclass_args, dataclass_from_args
from jaxmem.report import markdown_table


def cmd_score(args) -> int:
    from jaxmem import streaming as S
    from jaxmem.audit import AuditConfig

    # before any work: bad numbers, a bad output name, an existing file, a bad input file or an
    # interrupted run with other settings cost nothing
    AuditConfig(block_size=args.block_size, batch_size=args.batch_size, dtype=args.dtype)
    _check_chunk_size(args)
    if args.show < 0:
        raise ValueError(f"--show must be 0 (every row) or a number of rows to print, got "
                         f"{args.show}.")
    if args.out:  # a known format, not an existing file, in a folder that can be written
        from jaxmem.runs import check_table_path

        check_table_path(args.out, overwrite=args.overwrite)
    inp = S.scan_input(args.file, text_column=args.text_column, strict=args.strict)
    settings = S.score_settings(inp, block_size=args.block_size, batch_size=args.batch_size,
                                dtype=args.dtype, chunk_size=args.chunk_size, model=args.model,
                                tokenizer=args.tokenizer)
    done = S.resume_point(args.out, settings, overwrite=args.overwrite) if args.out else 0
    t0 = time.perf_counter()
    params, cfg, tok = _load(args, args.model)
    main_process = _main_process()
    if main_process:
        print(f"loaded {args.model} ({cfg.arch}, {cfg.n_layers} layers, d={cfg.d_model}) "
              f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if done:
            print(f"resuming {args.out}: {done} of {inp.n_texts} texts already scored",
                  file=sys.stderr)
    printed = []

    def print_rows(rows):  # --show 0: every row, as each chunk is scored
        if main_process and not args.show:
            lines = markdown_table(rows).split("\n")
            print("\n".join(lines if not printed else lines[2:]), flush=True)
            printed.append(len(rows))

    res = S.score_file(params, cfg, tok, inp, settings, out=args.out, batch_size=args.batch_size,
                       block_size=args.block_size, dtype=args.dtype, chunk_size=args.chunk_size,
                       overwrite=args.overwrite, mesh=args.mesh, on_rows=print_rows,
                       head_rows=max(args.show, S.HEAD_ROWS))
    if not main_process:
        return 0
    if args.show:
        print(markdown_table(res["head"][:args.show]))
        if inp.n_texts > args.show:
            print(f"... {inp.n_texts - args.show} more rows (use --out to save all)")
    dt = res["seconds"]
    resumed = f", resumed after {res['resumed_from']}" if res["resumed_from"] else ""
    print(f"\n{inp.n_texts} texts, {res['n_tokens']} scored tokens, corpus perplexity "
          f"{res['corpus_ppl']:.3f}, {res['tokens_per_s']:.0f} tokens/s ({dt:.1f}s incl. "
          f"compile{resumed})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _check_chunk_size(args) -> None:
    if args.chunk_size <= 0:
        raise ValueError(f"--chunk-size must be a positive number of texts, got "
                         f"{args.chunk_size}.")


def _corpus(args):
    from jaxmem.data import load_corpus

    c = load_corpus(args.corpus, seed=args.data_seed, split=args.split, n_train=args.n_train,
                    n_validation=args.n_validation, n_members=args.n_members,
                    n_nonmembers=args.n_nonmembers, text_column=args.text_column)
    for w in c.info.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"corpus {c.describe()}", file=sys.stderr)
    if getattr(args, "run_identity", None):  # --run-dir: the texts it was trained on
        from jaxmem import identity

        identity.verify_texts(args.run_dir, args.run_identity, c, corpus=args.corpus)
    return c


def cmd_train(args) -> int:
    from jaxmem import identity
    from jaxmem.runs import RUN_SPEC, CorpusRecord, refuse_foreign
    from jaxmem.trainer import TrainConfig, train
    from jaxmem.tuning import method_config

    method_config(args.method)  # before any work: an unknown method or option costs nothing
    tcfg = dataclass_from_args(TrainConfig, args)  # so does a bad --dp or --epochs
    refuse_foreign(args.run_dir, RUN_SPEC, "run")
    corpus = _corpus(args)
    if tcfg.dp:  # delta >= 1/n voids the guarantee: refused before the model loads
        from jaxmem import dp
        from jaxmem.trainer import with_canaries

        dp.check_delta(dp.parse_dp(tcfg.dp).delta, len(with_canaries(corpus.train, tcfg)[0]))
    data = CorpusRecord(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(CorpusRecord)})
    # what the run is (absolute paths, digests): a resumed run whose files changed is refused
    # here, before the model loads (train() checks it again)
    ident = identity.run_identity(args.model, tokenizer=args.tokenizer, corpus=args.corpus,
                                  drawn=corpus)
    identity.stale_run(args.run_dir, {
        "model": args.model, "data": dataclasses.asdict(data), "n_train": len(corpus.train),
        "n_validation": len(corpus.validation), identity.KEY: ident}, overwrite=args.overwrite)
    params, cfg, tok = _load(args, args.model)
    res = train(params, cfg, tok, args.method, corpus.train, corpus.validation, args.run_dir,
                tcfg, model_name=args.model, data=dataclasses.asdict(data), identity=ident,
                overwrite=args.overwrite, mesh=args.mesh)
    if not _main_process():
        return 0
    print(markdown_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                          for h in res.history]))
    return 0


def _follow_run(args) -> None:
    """``attack --run-dir``: the base model, data (corpus, data seed, split, sizes) and block
    size are the
    run's; a flag given with another value is refused, since the members would not be the
    texts the model was trained on."""
    from jaxmem.runs import read_corpus_record, read_run_spec

    spec = read_run_spec(args.run_dir)
    record = read_corpus_record(args.run_dir)
    run = {"model": spec.get("model") or None,
           "block_size": spec.get("train", {}).get("block_size")}
    if record is not None and not args.members:
        run.update(dataclasses.asdict(record))
    for name, value in run.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in args.given and getattr(args, name) != value:
            raise ValueError(
                f"{args.run_dir} was trained with {flag} {value}, but {flag} "
                f"{getattr(args, name)} was given: the members would not be its training texts. "
                f"Omit {flag} (the run's value is used).")
        setattr(args, name, value)
    _follow_identity(args, spec, corpus=not args.members)


def _follow_identity(args, spec: dict, *, corpus: bool) -> None:
    """``--run-dir``: the run's recorded absolute paths replace the flags' (never this folder's
    ``./model`` or ``./corpus.txt``), and the base weights and tokenizer found there must be
    the ones it was trained on (:mod:`jaxmem.identity`); with ``corpus``, the texts drawn are
    checked in :func:`_corpus`."""
    from jaxmem import identity

    ident = spec.get(identity.KEY)
    args.run_identity = ident if corpus else None
    if ident is None:
        if _main_process():
            print(f"note: {args.run_dir} records no content digests (trained before jaxmem "
                  "kept them): its base model and corpus files are not verified.",
                  file=sys.stderr)
        return
    m, t, c = ident.get("model"), ident.get("tokenizer") or {}, ident.get("corpus")
    if m and m.get("local"):
        args.model = m["path"]
    if t.get("name") is not None and "tokenizer" not in args.given:
        args.tokenizer = t["path"] if t.get("local") else t["name"]
    if corpus and c:
        args.corpus = c["name"]
    if m:  # before any model is loaded
        identity.verify_run(args.run_dir, ident, model=args.model, tokenizer=args.tokenizer,
                            corpus=args.corpus if corpus else None)


def cmd_attack(args) -> int:
    from jaxmem.audit import AuditConfig, metrics_table, run_attacks_on
    from jaxmem.runs import check_writable, claim_attack_dir

    # before any model is loaded: earlier results, a folder not jaxmem's, or one not writable
    claim_attack_dir(args.out_dir, overwrite=args.overwrite)
    check_writable(args.out_dir, "--out-dir")
    if args.run_dir:
        _follow_run(args)
    _check_chunk_size(args)
    acfg = dataclass_from_args(AuditConfig, args)
    from jaxmem.attacks import needs

    with_references = "references" in needs(acfg.attacks)  # lira / rmia
    if with_references:  # refused before any work without a run to repeat, streamed, on a mesh
        from jaxmem.reference_attacks import check_run_attack, run_references

        check_run_attack(args.run_dir, streamed=bool(args.members or args.nonmembers),
                         mesh=args.mesh)
    streamed = None
    if args.members or args.nonmembers:
        # files of any size: streamed, scored chunk by chunk, resumable (jaxmem.streaming)
        from jaxmem import streaming as S
        from jaxmem.runs import SCORES

        if not (args.members and args.nonmembers):
            raise ValueError("--members and --nonmembers go together.")
        kw = dict(text_column=args.text_column, strict=args.strict)
        streamed = (S.scan_input(args.members, **kw), S.scan_input(args.nonmembers, **kw))
        settings = S.attack_settings(
            *streamed, acfg, chunk_size=args.chunk_size, model=args.model,
            tokenizer=args.tokenizer, run_dir=args.run_dir, epoch=args.epoch,
            adapter=args.adapter, reference=args.reference)
        done = S.resume_point(f"{args.out_dir}/{SCORES}", settings, overwrite=args.overwrite)
        n_members, n_nonmembers = streamed[0].n_texts, streamed[1].n_texts
    else:
        c = _corpus(args)
        members, nonmembers = c.members, c.nonmembers
        held_out = c.validation  # never trained on nor audited: ReCaLL's prefix
        n_members, n_nonmembers = len(members), len(nonmembers)
    base, cfg, tok = _load(args, args.model)
    params, what, labels = base, f"base model {args.model}", None
    if args.run_dir:
        from jaxmem.trainer import load_checkpoint
        params, labels = load_checkpoint(args.run_dir, base, cfg, tok, epoch=args.epoch,
                                         mesh=args.mesh)
        what = f"{args.run_dir} (epoch {args.epoch or 'last'})"
    elif args.adapter:
        from jaxmem.tuning.peft_import import import_adapter
        params, labels, _ = import_adapter(base, cfg, args.adapter)
        what = f"{args.model} + adapter {args.adapter}"
    reference = base
    if args.reference and args.reference != args.model:
        reference, rcfg, _ = _load(args, args.reference)
        if rcfg.vocab_size != cfg.vocab_size:
            raise ValueError("The reference model must share the target's tokenizer/vocabulary.")
    if _main_process():
        print(f"attacking {what}: {n_members} members vs {n_nonmembers} non-members",
              file=sys.stderr)
        if streamed and done:
            print(f"resuming {args.out_dir}: {done} texts already scored", file=sys.stderr)
    if streamed:
        res = S.attack_files(params, cfg, tok, *streamed, acfg, out_dir=args.out_dir,
                             settings=settings, reference_params=reference,
                             overwrite=args.overwrite, title=what, mesh=args.mesh,
                             chunk_size=args.chunk_size)
    else:
        # lira / rmia: K references trained like the run, cached in <run>/references/
        refs = (run_references(args.run_dir, base, cfg, tok, c, dataset=args.corpus,
                               epoch=args.epoch, text_column=args.text_column,
                               progress=_main_process()) if with_references else None)
        res = run_attacks_on(params, cfg, tok, members, nonmembers, acfg,
                             reference_params=reference, out_dir=args.out_dir,
                             overwrite=args.overwrite, title=what, mesh=args.mesh,
                             prefix_texts=held_out, param_labels=labels, references=refs)
    if not _main_process():
        return 0
    blind = res["info"].get("blind")  # the split check (jaxmem.blind), None with --no-blind
    print(markdown_table(metrics_table(res["metrics"], blind)))
    if blind and blind["shifted"]:
        print(f"\nWARNING: {blind['warning']}")
    elif blind and blind.get("reason"):
        print(f"\nblind baseline not computed: {blind['reason']}")
    print(f"\nwrote {args.out_dir}/: scores.parquet, metrics.json, roc.png, histograms.png")
    return 0


def cmd_study(args) -> int:
    from jaxmem.report import markdown_table as table
    from jaxmem.runs import STUDY_SPEC, refuse_foreign
    from jaxmem.study import StudyConfig, run_study

    scfg = StudyConfig.from_yaml(args.config, args.set or [])
    refuse_foreign(args.out_dir, STUDY_SPEC, "study")
    rows = run_study(scfg, args.out_dir, overwrite=args.overwrite, mesh=args.mesh,
                     attention_impl=args.attention)
    if not _main_process():
        return 0
    last = {}
    for r in rows:
        last[(r["model"], r["dataset"], r["method"])] = r["epoch"]
    first_attack = rows[0]["attack"]
    print(table([{k: (round(v, 4) if isinstance(v, float) else "n/a" if v is None else v)
                  for k, v in r.items()
                  if k in ("model", "dataset", "method", "epoch", "val_ppl", "attack", "auc",
                           "tpr@1%fpr")}
                 for r in rows if r["attack"] == first_attack
                 and r["epoch"] == last[(r["model"], r["dataset"], r["method"])]]))
    print(f"\nreport: {args.out_dir}/report.md")
    return 0


def cmd_frontier(args) -> int:
    from jaxmem.frontier import SPEC, frontier_table, load_frontier, run_frontier
    from jaxmem.runs import refuse_foreign

    scfg, fcfg = load_frontier(args.config, args.set or [])
    refuse_foreign(args.out_dir, SPEC, "frontier")
    rows = run_frontier(scfg, fcfg, args.out_dir, overwrite=args.overwrite, mesh=args.mesh,
                        attention_impl=args.attention)
    if _main_process():
        for group in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
            print(f"{group[0]} / {group[1]}")
            print(markdown_table(frontier_table([r for r in rows
                                                 if (r["model"], r["dataset"]) == group])))
        print(f"\nreport: {args.out_dir}/frontier.md")
    return 0


# ----------------------------------------------------------------------------- jaxmem extract

def cmd_extract(args) -> int:
    """Verbatim extraction (jaxmem.extraction) of members vs non-members, on one device."""
    import json

    from jaxmem.extraction import ExtractionConfig, extraction_metrics
    from jaxmem.runs import check_output_file

    ecfg = dataclass_from_args(ExtractionConfig, args)  # bad numbers cost nothing
    if args.mesh is not None:
        raise ValueError("jaxmem extract runs on one device; drop --mesh / --distributed.")
    if args.out:  # so does an output that could not be written at the end
        check_output_file(args.out, option="--out", suffixes=(".json",),
                          overwrite=args.overwrite)
    if args.run_dir:
        _follow_run(args)
    if args.members or args.nonmembers:
        from jaxmem.data.files import read_text_file

        if not (args.members and args.nonmembers):
            raise ValueError("--members and --nonmembers go together.")
        members, nonmembers = (read_text_file(f, text_column=args.text_column)
                               for f in (args.members, args.nonmembers))
    else:
        c = _corpus(args)
        members, nonmembers = c.members, c.nonmembers
    params, cfg, tok = _load(args, args.model)
    if args.run_dir:
        from jaxmem.trainer import load_checkpoint
        params, _ = load_checkpoint(args.run_dir, params, cfg, tok, epoch=args.epoch)
    res = extraction_metrics(params, cfg, tok, members, nonmembers, ecfg, progress=True)
    keys = ("n_evaluated", "n_skipped", "k_extractable_rate", "token_match")
    print(markdown_table([{"texts": name, **{k: res[name][k] for k in keys},
                           **res[name]["discoverable"]} for name in ("members", "nonmembers")]))
    if args.out:
        _write_output(args.out, json.dumps(res, indent=1))
        print(f"\nwrote {args.out}")
    return 0


def _write_output(path, data) -> None:
    """An output file (checked before any work), whole or not at all; its folder made."""
    from pathlib import Path

    from jaxmem.runs import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def _add_extract_parser(sub) -> None:
    from jaxmem.extraction import ExtractionConfig
    from jaxmem.models import DEFAULT_MODEL

    e = sub.add_parser("extract", help="verbatim extraction: k-extractable rate and (n, p)-"
                       "discoverable extraction of members vs non-members")
    e.add_argument("--model", default=DEFAULT_MODEL, help="the base model")
    e.add_argument("--run-dir", help="a jaxmem train run: measure its checkpoint")
    e.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")
    e.add_argument("--members", help="file of member texts (instead of --corpus)")
    e.add_argument("--nonmembers", help="file of non-member texts")
    _add_corpus_args(e)
    add_dataclass_args(e, ExtractionConfig, defaults={"n_samples": ("1", "10", "100", "1000")})
    e.add_argument("--out", help="write the metrics and per-text results as JSON")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_scale_args(e)
    _add_tokenizer_arg(e)
    _add_debug_arg(e)
    # no block_size default here: with --run-dir it is the run's (_follow_run sets it), and a
    # default would read as a flag the user gave
    e.set_defaults(func=cmd_extract)


# ----------------------------------------------------------------------------- (end of extract)


# ----------------------------------------------------------------------------- jaxmem canaries

def cmd_canaries(args) -> int:
    """Canary exposure (jaxmem.canaries) of a trained run, or of a base model (the baseline)."""
    import os
    from pathlib import Path

    from jaxmem.canaries import Canaries, exposure_report, plot_exposure
    from jaxmem.runs import CANARIES, check_output_file

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
        from jaxmem.runs import read_run_spec

        read_run_spec(args.run_dir)  # a folder that is no run is named as such
    # a bad record costs nothing; by default the run's own
    canaries = Canaries.load(args.canaries_json or Path(args.run_dir) / CANARIES)
    # measurement settings given on the command line replace the record's
    keep = {k: getattr(args, k) for k in ("n_samples", "exact_max", "batch_size", "dtype")
            if k in args.given}
    canaries.config = dataclasses.replace(canaries.config, **keep)
    if args.mesh is not None:
        raise ValueError("jaxmem canaries runs on one device; drop --mesh / --distributed.")
    if args.run_dir:
        from jaxmem.runs import read_run_spec

        spec = read_run_spec(args.run_dir)
        if "model" in args.given and spec.get("model") not in (None, args.model):
            raise ValueError(f"{args.run_dir} was trained from {spec['model']}, but --model "
                             f"{args.model} was given; omit --model.")
        args.model = spec.get("model") or args.model
        _follow_identity(args, spec, corpus=False)
    params, cfg, tok = _load(args, args.model)
    if args.run_dir:
        from jaxmem.trainer import load_checkpoint
        params, _ = load_checkpoint(args.run_dir, params, cfg, tok, epoch=args.epoch)
    rep = exposure_report(params, cfg, tok, canaries, seed=args.seed, progress=True)
    rows = [{"repeats": r, **v} for r, v in rep["by_repeats"].items()]
    print(f"|R| = {rep['space_size']} (log2 {rep['log2_space']:.2f}), "
          f"{rep['n_samples']} sampled references")
    print(markdown_table([{k: (round(v, 3) if isinstance(v, float) else v)
                           for k, v in row.items()} for row in rows]))
    if args.out:
        _write_output(args.out, rep)
        print(f"\nwrote {args.out}")
    if args.figure:
        name = args.run_dir or args.model
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        plot_exposure({str(name): rep}, args.figure)
        print(f"wrote {args.figure}")
    return 0


def _add_canaries_parser(sub) -> None:
    from jaxmem.canaries import CanaryConfig
    from jaxmem.models import DEFAULT_MODEL

    c = sub.add_parser("canaries", help="canary exposure (The Secret Sharer) of a run whose "
                       "fine-tuning set held the canaries of a record")
    c.add_argument("--canaries-json",
                   help="the canary record (jaxmem.canaries.Canaries.save; default: "
                   "RUN_DIR/canaries.json, which a run trained with --canaries writes)")
    c.add_argument("--run-dir", help="a jaxmem train run: measure its checkpoint (default: "
                   "the base model alone, the baseline)")
    c.add_argument("--model", default=DEFAULT_MODEL, help="the base model (default: the run's)")
    c.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")
    add_dataclass_args(c, CanaryConfig, only=("n_samples", "exact_max", "batch_size", "dtype"),
                       meta={k: {"help": h + "; default: the record's"} for k, h in (
                           ("n_samples", "random reference secrets scored"),
                           ("exact_max", "enumerate the randomness space up to this size"),
                           ("batch_size", "texts per scoring batch"),
                           ("dtype", "compute dtype"))})
    c.add_argument("--seed", type=int, default=0, help="seed of the reference secrets")
    c.add_argument("--out", help="write the report (per canary and per repetition count) as "
                   "JSON")
    c.add_argument("--figure", help="write exposure against repetitions as PNG")
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out or --figure file")
    _add_scale_args(c)
    _add_tokenizer_arg(c)
    _add_debug_arg(c)
    c.set_defaults(func=cmd_canaries)


# ----------------------------------------------------------------------------- (end of canaries)


def _load(args, name):
    """load_model, with the attention kernel chosen by --attention."""
    from jaxmem.models import load_model

    tokenizer = getattr(args, "tokenizer", None) if name == getattr(args, "model", None) else None
    params, cfg, tok = load_model(name, tokenizer=tokenizer)
    return params, dataclasses.replace(cfg, attention_impl=args.attention), tok


def cmd_info(args) -> int:
    """Prints the parameter table; from the config alone (no weights) where the model has one."""
    import jax

    from jaxmem.models import abstract_params, load_model
    from jaxmem.models.checkpoints import model_config
    from jaxmem.models.summary import format_param_table, param_table
    from jaxmem.tuning import init_method

    cfg = model_config(args.model)
    if cfg is None:  # a GGUF file: its weights hold the config
        params, cfg, tok = load_model(args.model, tokenizer=args.tokenizer)
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    else:
        import flax.linen as nn

        params, tok = nn.unbox(abstract_params(cfg)), None
    labels = None
    if args.method:
        found = {}

        def add(p):  # traced abstractly: shapes only, however large the model
            p, found["labels"] = init_method(args.method, p, cfg, jax.random.PRNGKey(0), tok)
            return p

        params = jax.eval_shape(add, params)
        labels = found["labels"]
    print(f"{args.model}: {cfg.arch}, {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{cfg.n_heads} heads ({cfg.n_kv_heads} KV), vocabulary {cfg.vocab_size}\n")
    print(format_param_table(param_table(params, cfg, labels)))
    return 0


def _main_process() -> bool:
    from jaxmem.sharding import is_main_process

    return is_main_process()


def _add_scale_args(s):
    s.add_argument("--mesh", default=None, metavar="SPEC",
                   help="shard over several devices: 'auto' (all on the data axis), DATAxFSDP "
                        "(e.g. 4x2: 4-way data parallel, weights split 2-way) or xFSDP; "
                        "default: one device (a study: its config's mesh)")
    s.add_argument("--distributed", action="store_true",
                   help="multi-host: run this same command in every process, one per TPU host "
                        "or per GPU (jax.distributed; "
                        "the coordinator is found on Cloud TPU, SLURM and Open MPI, or set "
                        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); implies "
                        "--mesh auto unless given (or, for a study, its config's mesh)")
    s.add_argument("--attention", choices=["einsum", "xla", "cudnn"], default="einsum",
                   help="attention kernel: einsum (default), xla (jax.nn.dot_product_attention) "
                        "or cudnn (GPU flash attention; bfloat16, right padding, no prefix "
                        "tuning)")


def _add_debug_arg(s):
    """``--debug`` on a subcommand (SUPPRESS: the top-level flag's value stands unless given)."""
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks")


def _add_tokenizer_arg(s):
    s.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer directory or hub id, for a model directory without "
                        "tokenizer files (default: the model's own)")


def _add_chunk_arg(s):
    from jaxmem.streaming import CHUNK_SIZE

    s.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, metavar="N",
                   help="texts read, scored and written at a time; an interrupted run resumes "
                        "after its last written chunk (default: %(default)s)")


def _add_corpus_args(s):
    s.add_argument("--corpus", default="default",
                   help="default (embedded), wikitext, webnlg, xsum, or a local file/directory")
    s.add_argument("--text-column", default="text")
    for k in ("n-train", "n-validation", "n-members", "n-nonmembers"):
        s.add_argument(f"--{k}", type=int, default=None,
                       help="default: the corpus's (the paper's Table 1, capped by the data)")
    from jaxmem.data import SPLITS

    s.add_argument("--data-seed", type=int, default=0,
                   help="seed of the corpus split: which texts train, which are members and "
                        "non-members (default: %(default)s; training has its own --seed)")
    s.add_argument("--split", default="auto", choices=SPLITS,
                   help="how members and non-members are separated (default: auto, one "
                        "distribution for both; see jaxmem.data.split.SPLITS)")


def build_parser() -> argparse.ArgumentParser:
    from jaxmem.audit import AuditConfig
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.trainer import TrainConfig

    p = argparse.ArgumentParser(prog="jaxmem", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("info", help="a model's parameter table: name, shape, dtype, logical axes "
                       "and count of every leaf; with --method, which leaves train")
    i.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="alias, hub id, HF directory or .gguf file (default: %(default)s)")
    i.add_argument("--method", default=None, help="e.g. lora:r=16,target=all")
    _add_tokenizer_arg(i)
    _add_debug_arg(i)
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("score", help="per-example log-likelihood statistics of a text file")
    s.add_argument("file", help=".txt (paragraphs split on blank lines), .jsonl, .json, .csv or .parquet")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="alias, hub id, HF directory or .gguf file (default: %(default)s)")
    s.add_argument("--text-column", default="text")
    add_dataclass_args(s, AuditConfig, only=("block_size", "batch_size", "dtype"),
                       defaults={"block_size": None, "batch_size": 8},
                       meta={"block_size": {"help": "tokens per text; longer texts are "
                                            "truncated with a warning; None: the model's "
                                            "context up to 1024"}})
    s.add_argument("--show", type=int, default=20, help="rows to print (0 = all)")
    s.add_argument("--out", help="write every row to .csv / .json / .jsonl / .md / .parquet")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (or an interrupted run's partial one)")
    _add_chunk_arg(s)
    _add_scale_args(s)
    _add_tokenizer_arg(s)
    _add_debug_arg(s)
    s.add_argument("--strict", action="store_true",
                   help="refuse a text file with lines that are not valid UTF-8 (default: warn)")
    s.set_defaults(func=cmd_score)

    from jaxmem.tuning import METHODS

    t = sub.add_parser("train", help="fine-tune with one method, checkpointing every epoch")
    t.add_argument("--model", default=DEFAULT_MODEL)
    t.add_argument("--method", default="lora", help=f"one of {', '.join(METHODS)}, with "
                   "options after a colon, e.g. lora:r=16,alpha=32,target=mlp")
    _add_corpus_args(t)
    t.add_argument("--run-dir", required=True)
    add_dataclass_args(t, TrainConfig)
    t.add_argument("--overwrite", action="store_true")
    _add_scale_args(t)
    _add_tokenizer_arg(t)
    _add_debug_arg(t)
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("attack", help="membership inference on a base model, run or adapter")
    a.add_argument("--model", default=DEFAULT_MODEL, help="the base model")
    a.add_argument("--run-dir", help="a jaxmem train run: attack its checkpoint")
    a.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")
    a.add_argument("--adapter", help="a PEFT adapter directory to apply to --model")
    a.add_argument("--reference", default=None, help="reference model for Ref (default: --model)")
    a.add_argument("--members", help="file of member texts (instead of --corpus)")
    a.add_argument("--nonmembers", help="file of non-member texts")
    _add_corpus_args(a)
    add_dataclass_args(a, AuditConfig)
    a.add_argument("--out-dir", required=True)
    a.add_argument("--overwrite", action="store_true")
    _add_chunk_arg(a)
    _add_scale_args(a)
    _add_tokenizer_arg(a)
    _add_debug_arg(a)
    a.add_argument("--strict", action="store_true",
                   help="refuse a text file with lines that are not valid UTF-8 (default: warn)")
    a.set_defaults(func=cmd_attack)

    st = sub.add_parser("study", help="models x datasets x methods x epochs x attacks, resumable")
    st.add_argument("config", nargs="?", default=None,
                    help="YAML config (e.g. experiments/demo.yaml); omitted: all defaults")
    st.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config field (YAML value; nested fields dotted), e.g. "
                         "--set train.epochs=3")
    st.add_argument("--out-dir", required=True)
    st.add_argument("--overwrite", action="store_true",
                    help="replace a results folder that holds a different study")
    _add_scale_args(st)
    _add_debug_arg(st)
    st.set_defaults(func=cmd_study)

    fr = sub.add_parser("frontier", help="privacy-utility frontier: one study per DP-SGD "
                        "epsilon, then validation perplexity vs the strongest attack")
    fr.add_argument("config", help="YAML study config with a frontier: {epsilons: [inf, 8, 1], "
                    "delta, clip} mapping (e.g. experiments/cpu/frontier.yaml)")
    fr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a field, e.g. --set frontier.epsilons=[inf,4] or "
                         "--set train.epochs=3")
    fr.add_argument("--out-dir", required=True)
    fr.add_argument("--overwrite", action="store_true",
                    help="replace a folder that holds a different frontier")
    _add_scale_args(fr)
    _add_debug_arg(fr)
    fr.set_defaults(func=cmd_frontier)
    _add_extract_parser(sub)
    _add_canaries_parser(sub)
    return p


def _setup_devices(args) -> None:
    """Multi-host start-up (before any other JAX call), then ``args.mesh`` as a Mesh or None."""
    import os

    from jaxmem import sharding as sh

    if args.distributed:
        env = {k: os.environ[v] for k, v in (("coordinator_address", "JAX_COORDINATOR_ADDRESS"),
                                              ("num_processes", "JAX_NUM_PROCESSES"),
                                              ("process_id", "JAX_PROCESS_ID"))
               if v in os.environ}
        for k in ("num_processes", "process_id"):
            if k in env:
                env[k] = int(env[k])
        raw = os.environ.get("JAXMEM_COORDINATOR_TIMEOUT", "120")
        if not raw.strip().isdigit() or int(raw) <= 0:
            raise ValueError(f"JAXMEM_COORDINATOR_TIMEOUT must be a positive number of seconds; "
                             f"got {raw!r}.")
        timeout = int(raw)
        sh.initialize_distributed(True, timeout=timeout, **env)
    # a study's own config may name the mesh; for the other commands --distributed means auto
    if args.mesh is None and args.distributed and args.func is not cmd_study:
        args.mesh = "auto"
    args.mesh = sh.parse_mesh(args.mesh)
    if args.mesh is not None and sh.is_main_process():
        import jax

        print(f"mesh: {dict(args.mesh.shape)} over {jax.device_count()} devices "
              f"({jax.process_count()} process(es))", file=sys.stderr)


def _given(argv: list[str]) -> set[str]:
    """The options the user typed (not left at their defaults): the same parser, every default
    suppressed."""
    p = build_parser()
    parsers = [p, *p._subparsers._group_actions[0].choices.values()]
    for parser in parsers:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv))) - {"func", "command"}


def _message(e: BaseException) -> str:
    """One line for the user: jaxmem's own errors already name the problem and the fix."""
    import yaml

    from jaxmem.checkpointing import CheckpointError

    full = _disk_full(e)
    if full is not None:
        where = getattr(full, "filename", None) or f"({str(full).splitlines()[0][:400]})"
        return (f"disk full while writing {where}: free space and rerun; the finished "
                "epochs/chunks are kept (jaxmem writes every file whole or not at all), and "
                "the rerun resumes after them.")
    if isinstance(e, (ValueError, OSError, CheckpointError, FloatingPointError, RuntimeError)):
        return str(e)
    if isinstance(e, yaml.YAMLError):
        return f"invalid YAML: {e}"
    return (f"unexpected {type(e).__name__}: {e}. This is a bug or an input jaxmem does not "
            "check yet; rerun with --debug (or JAXMEM_DEBUG=1) for the traceback, and report it.")


def _disk_full(e: BaseException) -> BaseException | None:
    """The error in ``e``'s chain that says the disk is full (ENOSPC), also when orbax or
    tensorstore wrap it in their own exception and only its text is left; else None."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
                or "No space left on device" in str(e) or "Disk quota exceeded" in str(e)):
            return e
        e = e.__cause__ or e.__context__
    return None


def _output_lock(args):
    """The lock (jaxmem.locks) of the folder or file this command writes, taken before any
    model is loaded, so a second writer is refused at once (the library takes it again: a
    count, not a second lock)."""
    import contextlib
    import os

    from jaxmem import locks
    from jaxmem.runs import check_writable

    where = {"train": ("run_dir", "run"), "study": ("out_dir", "study"),
             "frontier": ("out_dir", "frontier"), "attack": ("out_dir", "attack"),
             "score": ("out", "output")}.get(args.command)
    target = getattr(args, where[0], None) if where else None
    if not target:
        return contextlib.nullcontext()
    is_file = args.command == "score"
    option = "--" + where[0].replace("_", "-")
    check_writable(os.path.dirname(os.path.abspath(target)) if is_file else target, option)
    return locks.hold(target, where[1], file=is_file)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # like Ctrl-C: locks released, the work resumes on a rerun


def _restart_with_huge_pages() -> None:
    """Re-executes this command once with glibc's ``glibc.malloc.hugetlb=1`` tunable.

    XLA's CPU backend allocates each step's temporaries with malloc, which maps large blocks
    fresh from the kernel on every call: a full fine-tuning step of the 135M model took 430,000
    page faults (1.7 GB zero-filled) per step. With the tunable, malloc asks for transparent
    huge pages and the faults drop to about 1,000 (measured: 5.5 s -> 5.1 s per step). glibc
    reads tunables only at process start, hence the restart; ``JAXMEM_HUGEPAGES=0`` (or a
    GLIBC_TUNABLES of your own, or a kernel with huge pages off) skips it.
    """
    import os

    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (sys.platform != "linux" or os.environ.get("JAXMEM_HUGEPAGES", "1") == "0"
            or "glibc.malloc.hugetlb" in tunables):
        return
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
        version = tuple(int(x) for x in libc.split()[1].split(".")[:2])
        thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except (OSError, ValueError, IndexError):
        return
    if version < (2, 35) or "[never]" in thp:  # the tunable is new in glibc 2.35
        return
    env = {**os.environ,
           "GLIBC_TUNABLES": ":".join(filter(None, [tunables, "glibc.malloc.hugetlb=1"]))}
    os.execve(sys.executable, [sys.executable, "-m", "jaxmem.cli", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    """The ``jaxmem`` command: exit 0 on success, 2 with one ``error:`` line on any failure (a
    traceback only with ``--debug`` or ``JAXMEM_DEBUG=1``)."""
    import os

    if argv is None:  # the console command (not a call from Python): restart once, see there
        _restart_with_huge_pages()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.given = _given(argv)
    debug = args.debug or os.environ.get("JAXMEM_DEBUG", "") not in ("", "0")
    import signal
    import threading

    on_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        from jaxmem import compile_cache

        compile_cache.enable()  # before the first compile; JAXMEM_COMPILE_CACHE=off disables
        if hasattr(args, "mesh"):  # every command but info
            _setup_devices(args)
        with _output_lock(args):
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; a run or study resumes where it stopped", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM,
                          old_handler if old_handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
