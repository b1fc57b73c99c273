"""The ``jaxmem`` command line's parser: :func:`build_parser`.

Building it imports neither JAX nor the models: only the subcommand named on the command line
gets its options, and only that subcommand's config classes are imported (inside its builder),
so ``jaxmem --help`` answers at once and ``jaxmem train --help`` pays only for ``train``.

Conventions shared by every subcommand: ``--out FILE`` names an output file and ``--out-dir
DIR`` an output folder; ``--overwrite`` replaces what jaxmem wrote there before; ``--model``
is the base model (default smollm2-135m); ``--run-dir`` a ``jaxmem train`` run.

Example:
    >>> p = build_parser(["train", "--run-dir", "runs/lora"])
    >>> p.parse_args(["train", "--run-dir", "runs/lora"]).method
    'lora'
"""

from __future__ import annotations

import argparse
import importlib.metadata
import textwrap

from jaxmem.config import add_dataclass_args

DESCRIPTION = """\
jaxmem: fine-tune a causal language model with one method, then measure how much it memorized
(membership inference, verbatim extraction, canary exposure).

  jaxmem info [MODEL] [--method lora:r=16]                      a model's parameter table
  jaxmem score FILE [--model smollm2-135m] [--out scores.csv]   per-text likelihoods (resumable)
  jaxmem train --method lora --run-dir DIR [--epochs 3]         fine-tune, checkpoint per epoch
  jaxmem attack --run-dir DIR --out-dir DIR                     membership inference attacks
  jaxmem extract --run-dir DIR [--out F.json]                   verbatim extraction
  jaxmem canaries --run-dir DIR [--out F.json]                  canary exposure
  jaxmem study CONFIG.yaml --out-dir DIR [--set train.epochs=3] the whole grid, resumable
  jaxmem frontier CONFIG.yaml --out-dir DIR                     privacy-utility frontier (DP)
  jaxmem plan CONFIG.yaml [--device h100] [--mesh x8]           memory and hours, no training
  jaxmem export RUN_DIR --out-dir DIR [--epoch N]               a run's adapter in PEFT format

Outputs: --out names a file, --out-dir a folder; --overwrite replaces jaxmem's earlier output.
score, train, attack, study and frontier also take --mesh (shard over several devices) and
--distributed (one process per TPU host or GPU). `jaxmem COMMAND --help` lists a command's
options with their defaults.
"""

# name -> one line for the top-level listing (every subcommand, in the order above)
COMMANDS = {
    "info": "a model's parameter table: name, shape, dtype, logical axes and count of every "
            "leaf; with --method, which leaves train",
    "score": "per-example log-likelihood statistics of a text file",
    "train": "fine-tune with one method, checkpointing every epoch",
    "attack": "membership inference on a base model, run or adapter",
    "extract": "verbatim extraction: k-extractable rate and (n, p)-discoverable extraction of "
               "members vs non-members",
    "canaries": "canary exposure (The Secret Sharer) of a run whose fine-tuning set held the "
                "canaries of a record",
    "study": "models x datasets x methods x epochs x attacks, resumable",
    "frontier": "privacy-utility frontier: one study per DP-SGD epsilon, then validation "
                "perplexity vs the strongest attack",
    "plan": "a study's cost on an accelerator without one: cells, tokens, FLOPs per step, "
            "memory per device (compile only, with and without remat) and hours",
    "export": "write a run's trained adapter as a PEFT adapter directory (LoRA, IA3, prefix, "
              "prompt, P-tuning)",
}


def version() -> str:
    """``jaxmem 0.1.0 (jax 0.4.38)``, read without importing JAX."""
    import jaxmem

    try:
        jax_version = importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        jax_version = "not installed"
    return f"jaxmem {jaxmem.__version__} (jax {jax_version})"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``jaxmem`` parser; the subcommand named in ``argv`` gets its options (all of them
    with ``argv=None``, which imports every config class)."""
    p = argparse.ArgumentParser(prog="jaxmem", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version())
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    chosen = _command(argv) if argv is not None else None
    for name, line in COMMANDS.items():
        s = sub.add_parser(name, help=line, description=line[0].upper() + line[1:] + ".",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if argv is None or name == chosen:
            _BUILDERS[name](s)
            _add_debug_arg(s)
    return p


def _command(argv: list[str]) -> str | None:
    """The subcommand in ``argv``: its first word that is not a top-level option."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def given(argv: list[str]) -> set[str]:
    """The options the user typed (not left at their defaults): the same parser, every default
    suppressed."""
    p = build_parser(argv)
    parsers = [p, *p._subparsers._group_actions[0].choices.values()]
    for parser in parsers:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv))) - {"command"}


# ----------------------------------------------------------------------------- per command

def _info(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.tuning import METHODS

    s.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="alias, hub id, HF directory or .gguf file (default: %(default)s)")
    s.add_argument("--method", default=None, help=_method_help("e.g. lora:r=16,target=all"))
    s.epilog = _method_epilog(METHODS)
    _add_tokenizer_arg(s)


def _score(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.audit import AuditConfig

    s.add_argument("file", help=".txt (paragraphs split on blank lines), .jsonl, .json, .csv or "
                   ".parquet")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="alias, hub id, HF directory or .gguf file (default: %(default)s)")
    s.add_argument("--text-column", default="text",
                   help="the texts' column in .jsonl/.json/.csv/.parquet (default: %(default)s)")
    # score's own defaults (recorded in a partial output, so a rerun resumes: kept as they were)
    add_dataclass_args(s, AuditConfig, only=("block_size", "batch_size", "dtype"),
                       defaults={"block_size": None, "batch_size": 8},
                       meta={"block_size": {"help": "tokens per text; longer texts are "
                                            "truncated with a warning; None: the model's "
                                            "context up to 1024, so a text file is scored whole "
                                            "(attack and train use 128, the paper's setting)"},
                             "batch_size": {"help": "texts per scoring batch (8, not attack's "
                                            "16: score's texts run up to 1024 tokens, "
                                            "attack's 128)"}})
    s.add_argument("--show", type=int, default=20, help="rows to print (0 = all; default: "
                   "%(default)s)")
    s.add_argument("--out", metavar="FILE",
                   help="write every row to .csv / .json / .jsonl / .md / .parquet")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (or an interrupted run's partial one)")
    _add_chunk_arg(s)
    _add_scale_args(s)
    _add_tokenizer_arg(s)
    _add_strict_arg(s)


def _train(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.trainer import TrainConfig
    from jaxmem.tuning import METHODS

    s.add_argument("--model", default=DEFAULT_MODEL, help="the base model (default: "
                   "%(default)s)")
    s.add_argument("--method", default="lora", help=_method_help(
        "e.g. lora:r=16,alpha=32,target=mlp or PEFT's lora:lora_alpha=32,target_modules=q_proj,"
        "v_proj; default: %(default)s"))
    _add_corpus_args(s, train=True)
    s.add_argument("--run-dir", required=True, metavar="DIR",
                   help="the run's folder; a rerun resumes after its last finished epoch")
    add_dataclass_args(s, TrainConfig)
    s.add_argument("--overwrite", action="store_true",
                   help="replace a run folder that holds a different run")
    _add_scale_args(s)
    _add_remat_arg(s)
    _add_tokenizer_arg(s)
    s.epilog = _method_epilog(METHODS)


def _attack(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.audit import AuditConfig

    s.add_argument("--model", default=DEFAULT_MODEL, help="the base model (default: "
                   "%(default)s; with --run-dir, the run's)")
    _add_target_args(s, "attack")
    s.add_argument("--adapter", metavar="DIR", help="a PEFT adapter directory to apply to "
                   "--model")
    s.add_argument("--reference", default=None,
                   help="reference model for Ref (default: --model)")
    _add_text_files_args(s)
    _add_corpus_args(s)
    add_dataclass_args(s, AuditConfig)
    s.add_argument("--out-dir", required=True, metavar="DIR",
                   help="the results folder: scores.parquet, metrics.json, roc.png, "
                   "histograms.png")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a results folder's earlier results")
    _add_chunk_arg(s)
    _add_scale_args(s)
    _add_tokenizer_arg(s)
    _add_strict_arg(s)


def _extract(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.extraction import ExtractionConfig

    s.add_argument("--model", default=DEFAULT_MODEL, help="the base model (default: "
                   "%(default)s; with --run-dir, the run's)")
    _add_target_args(s, "measure")
    _add_text_files_args(s)
    _add_corpus_args(s)
    # no block_size default here: with --run-dir it is the run's (follow_run sets it), and a
    # default would read as a flag the user gave
    add_dataclass_args(s, ExtractionConfig, defaults={"n_samples": ("1", "10", "100", "1000")})
    s.add_argument("--out", metavar="FILE", help="write the metrics and per-text results as "
                   "JSON")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_scale_args(s, mesh=False)  # generation runs on one device
    _add_tokenizer_arg(s)


def _canaries(s) -> None:
    from jaxmem.models import DEFAULT_MODEL
    from jaxmem.canaries import CanaryConfig

    s.add_argument("--canaries-json", metavar="FILE",
                   help="the canary record (jaxmem.canaries.Canaries.save; default: "
                   "RUN_DIR/canaries.json, which a run trained with --canaries writes)")
    s.add_argument("--run-dir", metavar="DIR", help="a jaxmem train run: measure its "
                   "checkpoint (default: the base model alone, the baseline)")
    s.add_argument("--model", default=DEFAULT_MODEL, help="the base model (default: the run's, "
                   f"else {DEFAULT_MODEL})")
    s.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")
    # the record's settings are the defaults: the same exposure measured again
    add_dataclass_args(s, CanaryConfig, only=("n_samples", "exact_max", "batch_size", "dtype"),
                       meta={k: {"help": h + "; default: the record's"} for k, h in (
                           ("n_samples", "random reference secrets scored"),
                           ("exact_max", "enumerate the randomness space up to this size"),
                           ("batch_size", "texts per scoring batch (short canary texts)"),
                           ("dtype", "compute dtype"))})
    s.add_argument("--seed", type=int, default=0, help="seed of the reference secrets "
                   "(default: %(default)s)")
    s.add_argument("--out", metavar="FILE", help="write the report (per canary and per "
                   "repetition count) as JSON")
    s.add_argument("--figure", metavar="FILE", help="write exposure against repetitions as PNG")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out or --figure file")
    _add_scale_args(s, mesh=False)  # exposure is measured on one device
    _add_tokenizer_arg(s)


def _study(s) -> None:
    s.add_argument("config", nargs="?", default=None,
                   help="YAML config (e.g. experiments/demo.yaml); omitted: all defaults")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field (YAML value; nested fields dotted), e.g. "
                        "--set train.epochs=3")
    s.add_argument("--out-dir", required=True, metavar="DIR",
                   help="the study's folder; a rerun resumes its finished cells")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a results folder that holds a different study")
    _add_scale_args(s)
    _add_remat_arg(s)


def _frontier(s) -> None:
    s.add_argument("config", help="YAML study config with a frontier: {epsilons: [inf, 8, 1], "
                   "delta, clip} mapping (e.g. experiments/cpu/frontier.yaml)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field, e.g. --set frontier.epsilons=[inf,4] or "
                        "--set train.epochs=3")
    s.add_argument("--out-dir", required=True, metavar="DIR",
                   help="the frontier's folder (one study per epsilon inside)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a folder that holds a different frontier")
    _add_scale_args(s)
    _add_remat_arg(s)


def _plan(s) -> None:
    from jaxmem.capacity import DEVICES, UTILIZATION

    s.add_argument("config", help="YAML study config (e.g. experiments/paper/table2.yaml)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set methods=[lora]")
    s.add_argument("--device", default="h100", choices=list(DEVICES),
                   help="the accelerator: its dense bf16 peak and memory (default: %(default)s)")
    s.add_argument("--mesh", dest="layout", default=None, metavar="SPEC",
                   help="DATAxFSDP (e.g. 4x2), xFSDP (1 x FSDP, e.g. x8) or 1; default: the "
                        "config's mesh if it spells sizes, else 1 device")
    s.add_argument("--remat", default="none,full",
                   help="remat modes to measure, comma-separated (default: %(default)s)")
    s.add_argument("--memory", default="slice", choices=["slice", "full", "none"],
                   help="slice: compile 2- and 4-layer copies and extrapolate per layer "
                        "(fast); full: compile the whole model; none: skip (default: "
                        "%(default)s)")
    s.add_argument("--utilization", type=float, default=UTILIZATION,
                   help="assumed share of the bf16 peak (default: %(default)s)")
    s.add_argument("--json", metavar="FILE", help="also write the rows as JSON")


def _export(s) -> None:
    s.add_argument("run_dir", metavar="RUN_DIR", help="a jaxmem train run")
    s.add_argument("--out-dir", required=True, metavar="DIR",
                   help="the adapter directory (adapter_config.json, "
                   "adapter_model.safetensors; PeftModel.from_pretrained reads it)")
    s.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an adapter already in --out-dir")
    s.add_argument("--model", default=None,
                   help="the base model (default: the run's, as recorded in run.json)")
    _add_tokenizer_arg(s)


_BUILDERS = {"info": _info, "score": _score, "train": _train, "attack": _attack,
             "extract": _extract, "canaries": _canaries, "study": _study,
             "frontier": _frontier, "plan": _plan, "export": _export}


# ----------------------------------------------------------------------------- shared options

def _method_help(example: str) -> str:
    return f"a fine-tuning method, with options after a colon ({example}); see the list below"


def _method_epilog(methods) -> str:
    from jaxmem.tuning import method_options

    lines = ["methods and their options (option=default; PEFT's spelling in parentheses;",
             "a list joined with + or, after a PEFT name, with commas):"]
    for name in methods:
        lines += textwrap.wrap(method_options(name), 88, initial_indent=f"  {name:9}",
                               subsequent_indent=" " * 11)
    return "\n".join(lines)


def _add_target_args(s, verb: str) -> None:
    s.add_argument("--run-dir", metavar="DIR", help=f"a jaxmem train run: {verb} its "
                   "checkpoint (its base model, corpus split and block size are followed)")
    s.add_argument("--epoch", type=int, default=None, help="which epoch (default: last)")


def _add_text_files_args(s) -> None:
    s.add_argument("--members", metavar="FILE", help="file of member texts (instead of "
                   "--corpus)")
    s.add_argument("--nonmembers", metavar="FILE", help="file of non-member texts")


def _add_remat_arg(s) -> None:
    s.add_argument("--remat", choices=["none", "dots", "full"], default="none",
                   help="rematerialize each block in the backward pass to save activation "
                        "memory: dots (keep matmul outputs, recompute the rest) or full "
                        "(keep only each block's input); `jaxmem plan` says when a cell needs "
                        "it. An execution choice: results agree to float rounding and a run "
                        "resumes with any setting (default: none)")


def _add_scale_args(s, mesh: bool = True) -> None:
    if mesh:
        s.add_argument("--mesh", default=None, metavar="SPEC",
                       help="shard over several devices: 'auto' (all on the data axis), "
                            "DATAxFSDP (e.g. 4x2: 4-way data parallel, weights split 2-way) or "
                            "xFSDP; default: one device (a study: its config's mesh)")
        s.add_argument("--distributed", action="store_true",
                       help="multi-host: run this same command in every process, one per TPU "
                            "host or per GPU (jax.distributed; the coordinator is found on "
                            "Cloud TPU, SLURM and Open MPI, or set JAX_COORDINATOR_ADDRESS, "
                            "JAX_NUM_PROCESSES, JAX_PROCESS_ID); implies --mesh auto unless "
                            "given (or, for a study, its config's mesh)")
    s.add_argument("--attention", choices=["einsum", "xla", "cudnn", "auto"], default="einsum",
                   help="attention kernel: einsum (default), xla (jax.nn.dot_product_attention), "
                        "cudnn (GPU flash attention; bfloat16, right padding, no prefix "
                        "tuning) or auto (cudnn where it can run, xla elsewhere)")


def _add_debug_arg(s) -> None:
    """``--debug`` on a subcommand (SUPPRESS: the top-level flag's value stands unless given)."""
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks")


def _add_tokenizer_arg(s) -> None:
    s.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer directory or hub id, for a model directory without "
                        "tokenizer files (default: the model's own)")


def _add_strict_arg(s) -> None:
    s.add_argument("--strict", action="store_true",
                   help="refuse a text file with lines that are not valid UTF-8 (default: warn)")


def _add_chunk_arg(s) -> None:
    from jaxmem.streaming import CHUNK_SIZE

    s.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, metavar="N",
                   help="texts read, scored and written at a time; an interrupted run resumes "
                        "after its last written chunk (default: %(default)s)")


def _add_corpus_args(s, train: bool = False) -> None:
    from jaxmem.data import SPLITS

    s.add_argument("--corpus", default="default",
                   help="default (embedded), wikitext, webnlg, xsum, or a local file/directory "
                        "(default: %(default)s)")
    s.add_argument("--text-column", default="text",
                   help="the texts' column in a local .jsonl/.json/.csv/.parquet corpus "
                        "(default: %(default)s)")
    sizes = "default: the corpus's (the paper's Table 1, capped by the data)"
    for k in ("n-train", "n-validation"):
        s.add_argument(f"--{k}", type=int, default=None, metavar="N", help=sizes)
    # train draws the members and non-members too: their sizes shape the held-out pool (a
    # by-group split) and are recorded, so `attack --run-dir` draws the same members
    why = ("; recorded in the run, so attack --run-dir draws these members" if train else "")
    for k in ("n-members", "n-nonmembers"):
        s.add_argument(f"--{k}", type=int, default=None, metavar="N", help=sizes + why)
    s.add_argument("--data-seed", type=int, default=0,
                   help="seed of the corpus split: which texts train, which are members and "
                        "non-members (default: %(default)s; training has its own --seed)")
    s.add_argument("--split", default="auto", choices=SPLITS,
                   help="how members and non-members are separated (default: auto, one "
                        "distribution for both; see jaxmem.data.split.SPLITS)")
