"""The trainer: one jit-compiled step, an orbax checkpoint every epoch, resumable.

A run directory holds everything about one fine-tuning run: its config, a log, and an orbax
checkpoint per epoch, marked finished once written (layout: :mod:`jaxmem.runs`).

Only trainable leaves are saved (for LoRA, prefix, ... just the method's own parameters); frozen
leaves come back from the base model and the method's deterministic init. A killed run resumes
from its last finished epoch and ends bit-identical to an uninterrupted one on the CPU: data order
and dropout keys depend only on (seed, epoch, step).

Example:
    >>> from jaxmem import tiny_model
    >>> params, cfg, tok = tiny_model()  # a random model: seconds, offline
    >>> texts = ["The cat sat.", "A dog ran far.", "Birds fly.", "Fish swim."]
    >>> result = train(params, cfg, tok, method_config("lora"), texts, ["Rain fell."],
    ...                "runs/lora", TrainConfig(epochs=1, batch_size=2, block_size=32))
    >>> [h["epoch"] for h in result.history]
    [1]
    >>> round(result.history[-1]["val_ppl"])  # about the vocabulary's 99: it is random
    9...
    >>> sorted(p.name for p in result.run_dir.iterdir())  # config, log, one checkpoint an epoch
    ['checkpoints', 'log.jsonl', 'run.json']
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import dp as dpsgd
from jaxmem import locks, runs
from jaxmem import sharding as sh
from jaxmem.batching import encode_texts
from jaxmem.canaries import CanaryConfig, CanarySpec, insert_canaries, parse_canaries
from jaxmem.checkpointing import CheckpointError
from jaxmem.config import DTYPES, check, check_positive_ints, dtype_name, field, is_int
from jaxmem.dp import DPConfig
from jaxmem.identity import KEY as IDENTITY
from jaxmem.identity import stale_run, texts_digest
from jaxmem.models.config import ModelConfig
from jaxmem.optim import OptimConfig, make_optimizer
from jaxmem.profiling import phase
from jaxmem.progress import bar as progress_bar
from jaxmem.progress import say
from jaxmem.provenance import KEY as PROVENANCE
from jaxmem.provenance import provenance
from jaxmem.scoring import score_sequences
from jaxmem.train_step import epoch_batches, make_train_step
from jaxmem.tuning import init_method, method_config
from jaxmem.tuning.partition import count, merge, split

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train. ``batch_size`` is per micro-batch; the optimizer sees
    ``batch_size * grad_accum`` examples per step, token-weighted exactly as one big batch.
    ``dtype`` takes a name or a jax dtype (stored as its name, see :func:`jaxmem.config.dtype_name`)."""

    epochs: int = field(3, help="passes over the fine-tuning set, one checkpoint each")
    batch_size: int = field(8, help="examples per micro-batch (a multiple of the device count "
                                    "with --mesh)")
    grad_accum: int = field(1, help="micro-batches per optimizer step")
    block_size: int = field(128, help="tokens per example; longer texts are truncated")
    dtype: str = field("float32", choices=DTYPES,
                       help="compute dtype; master weights and optimizer state stay float32")
    seed: int = field(0, help="training seed: data order, method init and dropout (the corpus split has its own data seed)")
    optim: OptimConfig = OptimConfig()
    eval_batch_size: int = field(16, help="batch size of the validation passes")
    log_every: int = field(1, help="log the loss every this many steps")
    dp: DPConfig | None = field(None, help="DP-SGD: per-example clipping + Gaussian noise, "
                                "e.g. 'epsilon=8,delta=1e-5,clip=1.0' (keys: epsilon, delta, "
                                "clip, noise_multiplier; see jaxmem.dp)")
    canaries: CanarySpec | None = field(None, help="canary exposure: N random secrets per "
                                        "repetition count inserted into the fine-tuning set, "
                                        "'N:REPEATS', e.g. '8:0,1,4,16' (0: never-inserted "
                                        "controls; see jaxmem.canaries)")

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if isinstance(self.optim, dict):
            object.__setattr__(self, "optim", OptimConfig(**self.optim))
        check_positive_ints(self, "epochs", "batch_size", "grad_accum", "block_size",
                            "eval_batch_size", "log_every")
        # jax keys hold 32 bits of a seed (larger ones collide), numpy refuses negative ones
        check(self, "seed", lambda v: is_int(v) and 0 <= v < 2**32,
              "an integer between 0 and 2**32 - 1")
        # the string spellings (command line, YAML, run.json) parsed once, here: a bad --dp or
        # --canaries fails before any model is loaded
        object.__setattr__(self, "dp", dpsgd.parse_dp(self.dp))
        object.__setattr__(self, "canaries", parse_canaries(self.canaries))

    def canary_config(self) -> CanaryConfig | None:
        """``canaries`` as a :class:`jaxmem.canaries.CanaryConfig` (None when off)."""
        return None if self.canaries is None else CanaryConfig.from_spec(self.canaries)

    def to_dict(self) -> dict:
        """The config as JSON holds it (``run.json``, ``study.json``): ``dp`` and ``canaries``
        in their string spellings, as given."""
        d = dataclasses.asdict(self)
        d["dp"] = None if self.dp is None else str(self.dp)
        d["canaries"] = None if self.canaries is None else str(self.canaries)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


def with_canaries(train_texts: Sequence[str], tcfg: TrainConfig):
    """The fine-tuning set with ``tcfg.canaries`` inserted, and their record.

    The one place a run's canaries are drawn: :func:`train` trains on the texts and writes the
    record beside the run, and a study measures the base model on the same record. Seeded by
    ``tcfg.seed`` alone, so a resumed run trains on exactly the same texts.

    Returns:
      (texts, :class:`jaxmem.canaries.Canaries`); without canaries (the texts as a list, None).

    Example:
        >>> train_texts = ["The cat sat on the mat.", "A dog ran far."]
        >>> texts, can = with_canaries(train_texts, TrainConfig(canaries="8:1,4,16"))
        >>> len(texts) - len(train_texts)  # 8 * (1 + 4 + 16)
        168
        >>> can.texts[0], can.texts[0] in texts
        ('my account number is 8 6 5 2 3 0', True)
    """
    ccfg = tcfg.canary_config()
    if ccfg is None:
        return list(train_texts), None
    return insert_canaries(train_texts, ccfg, seed=tcfg.seed)


@dataclasses.dataclass
class TrainResult:
    params: dict
    labels: dict
    history: list[dict]       # one dict per epoch: epoch, train_loss, val_loss, val_ppl, ...
    run_dir: Path


def _run_spec(model_name, cfg, mcfg, tcfg, n_train, n_val, data) -> dict:
    spec = {"model": str(model_name), "model_config": cfg.to_dict(),
            "method": dataclasses.asdict(mcfg), "train": tcfg.to_dict(),
            "n_train": n_train, "n_validation": n_val}
    if data is not None:  # where the texts came from: part of the run's identity
        spec["data"] = dict(data)
    return spec


def _dp_setup(tcfg: TrainConfig, n_train: int, spec: dict, progress: bool):
    """The run's :class:`jaxmem.dp.DPStep` (None without ``tcfg.dp``); records sigma and the
    epsilon of the whole run under ``spec["dp"]`` (deterministic, so resume compares equal)."""
    dp = tcfg.dp
    if dp is None:
        return None
    dpsgd.check_delta(dp.delta, n_train)  # before the folder is claimed or a step taken
    batch = tcfg.batch_size * tcfg.grad_accum
    steps, q = dpsgd.steps_and_rate(n_train, batch, tcfg.epochs)
    sigma = dpsgd.noise_multiplier(dp, n_train=n_train, batch=batch, steps=steps)
    eps = dpsgd.epsilon_spent(sigma, n_train=n_train, batch=batch, steps=steps, delta=dp.delta)
    spec["dp"] = {"noise_multiplier": sigma, "epsilon": eps, "delta": dp.delta, "clip": dp.clip,
                  "steps": steps, "sampling_rate": q,
                  "accountant": "RDP, Poisson-subsampled Gaussian (batches are shuffled, "
                                "fixed-size: the standard caveat)"}
    if progress:
        say(f"DP-SGD: noise multiplier {sigma:.4f}, clip {dp.clip}, epsilon {eps:.3f} at "
            f"delta {dp.delta} over {steps} steps (sampling rate {q:.4g})")
    return dpsgd.DPStep(clip=dp.clip, sigma=sigma, batch=batch)


def validation_loss(params, cfg, seqs, tcfg: TrainConfig, pad_id: int, mesh=None) -> float:
    """Token-weighted mean NLL over the validation sequences (virtual tokens never count)."""
    st = score_sequences(params, cfg, seqs, batch_size=tcfg.eval_batch_size,
                         block_size=tcfg.block_size, dtype=tcfg.dtype, pad_id=pad_id, mesh=mesh)
    return float(-np.where(st.mask, st.logp, 0.0).sum() / st.mask.sum())


# Degenerate training, which no NaN reveals: a huge learning rate saturates the model at the
# uniform distribution (validation loss exactly ln V) or blows it up (loss far beyond it).
# A collapsed model's logits are all equal: its loss is ln V to float32 rounding (measured:
# 1.3e-7 off), which no model that still predicts anything meets by chance...
UNIFORM_EXACT = 1e-5
# ... unless it started there (a zero output head); a tiny random model starts near ln V
# (0.03 below for the tests' models), so exactly uniform counts only from further than this:
UNIFORM_TOL = 1e-3
# Within UNIFORM_TOL of ln V is a collapse too for a model that started clearly below it: at
# least twice (in perplexity) better than a uniform guess.
UNIFORM_START_MARGIN = math.log(2)
# Diverged: worse than a uniform guess and 1,000 times (in perplexity) worse than at the start.
# Overfitting raises validation perplexity by small factors, never by a thousand.
EXPLODE_NATS = math.log(1000)


def degenerate(val_loss: float, start_loss: float, vocab_size: int) -> str | None:
    """Why a validation loss means the training degenerated, or None when it did not.

    Args:
      val_loss: this epoch's validation loss (nats per token).
      start_loss: where the run started (the base model's validation loss; on resume the best
        of the finished epochs').
      vocab_size: V; the uniform distribution's loss is ln V.
    """
    uniform = math.log(vocab_size)
    if not math.isfinite(val_loss):
        return f"the validation loss is {val_loss}"
    off = abs(val_loss - uniform)
    if ((off < UNIFORM_EXACT and abs(start_loss - uniform) >= UNIFORM_TOL)
            or (off < UNIFORM_TOL and start_loss < uniform - UNIFORM_START_MARGIN)):
        return (f"the validation loss is {val_loss:.4f} = ln {vocab_size}, a uniform guess over "
                f"the vocabulary (the model collapsed; it started at {start_loss:.4f})")
    if val_loss > uniform and val_loss > start_loss + EXPLODE_NATS:
        return (f"the validation loss exploded to {val_loss:.4g} (it started at "
                f"{start_loss:.4f}; a uniform guess scores ln {vocab_size} = {uniform:.4f})")
    return None


def _last_good(run_dir: Path) -> str:
    """Where a failed run's last good checkpoint is, for the error message."""
    last = runs.finished_epochs(run_dir)
    return (f"the last good checkpoint is epoch {last[-1]} in {runs.checkpoint_dir(run_dir)}"
            if last else "no epoch had finished, so there is no checkpoint")


def _restore(run_dir: Path, epoch: int, params, labels, opt_state=None):
    """(params, opt_state) from a checkpoint, laid out as the given arrays are.

    Without ``opt_state`` only the trainable params are read (orbax partial restore): loading a
    run for attacks never reads its optimizer state, twice the size of a full fine-tune.
    """
    trainable, frozen = split(params, labels)
    target = {"params": trainable}
    if opt_state is not None:
        target["opt_state"] = opt_state
    state = runs.restore_epoch(run_dir, epoch, target, partial=opt_state is None)
    return merge(state["params"], frozen), state.get("opt_state")


@locks.locked("run_dir", "run")  # one writer per run folder (jaxmem.locks)
def train(params: dict, cfg: ModelConfig, tokenizer, mcfg, train_texts: Sequence[str],
          val_texts: Sequence[str], run_dir: str | os.PathLike, tcfg: TrainConfig = TrainConfig(),
          *, model_name: str = "", data: dict | None = None, identity: dict | None = None,
          progress: bool = True, overwrite: bool = False, stop_after_epoch: int | None = None,
          mesh=None) -> TrainResult:
    """Fine-tunes ``params`` with a method, checkpointing every epoch; resumes when possible.

    Args:
      params, cfg, tokenizer: the base model (from :func:`jaxmem.models.load_model`). The
        step donates its buffers, so device (jax) arrays given here are copied first and stay
        usable; host (numpy) arrays, which ``load_model`` returns, need no extra copy.
      mcfg: a method name, spec string or config (see :func:`jaxmem.tuning.method_config`).
      train_texts, val_texts: the fine-tuning set and the validation set. With
        ``tcfg.canaries`` the canaries are added to ``train_texts`` here
        (:func:`with_canaries`) and their record is written to ``RUN_DIR/canaries.json``;
        ``n_train`` in ``run.json`` still counts the texts given.
      run_dir: where checkpoints and logs go. A directory holding another run's config is
        refused unless ``overwrite=True``; one holding this run's resumes after its last epoch.
      tcfg: the training configuration.
      model_name: the base model's name or path, recorded in ``run.json``.
      data: where the texts came from (e.g. :class:`jaxmem.runs.CorpusRecord` as a dict:
        corpus, seed, sizes), recorded in ``run.json`` as part of the run's identity, so a rerun
        on other data is refused and ``jaxmem attack --run-dir`` draws the same members.
      identity: the digests of what the run is (:func:`jaxmem.identity.run_identity`: base
        weights, tokenizer, corpus files, texts drawn), recorded in ``run.json``; resuming a
        run recorded with others is refused naming the file that changed. Default: the digests
        of ``train_texts`` and ``val_texts``.
      stop_after_epoch: stop (as if killed) after this epoch; for tests and staged runs.
      mesh: train data-parallel + FSDP over this mesh (:func:`jaxmem.sharding.make_mesh`):
        weights split over "fsdp" (a method's own parameters replicated), Adam moments laid out
        like their weights, each micro-batch split over every device (so ``batch_size`` must be
        a multiple of the device count). Checkpoints do not depend on the mesh: a run resumes
        on any other mesh or on one device. With several processes
        (:func:`jaxmem.sharding.initialize_distributed`), every process calls ``train`` with the
        same arguments, transfers its own devices' rows of every batch, and process 0 writes
        the files; ``run_dir`` must be on a filesystem all processes share.

    Returns:
      :class:`TrainResult` with the final params and labels and per-epoch metrics.

    Raises:
      FloatingPointError: on a NaN/inf loss, or a validation loss that shows the training
        degenerated (:func:`degenerate`: collapsed to the uniform distribution or exploded);
        the last good checkpoint stays on disk.

    Example:
        >>> import jaxmem
        >>> params, cfg, tok = jaxmem.tiny_model()  # or jaxmem.load_model("smollm2-135m")
        >>> texts = ["The cat sat.", "A dog ran far.", "Birds fly.", "Fish swim."]
        >>> res = jaxmem.train(params, cfg, tok, "lora:r=16", texts, ["Rain fell."], "runs/lora",
        ...                    jaxmem.TrainConfig(epochs=1, batch_size=2, block_size=32))
        >>> res.history[-1]["n_trainable"]  # rank-16 LoRA on q and v of 2 layers
        3584
        >>> tuned, labels = jaxmem.load_checkpoint("runs/lora", params, cfg, tok)  # last epoch
        >>> a, b = tuned["layers"]["attn"]["q_proj"], res.params["layers"]["attn"]["q_proj"]
        >>> bool((a["lora_b"] == b["lora_b"]).all())
        True
    """
    mcfg = method_config(mcfg)
    if not train_texts:
        raise ValueError("The fine-tuning set is empty: give a corpus with texts to train on "
                         "(--corpus, or n_train >= 1).")
    if not val_texts:
        raise ValueError("The validation set is empty: the corpus left no held-out texts for it. "
                         "Give --n-validation N (n_validation), or a folder with a "
                         "validation.txt beside train.txt and test.txt.")
    if tcfg.block_size > cfg.max_positions:
        raise ValueError(f"block_size {tcfg.block_size} exceeds the model's context "
                         f"({cfg.max_positions}); lower it.")
    if mesh is not None and tcfg.batch_size % sh.batch_split(mesh):
        raise ValueError(f"batch_size {tcfg.batch_size} cannot be split over the mesh's "
                         f"{sh.batch_split(mesh)} devices; use a multiple of "
                         f"{sh.batch_split(mesh)} (raise grad_accum to keep the step size).")
    progress = progress and sh.is_main_process()
    run_dir = Path(run_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_given = len(train_texts)
    if identity is None:  # the texts at least (before the canaries join them)
        identity = {"texts": {"train": texts_digest(train_texts),
                              "validation": texts_digest(val_texts)}}
    train_texts, canaries = with_canaries(train_texts, tcfg)
    seqs, _ = encode_texts(tokenizer, train_texts, tcfg.block_size)
    val_seqs, _ = encode_texts(tokenizer, val_texts, tcfg.block_size)
    key = jax.random.PRNGKey(tcfg.seed)
    # before the folder is claimed: a method that does not fit this model (a LoRA target it
    # lacks, too many virtual tokens) leaves no run.json behind to block the corrected rerun
    params, labels = init_method(mcfg, params, cfg, jax.random.fold_in(key, 1), tokenizer)
    spec = _run_spec(model_name, cfg, mcfg, tcfg, n_given, len(val_texts), data)
    spec[IDENTITY] = identity
    if canaries is not None:  # the secrets themselves: runs.CANARIES, written below
        spec["canaries"] = {"record": runs.CANARIES, "copies": len(train_texts) - n_given}
    dp_step = _dp_setup(tcfg, len(seqs), spec, progress)
    # a run started before an option existed resumes: it did what the option's default does
    defaults = {"model_config": runs.field_defaults(type(cfg)),
                "method": runs.field_defaults(type(mcfg)), "train": runs.field_defaults(TrainConfig)}
    # the content is compared apart (a run recorded before it was resumes), naming the file
    # that changed; with overwrite a stale run counts as another run and is replaced
    stale = stale_run(run_dir, spec, overwrite=overwrite)
    spec[PROVENANCE] = provenance()  # how it ran (the last start), not what it is: ignored
    runs.claim_run(run_dir, spec, overwrite=overwrite, defaults=defaults,
                   ignore=(PROVENANCE,) if stale else (IDENTITY, PROVENANCE))
    if canaries is not None and sh.is_main_process():
        canaries.save(run_dir / runs.CANARIES)
    if dp_step is not None:
        runs.append_log(run_dir, {"dp": spec["dp"]})
    # the caller's device arrays would be deleted by the step's donation
    params = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, params)
    steps_per_epoch = math.ceil(len(seqs) / (tcfg.batch_size * tcfg.grad_accum))
    tx = make_optimizer(tcfg.optim, labels, steps_per_epoch * tcfg.epochs)
    lora_dropout = getattr(mcfg, "dropout", 0.0) if mcfg.name == "lora" else 0.0
    step_fn = make_train_step(cfg, tx, labels, dtype=tcfg.dtype, lora_dropout=lora_dropout,
                              dp=dp_step)
    if mesh is None:
        params = jax.tree.map(jnp.asarray, params)
        opt_state = tx.init(params)
        place = lambda ids, mask: (jnp.asarray(ids), jnp.asarray(mask))  # noqa: E731
    else:
        p_sh = sh.param_shardings(params, mesh, cfg)
        params = sh.place(params, p_sh)
        opt_state, o_sh = sh.init_opt_state(tx, params, p_sh)
        step_fn = sh.shard_step(step_fn, p_sh, o_sh, mesh)
        place = lambda ids, mask: sh.shard_batch(ids, mask, mesh)  # noqa: E731

    history: list[dict] = []
    done = runs.finished_epochs(run_dir)
    start = 0
    if done:
        start = done[-1]
        with phase("checkpoint load"):
            params, opt_state = _restore(run_dir, start, params, labels, opt_state)
        history = [runs.epoch_record(run_dir, e)["metrics"] for e in done]
    if done and progress:  # what a rerun skips
        say(f"{run_dir}: all {tcfg.epochs} epochs already finished" if start >= tcfg.epochs
            else f"resuming {run_dir} after epoch {start} of {tcfg.epochs}")
    n_trainable = count(params, labels)

    if start == 0:
        with phase("validation"):
            base_val = validation_loss(params, cfg, val_seqs, tcfg, pad_id, mesh)
        history = []
        runs.append_log(run_dir, {"epoch": 0, "val_loss": base_val,
                                  "val_ppl": math.exp(base_val), "n_trainable": n_trainable})
    # where the run started, for the degenerate-training check (:func:`degenerate`)
    start_val = base_val if start == 0 else min(h["val_loss"] for h in history)
    last_epoch = min(tcfg.epochs, stop_after_epoch or tcfg.epochs)
    for epoch in range(start + 1, last_epoch + 1):
        bar = progress_bar(steps_per_epoch, f"{mcfg.name} epoch {epoch}/{tcfg.epochs}",
                           enabled=progress, unit="step")
        t0, losses = time.perf_counter(), []
        for s, (ids, mask) in enumerate(epoch_batches(seqs, tcfg, epoch, pad_id)):
            global_step = (epoch - 1) * steps_per_epoch + s
            rng = jax.random.fold_in(key, 1_000_000 + global_step)
            with phase("train steps"):
                params, opt_state, loss = step_fn(params, opt_state, *place(ids, mask), rng)
                loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"Loss became {loss} at epoch {epoch}, step {s + 1} ({mcfg.name}); "
                    f"{_last_good(run_dir)}. "
                    "Lower the learning rate (optim.lr), enable gradient clipping, or use "
                    "float32 compute.")
            losses.append(loss)
            if s % tcfg.log_every == 0:
                runs.append_log(run_dir, {"epoch": epoch, "step": global_step + 1, "loss": loss})
            if bar:
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
        if bar:
            bar.close()
        with phase("validation"):
            val = validation_loss(params, cfg, val_seqs, tcfg, pad_id, mesh)
        why = degenerate(val, start_val, cfg.vocab_size)
        if why:  # before the epoch is saved: the last good checkpoint stays the last
            raise FloatingPointError(
                f"Training degenerated at epoch {epoch} ({mcfg.name}): {why}. The learning "
                f"rate {tcfg.optim.lr:g} is too high; {_last_good(run_dir)}. Lower the learning "
                "rate (--lr, train.optim.lr; e.g. 10x lower) and train again in a new run "
                "directory (or with --overwrite).")
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val,
                   "val_ppl": math.exp(val), "epoch_seconds": time.perf_counter() - t0,
                   "n_trainable": n_trainable}
        if dp_step is not None:  # the privacy spent so far (accountant: jaxmem.dp)
            metrics["dp_noise_multiplier"] = dp_step.sigma
            metrics["dp_epsilon"] = dpsgd.epsilon_spent(
                dp_step.sigma, n_train=len(seqs), batch=dp_step.batch,
                steps=epoch * steps_per_epoch, delta=spec["dp"]["delta"])
        history.append(metrics)
        state = {"params": split(params, labels)[0], "opt_state": opt_state}
        with phase("checkpoint save"):
            runs.save_epoch(run_dir, epoch, state, {"metrics": metrics, "run": spec})
        runs.append_log(run_dir, metrics)
        if progress:
            say(f"{mcfg.name} epoch {epoch}: train loss {metrics['train_loss']:.4f}, "
                f"val ppl {metrics['val_ppl']:.3f} ({metrics['epoch_seconds']:.0f}s)")
    return TrainResult(params, labels, history, run_dir)


def load_checkpoint(run_dir, params: dict, cfg: ModelConfig, tokenizer=None,
                    epoch: int | None = None, mesh=None):
    """Base params + a run's checkpoint (default: its last finished epoch) -> (params, labels).

    The base model must be the one the run started from; the method comes from ``run.json``.
    With a ``mesh`` the params come back laid out on it (:func:`jaxmem.sharding.place_params`),
    whatever mesh the run was trained on.
    """
    run_dir = Path(run_dir)
    spec = runs.read_run_spec(run_dir)
    done = runs.finished_epochs(run_dir)
    if not done:
        raise CheckpointError(f"{run_dir} has no finished epoch to load.")
    epoch = done[-1] if epoch is None else epoch
    if epoch not in done:
        raise CheckpointError(f"Epoch {epoch} is not among the finished epochs {done} of {run_dir}.")
    mcfg = method_config(spec["method"]["name"], **{k: v for k, v in spec["method"].items()
                                                     if k != "name"})
    tcfg = TrainConfig.from_dict(spec["train"])
    params, labels = init_method(mcfg, params, cfg, jax.random.fold_in(
        jax.random.PRNGKey(tcfg.seed), 1), tokenizer)
    params = (jax.tree.map(jnp.asarray, params) if mesh is None
              else sh.place_params(params, mesh, cfg))
    with phase("checkpoint load"):
        params, _ = _restore(run_dir, epoch, params, labels)
    return params, labels
