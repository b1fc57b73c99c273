"""``jaxmem train`` (fine-tune with one method, resumably) and ``jaxmem export`` (a run's
adapter in PEFT's format)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from jaxmem import dp, identity
from jaxmem.cli.common import corpus, follow_identity, load, main_process, rounded
from jaxmem.config import dataclass_from_args
from jaxmem.io import markdown_table
from jaxmem.models import ALIASES, load_model
from jaxmem.runs import RUN_SPEC, CorpusRecord, read_run_spec, refuse_foreign
from jaxmem.trainer import TrainConfig, load_checkpoint, train, with_canaries
from jaxmem.tuning import method_config
from jaxmem.tuning.peft_io import CONFIG_NAME, PEFT_TYPES, export_adapter


def cmd_train(args) -> int:
    method_config(args.method)  # before any work: an unknown method or option costs nothing
    tcfg = dataclass_from_args(TrainConfig, args)  # so does a bad --dp or --epochs
    refuse_foreign(args.run_dir, RUN_SPEC, "run")
    c = corpus(args)
    if tcfg.dp:  # delta >= 1/n voids the guarantee: refused before the model loads
        dp.check_delta(tcfg.dp.delta, len(with_canaries(c.train, tcfg)[0]))
    data = CorpusRecord(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(CorpusRecord)})
    # what the run is (absolute paths, digests): a resumed run whose files changed is refused
    # here, before the model loads (train() checks it again)
    ident = identity.run_identity(args.model, tokenizer=args.tokenizer, corpus=args.corpus,
                                  drawn=c)
    identity.stale_run(args.run_dir, {
        "model": args.model, "data": dataclasses.asdict(data), "n_train": len(c.train),
        "n_validation": len(c.validation), identity.KEY: ident}, overwrite=args.overwrite)
    params, cfg, tok = load(args, args.model)
    res = train(params, cfg, tok, args.method, c.train, c.validation, args.run_dir,
                tcfg, model_name=args.model, data=dataclasses.asdict(data), identity=ident,
                overwrite=args.overwrite, mesh=args.mesh)
    if not main_process():
        return 0
    print(markdown_table([rounded(h) for h in res.history]))
    return 0


def cmd_export(args) -> int:
    """Writes a run's trained adapter (LoRA, IA3, prefix, prompt, P-tuning) as a PEFT adapter
    directory that ``PeftModel.from_pretrained(base_model, DIR)`` loads."""
    spec = read_run_spec(args.run_dir)
    mcfg = method_config(spec["method"])
    if mcfg.name not in PEFT_TYPES:  # before any model is loaded
        raise ValueError(f"{args.run_dir} was trained with {mcfg.name}, which changes base "
                         f"weights and has no PEFT adapter format; PEFT adapters exist for "
                         f"{', '.join(PEFT_TYPES)}.")
    _check_adapter_dir(Path(args.out_dir), args.overwrite)
    if "model" in args.given and spec.get("model") not in (None, args.model):
        raise ValueError(f"{args.run_dir} was trained from {spec['model']}, but --model "
                         f"{args.model} was given; omit --model.")
    args.model = spec.get("model") or args.model
    if args.model is None:
        raise ValueError(f"{args.run_dir}/run.json names no base model; give --model.")
    name = args.model
    follow_identity(args, spec, corpus=False)  # a local model: its recorded absolute path
    params, cfg, tok = load_model(args.model, tokenizer=args.tokenizer)
    params, _ = load_checkpoint(args.run_dir, params, cfg, tok, epoch=args.epoch)
    base = ALIASES.get(name) if isinstance(ALIASES.get(name), str) else args.model
    out = export_adapter(params, cfg, mcfg, args.out_dir, base_model_name_or_path=str(base))
    print(f"wrote {out}/: a {PEFT_TYPES[mcfg.name]} adapter of {args.run_dir} (epoch "
          f"{args.epoch or 'last'}) for {base}", file=sys.stderr)
    return 0


def _check_adapter_dir(out: Path, overwrite: bool) -> None:
    """jaxmem never writes over files it did not write: --out-dir is new, empty, or holds an
    adapter (replaced with --overwrite)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out-dir names the adapter's folder.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / CONFIG_NAME).exists():
        raise FileExistsError(f"{out} holds files that are not a PEFT adapter; give a new or "
                              "empty --out-dir.")
    if not overwrite:
        raise FileExistsError(f"{out} already holds an adapter; --overwrite replaces it.")
