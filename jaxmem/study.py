"""The study: models x datasets x methods x epochs x attacks, resumable, into one results folder.

For every cell (model, dataset, method) it fine-tunes with a checkpoint per epoch, attacks each
chosen epoch's checkpoint (reference = the base model), and records validation perplexity next
to every attack's AUC and TPR at low FPR with bootstrap CIs, all in one folder (``study.json``,
``results.csv``/``.json``, ``report.md``, ``runs/``, ``attacks/``; layout: :mod:`jaxmem.runs`).

A finished (cell, epoch) is never recomputed (:func:`jaxmem.runs.cell_done`); an interrupted
training continues from its last checkpoint.

A ``study.json`` written before the options were nested (flat ``epochs``, ``block_size``...)
is converted on the first resumption (:func:`migrate_study_json`).

Example:
    >>> cfg = StudyConfig.from_yaml("experiments/demo.yaml", ["train.epochs=2"])
    >>> run_study(cfg, "results/demo")
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from jaxmem import locks, runs
from jaxmem.attacks import DEFAULT_ATTACKS
from jaxmem.audit import AuditConfig
from jaxmem.config import (check, check_positive_ints, is_int, is_number, iter_fields,
                           load_yaml, replace_nested)
from jaxmem.profiling import Profile, phase
from jaxmem.trainer import TrainConfig


EXECUTION_FIELDS = ("mesh",)
# The CanaryConfig fields a study's canary_exposure: sets (how exposure is measured, not which
# canaries are trained on), and their study defaults. Exposure costs one scoring pass per
# reference secret (smollm2-135m, 2 shared CPU cores: 1,000 took 115 s per model, 2,000 205 s),
# and a study measures every attacked (method, epoch), so 1,000 (sampled cap log2(1001) = 10
# bits, above the 1-3 bits CPU-scale fine-tunes reach; the skew-normal estimate goes beyond).
EXPOSURE_OPTIONS = ("n_samples", "exact_max", "batch_size", "dtype")
EXPOSURE_DEFAULTS = {"n_samples": 1000}
STUDY_ATTACKS = tuple(a for a in DEFAULT_ATTACKS if a != "lowercase")

# The flat study options of earlier versions (and of study.json files they wrote) -> their homes.
FLAT_OPTIONS = {
    "epochs": ("train.epochs",), "batch_size": ("train.batch_size",),
    "grad_accum": ("train.grad_accum",), "lr_default": ("train.optim.lr",),
    "weight_decay": ("train.optim.weight_decay",), "warmup_steps": ("train.optim.warmup_steps",),
    "schedule": ("train.optim.schedule",), "attacks": ("audit.attacks",),
    "n_boot": ("audit.n_boot",), "score_batch_size": ("audit.batch_size",),
    "block_size": ("train.block_size", "audit.block_size"),
    "dtype": ("train.dtype", "audit.dtype"), "seed": ("train.seed", "audit.seed"),
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What to run: the grid (models x datasets x methods), how each cell trains (``train``, a
    :class:`jaxmem.trainer.TrainConfig`) and how it is attacked (``audit``, a
    :class:`jaxmem.audit.AuditConfig`).

    ``methods`` are spec strings (``"lora:r=16,target=mlp"``); ``lr`` maps a method spec or
    family to its learning rate (``train.optim.lr`` otherwise). Two kinds of randomness are
    kept apart: ``data_seed`` draws the corpus (which texts train, which are members and
    non-members, under the ``split`` design of :func:`jaxmem.data.load_corpus`), and
    ``seeds`` are the training seeds (initialization, data order, dropout): every method is
    trained once per seed on the same texts and attacked on the same members and
    non-members, so results give each cell's mean and spread over seeds and the claims'
    intervals hold the seed variance (:mod:`jaxmem.claims`). Without ``seeds`` a cell trains
    once, with ``train.seed``. In YAML the nested configs are mappings::

        methods: [full, lora]
        lr: {full: 1.0e-4, lora: 1.0e-3}
        train: {epochs: 3, batch_size: 8, block_size: 48}
        audit: {attacks: [loss, ref], block_size: 48, n_boot: 500}
        seeds: [0, 1, 2]
    """

    name: str = "study"
    models: tuple = ("smollm2-135m",)
    datasets: tuple = ("default",)
    methods: tuple = ("full", "head", "lora", "prefix", "prompt", "ptuning")
    lr: dict = dataclasses.field(default_factory=dict)
    attack_epochs: tuple | None = None       # None: every epoch
    n_train: int | None = None               # None: the corpus default (the paper's Table 1)
    n_validation: int | None = None
    n_members: int | None = None
    n_nonmembers: int | None = None
    data_seed: int = 0                       # draws the corpus split (load_corpus's seed)
    split: str = "auto"                      # the member / non-member design (data.SPLITS)
    seeds: tuple | None = None               # training seeds; None: one run with train.seed
    train: TrainConfig = TrainConfig(epochs=5)
    audit: AuditConfig = AuditConfig(attacks=STUDY_ATTACKS)
    # Verbatim extraction of every attacked cell (jaxmem.extraction): None = off, else the
    # ExtractionConfig fields as a mapping ({} = its defaults), e.g. {prefix_len: 16}.
    extraction: dict | None = None
    # Canary exposure (jaxmem.canaries), measured on every attacked cell and the base model when
    # train.canaries is set: how it is measured, as CanaryConfig fields (EXPOSURE_OPTIONS).
    # None: EXPOSURE_DEFAULTS, sized for a CPU study.
    canary_exposure: dict | None = None
    # How to run, not what: "auto", "4x2" (data x fsdp), ... (see jaxmem.sharding.parse_mesh).
    # Not part of the study's identity: a study resumes on another mesh.
    mesh: str | None = None

    def __post_init__(self):
        # YAML and the command line give lists; keep the config hashable and comparable.
        for f in ("models", "datasets", "methods", "attack_epochs", "seeds"):
            v = getattr(self, f)
            if f == "seeds" and is_int(v):
                v = [v]
            if isinstance(v, (list, str)):
                object.__setattr__(self, f, tuple([v] if isinstance(v, str) else v))
        for f in ("models", "datasets", "methods"):
            check(self, f, lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
                  "a list of names", f"{f}: in the YAML")
        check(self, "name", lambda v: isinstance(v, str) and v, "a non-empty string")
        if not self.methods or not self.models or not self.datasets:
            raise ValueError("A study needs at least one model, dataset and method.")
        check_positive_ints(self, "n_train", "n_validation", "n_members", "n_nonmembers",
                            allow_none=True)
        check(self, "data_seed", lambda v: is_int(v) and 0 <= v < 2**32,
              "an integer between 0 and 2**32 - 1")
        from jaxmem.data import SPLITS

        check(self, "split", lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}")
        check(self, "seeds", lambda v: v is None or (len(v) > 0 and len(set(v)) == len(v) and all(
            is_int(x) and 0 <= x < 2**32 for x in v)),
            "None or a list of distinct integers >= 0, e.g. [0, 1, 2]")
        check(self, "attack_epochs", lambda v: v is None or all(
            is_int(e) and 1 <= e <= self.train.epochs for e in v),
            f"None or epochs between 1 and train.epochs ({self.train.epochs})")
        check(self, "lr", lambda v: isinstance(v, dict) and all(
            is_number(x) and x >= 0 for x in v.values()), "a mapping of method -> learning rate")
        from jaxmem.tuning import method_config

        for m in self.methods:
            method_config(m)  # fail now, not after hours, on an unknown method
        from jaxmem.attacks import parse_attack

        for a in self.audit.attacks:
            parse_attack(a)
        if self.extraction is not None:
            self.extraction_config()  # an unknown or bad field fails now
        self.exposure_options()  # so does a bad canary_exposure

    def extraction_config(self):
        """``extraction`` as a :class:`jaxmem.extraction.ExtractionConfig` (None when off)."""
        from jaxmem.extraction import ExtractionConfig

        if self.extraction is None:
            return None
        if not isinstance(self.extraction, dict):
            raise ValueError("extraction: must be a mapping of ExtractionConfig fields, e.g. "
                             "{prefix_len: 16, suffix_len: 16} ({} for the defaults).")
        names = {f.name for f in dataclasses.fields(ExtractionConfig)}
        unknown = set(self.extraction) - names
        if unknown:
            raise ValueError(f"Unknown extraction options {sorted(unknown)}; known: "
                             f"{sorted(names)}.")
        return ExtractionConfig(**self.extraction)

    def exposure_options(self) -> dict | None:
        """How canary exposure is measured: :data:`EXPOSURE_DEFAULTS` updated with
        ``canary_exposure``, as :class:`jaxmem.canaries.CanaryConfig` fields; None without
        ``train.canaries``.

        Raises:
          ValueError: ``canary_exposure`` is not a mapping, names a field that is not a
            measurement option, holds a bad value, or is given without ``train.canaries``.
        """
        opts = self.canary_exposure
        if opts is not None and not isinstance(opts, dict):
            raise ValueError("canary_exposure: must be a mapping of measurement options, e.g. "
                             "{n_samples: 2000} ({} for the defaults).")
        unknown = set(opts or {}) - set(EXPOSURE_OPTIONS)
        if unknown:
            raise ValueError(f"Unknown canary_exposure options {sorted(unknown)}; known: "
                             f"{list(EXPOSURE_OPTIONS)} (the canaries themselves come from "
                             "train.canaries).")
        if self.train.canaries is None:
            if opts is not None:
                raise ValueError("canary_exposure: is set but train.canaries is not; set "
                                 "train.canaries (e.g. --set train.canaries=8:0,1,4,16) or "
                                 "drop canary_exposure.")
            return None
        from jaxmem.canaries import CanaryConfig

        opts = {**EXPOSURE_DEFAULTS, **(opts or {})}
        CanaryConfig.from_spec(self.train.canaries, **opts)  # a bad value fails now
        return opts

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict:
        """What makes two configs the same study: everything but how it runs (``mesh``)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}

    @classmethod
    def from_dict(cls, d: dict, *, flat_ok: bool = False) -> "StudyConfig":
        """A config from nested mappings (``{"train": {"epochs": 3}}``) and/or dotted keys
        (``{"train.epochs": 3}``).

        The flat options of older versions (``epochs``, ``block_size``, ``score_batch_size``,
        ...; see :data:`FLAT_OPTIONS`) are mapped to their nested homes, with a FutureWarning
        unless ``flat_ok``; so is the old spelling ``max_length`` of ``block_size``.
        """
        dotted = _dotted(d)
        renamed = [k for k in dotted if k.rpartition(".")[2] == "max_length"]
        for k in renamed:
            head, dot, _ = k.rpartition(".")
            dotted[head + dot + "block_size"] = dotted.pop(k)
        flat = [k for k in dotted if k in FLAT_OPTIONS]
        if (flat and not flat_ok) or renamed:
            warnings.warn(
                "Study options moved into train/audit: "
                + ", ".join(f"{k} -> {' and '.join(FLAT_OPTIONS[k])}" for k in flat)
                + (f"; max_length is now block_size ({', '.join(renamed)})" if renamed else "")
                + ". Write them nested (train: {epochs: 3}) or dotted (--set train.epochs=3).",
                FutureWarning, stacklevel=2)
        for k in flat:
            v = dotted.pop(k)
            for home in FLAT_OPTIONS[k]:
                dotted.setdefault(home, v)
        if any(k.startswith("frontier.") for k in dotted):
            raise ValueError("frontier: options (epsilons, delta, clip) belong to a privacy-"
                             "utility frontier: run `jaxmem frontier CONFIG`, not `jaxmem "
                             "study` (see experiments/cpu/frontier.yaml).")
        known = {f.name for f in dataclasses.fields(cls)} - {"train", "audit"}
        known |= {n for n, _, _ in iter_fields(TrainConfig, "train.")}
        known |= {n for n, _, _ in iter_fields(AuditConfig, "audit.")}
        unknown = set(dotted) - known
        if unknown:
            raise ValueError(f"Unknown study options {sorted(unknown)}; known: {sorted(known)}.")
        # attack_epochs is checked against train.epochs and canary_exposure against
        # train.canaries, so they are set together with train
        top = {k: v for k, v in dotted.items()
               if "." not in k and k not in ("attack_epochs", "canary_exposure")}
        return replace_nested(cls(**top), {k: v for k, v in dotted.items() if k not in top})

    @classmethod
    def from_yaml(cls, path, overrides: list[str] = ()) -> "StudyConfig":
        """Loads a YAML config, then applies ``key=value`` overrides (values parsed as YAML;
        nested keys dotted: ``train.epochs=4``)."""
        return cls.from_dict(read_options(path, overrides))

    def lr_for(self, method: str) -> float:
        default = self.train.optim.lr
        return float(self.lr.get(method, self.lr.get(method.partition(":")[0], default)))

    def run_seeds(self) -> tuple:
        """The training seeds a cell runs with: ``seeds``, or ``(None,)`` for one run with
        ``train.seed`` in the layout of a study without seeds."""
        return tuple(self.seeds) if self.seeds is not None else (None,)

    def train_config(self, method: str, seed: int | None = None) -> TrainConfig:
        """The trainer's config for one method (and training seed): ``train`` with the
        method's learning rate and ``seed`` (None: ``train.seed``)."""
        changes = {"optim.lr": self.lr_for(method)}
        if seed is not None:
            changes["seed"] = int(seed)
        return replace_nested(self.train, changes)


def read_options(path, overrides: list[str] = ()) -> dict:
    """A YAML config's options, dotted (``{"train.epochs": 3}``), with ``key=value``
    overrides applied (values parsed as YAML); ``path`` None: the overrides alone.

    Raises:
      FileNotFoundError, ValueError: no such file, not YAML, not a mapping, a bad override.
    """
    import yaml

    d = {}
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"No such study config: {path}")
        try:
            d = load_yaml(Path(path).read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a YAML file: it is not UTF-8 text ({e.reason} at "
                             f"byte {e.start}). A study config is text, e.g. "
                             "experiments/demo.yaml.") from None
        if not isinstance(d, dict) or not d:
            raise ValueError(
                f"{path} holds {'nothing' if not d else 'a ' + type(d).__name__}, not a "
                "mapping of study options (e.g. `methods: [lora, prompt]`, `train: "
                "{epochs: 3}`); see experiments/demo.yaml.")
        _check_keys(d, path)
    d = _dotted(d)
    for item in overrides:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not key=value.")
        try:
            d[k.strip()] = load_yaml(v)
        except yaml.YAMLError as e:
            raise ValueError(f"Override {item!r}: the value is not valid YAML ({e}).") from None
    return d


# the options that are mappings of a config's own options (an empty one: its defaults)
SECTIONS = {"train": "TrainConfig", "audit": "AuditConfig", "train.optim": "OptimConfig",
            "frontier": "FrontierConfig"}


def _check_keys(value, path, where: str = "") -> None:
    """Refuses a mapping key that is not text anywhere in a config file (``1: 2``, ``null:``):
    every option and method name is text."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{path}: the key {k!r} ({type(k).__name__})"
                                 f"{' under ' + where if where else ''} is not a name; option "
                                 "names are text (e.g. `epochs: 3`).")
            _check_keys(v, path, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for v in value:
            _check_keys(v, path, where)


def _dotted(d: dict, prefix: str = "") -> dict:
    """``{"train": {"optim": {"lr": 1}}}`` -> ``{"train.optim.lr": 1}``; other values as they are.

    Raises:
      ValueError: a key that is not text, or a section (``train``, ``audit``, ...) that is not
        a mapping, named with the type it must have.
    """
    out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"Study option {prefix}{k!r} ({type(k).__name__}) is not a name; "
                             "option names are text (e.g. `epochs: 3`).")
        if prefix + k in SECTIONS and not isinstance(v, dict) and v is not None:
            raise ValueError(f"{prefix + k}: must be a mapping of {SECTIONS[prefix + k]} "
                             f"options, e.g. `{prefix + k}: {{{_example(prefix + k)}}}` (or "
                             f"dotted: --set {prefix + k}.{_example(prefix + k).replace(': ', '=')}"
                             f"); got {v!r} ({type(v).__name__}).")
        if k.rpartition(".")[2] in ("train", "audit", "optim", "frontier") and isinstance(v, dict):
            out.update(_dotted(v, f"{prefix}{k}."))
        elif prefix + k not in SECTIONS:  # an empty section (None): its defaults
            out[prefix + k] = v
    return out


def _example(section: str) -> str:
    return {"train": "epochs: 3", "audit": "n_boot: 500", "train.optim": "lr: 1.0e-3",
            "frontier": "delta: 1.0e-5"}[section]


def migrate_study_json(out: Path) -> None:
    """Rewrites a ``study.json`` written before the configs were nested (flat ``epochs``,
    ``block_size``, ...) into today's form, and fills in options added since a study started
    with their defaults, so a study started then resumes.

    Every process reads the file before process 0 rewrites it.
    """
    from jaxmem.sharding import is_main_process, sync

    path = Path(out) / "study.json"
    old = runs.read_json(path) if path.exists() else None
    sync("jaxmem-study-migrate-read")
    if old is not None and "train" not in old:
        try:
            new = StudyConfig.from_dict(old, flat_ok=True).to_dict()
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{path} was written by an older jaxmem, whose study options were flat "
                f"(epochs, block_size, ...; now under train: and audit:), and cannot be "
                f"converted ({e}). Use another --out-dir, or --overwrite to start over.") from e
        if is_main_process():
            runs.atomic_write(path, json.dumps(new, indent=1))
            print(f"{path}: converted to the nested study options (train:, audit:)")
    elif old is not None:
        # Options added since the study started (e.g. audit.recall_shots) take their defaults,
        # which leave what was already computed unchanged: fill them in so the study resumes.
        # Not so the split: a study from before it existed drew its corpus by whole articles
        # with train.seed, which is recorded as such (a config asking for the default split
        # then differs, and claim_study names it).
        legacy = {} if "split" in old else {
            "split": "legacy-by-group", "data_seed": old.get("train", {}).get("seed", 0)}
        try:
            new = StudyConfig.from_dict({**old, **legacy}).to_dict()
        except (ValueError, TypeError):
            new = old  # not a config this version reads: claim_study names the difference
        added = sorted(set(_dotted(new)) - set(_dotted(old)))
        if new != old and not set(_dotted(old)) - set(_dotted(new)) and is_main_process():
            runs.atomic_write(path, json.dumps(new, indent=1))
            print(f"{path}: options added since the study started take their defaults "
                  f"({', '.join(added)})")
    sync("jaxmem-study-migrated")


def _claim_folder(out: Path, scfg: StudyConfig, overwrite: bool) -> None:
    runs.claim_study(out, scfg.to_dict(), overwrite=overwrite, ignore=EXECUTION_FIELDS)


TPR_COLUMNS = {"tpr@10%fpr": 0.1, "tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}


def _tpr(m: dict, key: str) -> float | None:
    """A row's TPR at one FPR, None (an empty cell in ``results.csv``) where the non-members
    cannot support that FPR (:func:`jaxmem.metrics.tpr_unsupported_reason`). The rule is
    applied here too so that ``metrics.json`` files written before it read the same way."""
    from jaxmem.metrics import tpr_unsupported_reason

    if tpr_unsupported_reason(TPR_COLUMNS[key], m["n_nonmembers"]):
        return None
    return m.get(key)


def _privacy(where: Path, run_dir: Path | None, epoch: int, attacks, delta: float
             ) -> tuple[dict, dict]:
    """A done cell's privacy columns: the DP-SGD accounting of its training run up to ``epoch``
    (``dp_epsilon`` spent by then, from the epoch's record; ``dp_delta``,
    ``dp_noise_multiplier`` from ``run.json``; empty without DP) and, per attack, the
    empirical epsilon its scores imply (:func:`jaxmem.dp.empirical_epsilon`, 95%
    Clopper-Pearson) at ``delta``, the study's one delta (0 without DP), so that every row of a
    study, the base model's included, is a bound at the same delta."""
    from jaxmem import attacks as A
    from jaxmem.dp import empirical_epsilon

    dp = {}
    if run_dir is not None and (run_dir / runs.RUN_SPEC).exists():
        dp = dict(runs.read_run_spec(run_dir).get("dp") or {})
        if dp and epoch in runs.finished_epochs(run_dir):
            spent = runs.epoch_record(run_dir, epoch).get("metrics", {}).get("dp_epsilon")
            dp["epsilon"] = dp["epsilon"] if spent is None else spent
    cols = {"dp_epsilon": dp.get("epsilon"), "dp_delta": dp.get("delta"),
            "dp_noise_multiplier": dp.get("noise_multiplier")}
    emp = {}
    if (where / runs.SCORES).exists():
        import pyarrow.parquet as pq

        names = set(pq.read_schema(where / runs.SCORES).names)
        table = pq.read_table(where / runs.SCORES,
                              columns=["member", *(a for a in attacks if a in names)]).to_pydict()
        labels = np.asarray(table["member"], int)
        for attack in attacks:
            s = np.asarray(table.get(attack, []), np.float64)
            if len(s) != len(labels):
                continue
            s = A.as_ranks(s)  # an infinite score is an extreme rank, not missing
            ok = ~np.isnan(s)
            if len(set(labels[ok])) == 2:
                emp[attack] = empirical_epsilon(s[ok], labels[ok], delta=delta)
    return cols, emp


def _rows(model, n_params, dataset, method, epoch, where, base_ppl=None,
          run_dir=None, delta: float = 0.0, seed: int | None = None) -> list[dict]:
    """The result rows of a done (cell, epoch), one per attack.

    Every row of the cell also carries the cell's strongest attack
    (:func:`jaxmem.report.strongest_attack`: ``strongest_attack``, ``strongest_tpr`` at
    ``strongest_fpr``; empty where the non-members support no FPR); given the base model's
    validation perplexity ``base_ppl`` (None: the base model itself), ``ppl_vs_base`` and
    ``comparable_utility`` (:func:`jaxmem.report.comparable_utility`); the privacy columns
    of :func:`_privacy` (the training run ``run_dir``'s DP epsilon, each attack's empirical
    epsilon); and with canary exposure (``exposure.json``), the mean exposure of the canaries
    inserted R times: ``exposure_<R>x`` (the sampled estimator) and ``exposure_skewnorm_<R>x``.
    The blind baseline of the cell's texts (``info["blind"]``, :mod:`jaxmem.blind`):
    ``blind_auc`` [``blind_auc_lo``, ``blind_auc_hi``] of the stronger feature set,
    ``blind_word_auc``, ``blind_char_auc`` (empty where the cell has none).
    """
    from jaxmem.report import comparable_utility, strongest_attack

    metrics, val = runs.read_cell(where)
    ppl = float(np.exp(val))
    base_ppl = ppl if base_ppl is None else base_ppl
    rows = []
    for attack, m in metrics.items():
        ci = m.get("auc_ci") or (np.nan, np.nan)
        rows.append({"model": model, "model_params": n_params, "dataset": dataset,
                     "method": method, "seed": seed, "epoch": epoch,
                     "val_loss": val, "val_ppl": ppl, "attack": attack,
                     "auc": m["auc"], "auc_lo": ci[0], "auc_hi": ci[1],
                     **{k: _tpr(m, k) for k in TPR_COLUMNS}, "n_members": m["n_members"],
                     "n_nonmembers": m["n_nonmembers"]})
    # the split check (jaxmem.blind: members vs non-members by their texts alone, no model);
    # empty for a cell attacked before it existed or with audit.blind off
    blind = runs.read_json(where / runs.METRICS)["info"].get("blind") or {}
    ci = blind.get("auc_ci") or (None, None)
    for r in rows:
        r.update(blind_auc=blind.get("auc"), blind_auc_lo=ci[0], blind_auc_hi=ci[1],
                 blind_word_auc=(blind.get("word") or {}).get("auc"),
                 blind_char_auc=(blind.get("char") or {}).get("auc"))
    ext = where / runs.EXTRACTION
    if ext.exists():  # verbatim extraction of this cell, when the study asked for it
        e = runs.read_json(ext)
        cols = {f"{k}_{side}": e[side][k] for side in ("members", "nonmembers")
                for k in ("k_extractable_rate", "token_match")}
        for side in ("members", "nonmembers"):  # "n=100,p=0.5" -> discoverable_n100_members
            for key, v in e[side]["discoverable"].items():
                cols[f"discoverable_n{dict(kv.split('=') for kv in key.split(','))['n']}_"
                     f"{side}"] = v
        cols["discoverable_p"] = e["config"]["p"]
        for r in rows:
            r.update(cols)
    dp, emp = _privacy(where, run_dir, epoch, metrics, delta)
    for r in rows:
        r.update(dp, empirical_epsilon=emp.get(r["attack"]))
    exp = where / runs.EXPOSURE
    if exp.exists():  # canary exposure of this cell (train.canaries): mean per repetition count
        by = runs.read_json(exp)["by_repeats"]
        for r in rows:
            r.update({f"exposure_{n}x": v["sampled"] for n, v in by.items()})
            # None where the skew-normal fit failed (the report's note; jaxmem.canaries)
            r.update({f"exposure_skewnorm_{n}x": v.get("skewnorm") for n, v in by.items()})
    from jaxmem.overfit import member_loss

    train_loss = member_loss(where)  # memorization or overfitting: the gap beside the AUCs
    for r in rows:
        r.update(member_loss=train_loss,
                 gap=None if train_loss is None else val - train_loss)
    best = strongest_attack({r["attack"]: r for r in rows}) or {}
    for r in rows:
        r.update(strongest_attack=best.get("attack"), strongest_tpr=best.get("tpr"),
                 strongest_fpr=best.get("fpr"), ppl_vs_base=ppl / base_ppl,
                 comparable_utility=comparable_utility(ppl, base_ppl))
    return rows


@locks.locked("out_dir", "study")  # one writer per study folder (jaxmem.locks)
def run_study(scfg: StudyConfig, out_dir, *, overwrite: bool = False, progress: bool = True,
              stop_after: int | None = None, mesh=None,
              attention_impl: str = "einsum") -> list[dict]:
    """Runs (or resumes) every cell and writes results and the report.

    Args:
      stop_after: stop after this many newly attacked (cell, epoch) pairs, as if killed; for
        tests of resumption.
      mesh: train and score sharded over this mesh (see :func:`jaxmem.trainer.train`); results
        do not depend on it beyond float32 rounding. Default: the config's ``mesh``, else all
        devices on "data" when several processes run, else one device. With several
        processes, all run the same study into one shared ``out_dir`` and process 0 writes the
        files.
      attention_impl: the attention kernel (see :class:`jaxmem.models.ModelConfig`); an
        execution choice that leaves results unchanged up to rounding.

    Returns:
      The result rows (also in ``results.csv`` / ``results.json``).

    Example:
        >>> import jaxmem
        >>> cfg = jaxmem.StudyConfig.from_yaml("experiments/demo.yaml", ["train.epochs=2"])
        >>> rows = jaxmem.run_study(cfg, "results/demo")  # resumes if stopped
    """
    with Profile() as prof:  # where the time goes: timings.json and the report's last table
        return _run_study(scfg, out_dir, overwrite, progress, stop_after, mesh, attention_impl,
                          prof)


def _run_study(scfg, out_dir, overwrite, progress, stop_after, mesh, attention_impl, prof):
    from jaxmem import attacks as A
    from jaxmem.audit import run_attacks_on
    from jaxmem.data import load_corpus
    from jaxmem.identity import run_identity
    from jaxmem.models import load_model
    from jaxmem.reference_attacks import study_references
    from jaxmem.report import write_study_report
    from jaxmem.scoring import encode_texts, score_texts
    from jaxmem.trainer import load_checkpoint, train, validation_loss

    from jaxmem.sharding import is_main_process

    if mesh is None and (scfg.mesh or jax.process_count() > 1):
        from jaxmem.sharding import parse_mesh

        mesh = parse_mesh(scfg.mesh or "auto")
    if mesh is not None and any(x.startswith("gradients:") for x in A.needs(scfg.audit.attacks)):
        raise ValueError("The gradient-norm attacks (grad_norm, grad_norm_all) run on one "
                         "device; drop them from audit.attacks or run without a mesh.")
    if mesh is not None and scfg.extraction is not None:
        raise ValueError("Verbatim extraction runs on one device; drop extraction: or run "
                         "without a mesh.")
    if mesh is not None and scfg.train.canaries is not None:
        raise ValueError("Canary exposure runs on one device; drop train.canaries or run "
                         "without a mesh.")
    out = Path(out_dir)
    migrate_study_json(out)
    _claim_folder(out, scfg, overwrite)
    progress = progress and is_main_process()
    rows: list[dict] = []
    done_new = 0
    t_start = time.perf_counter()
    session = time.strftime("%Y-%m-%dT%H:%M:%S")  # this session's id in sessions.json
    acfg, ecfg = scfg.audit, scfg.extraction_config()
    from jaxmem.dp import parse_dp

    dp = parse_dp(scfg.train.dp)
    delta = dp.delta if dp is not None else 0.0  # of every row's empirical epsilon
    exposure_opts = scfg.exposure_options()  # None without train.canaries

    def save_session():
        runs.record_session(out, session, time.perf_counter() - t_start, prof.table())

    for model_name in scfg.models:
        with phase("load model"):
            base, cfg, tok = load_model(model_name)
        cfg = dataclasses.replace(cfg, attention_impl=attention_impl)
        n_params = int(sum(np.size(x) for x in jax.tree.leaves(base)))
        for dataset in scfg.datasets:
            with phase("corpus"):
                corpus = load_corpus(dataset, seed=scfg.data_seed, split=scfg.split,
                                     n_train=scfg.n_train, n_validation=scfg.n_validation,
                                     n_members=scfg.n_members, n_nonmembers=scfg.n_nonmembers)
            empty = [k for k in ("train", "validation", "members", "nonmembers")
                     if not getattr(corpus, k)]
            if empty:
                raise ValueError(
                    f"Dataset {dataset!r} gives an empty {' and '.join(empty)} set "
                    f"({len(corpus.train)} train, {len(corpus.validation)} validation, "
                    f"{len(corpus.members)} members, {len(corpus.nonmembers)} non-members); "
                    "give it more texts or set the study's n_* sizes explicitly.")
            if dp is not None:  # delta >= 1/n voids DP: refused before this dataset's work
                from jaxmem.dp import check_delta
                from jaxmem.trainer import with_canaries

                check_delta(dp.delta, len(with_canaries(corpus.train, scfg.train)[0]))
            texts = corpus.members + corpus.nonmembers
            base_stats = None  # the reference pass, shared by every method of this dataset
            # lira / rmia: (method, tcfg, epoch) -> that target's reference models (None: unused)
            references_for = study_references(out, model_name, dataset, corpus, base, cfg, tok,
                                              scfg, mesh=mesh, progress=progress)

            base_canaries = None  # the base model is measured on the runs' own canaries
            if exposure_opts is not None:
                from jaxmem.canaries import Canaries
                from jaxmem.trainer import with_canaries

                base_canaries = with_canaries(corpus.train, scfg.train)[1]

            def attack(params, where: Path, title: str, is_base: bool = False, labels=None,
                       canaries=None, references=None):
                nonlocal base_stats
                locks.check(out)  # the study folder removed under us: stop, never remake it
                if base_stats is None:
                    with phase("scoring"):
                        base_stats = score_texts(base, cfg, tok, texts, mesh=mesh,
                                                 batch_size=acfg.batch_size,
                                                 block_size=acfg.block_size, dtype=acfg.dtype)
                res = run_attacks_on(params, cfg, tok, corpus.members, corpus.nonmembers, acfg,
                                     reference_params=base, out_dir=where, overwrite=True,
                                     title=title, reference_stats=base_stats,
                                     target_stats=base_stats if is_base else None, mesh=mesh,
                                     prefix_texts=corpus.validation, param_labels=labels,
                                     references=references)
                if ecfg is not None and is_main_process():  # before the cell is marked done
                    from jaxmem.extraction import extraction_metrics

                    with phase("extraction"):
                        ext = extraction_metrics(params, cfg, tok, corpus.members,
                                                 corpus.nonmembers, ecfg, progress=progress)
                    runs.atomic_write(where / runs.EXTRACTION, json.dumps(ext))
                if canaries is not None and is_main_process():  # before the cell is marked done
                    from jaxmem.canaries import exposure_report

                    canaries = dataclasses.replace(canaries, config=dataclasses.replace(
                        canaries.config, **exposure_opts))
                    with phase("exposure"):
                        rep = exposure_report(params, cfg, tok, canaries, seed=acfg.seed,
                                              block_size=acfg.block_size)
                    runs.atomic_write(where / runs.EXPOSURE, rep)
                return res

            # epoch 0: the base model itself, the floor every method starts from
            where = runs.study_attack_dir(out, model_name, dataset, "base", 0)
            if not runs.cell_done(where):
                attack(base, where, f"{model_name} base", is_base=True, canaries=base_canaries,
                       references=references_for(None, scfg.train, 0))
                with phase("validation"):
                    val_seqs, _ = encode_texts(tok, corpus.validation, scfg.train.block_size)
                    val = validation_loss(base, cfg, val_seqs, scfg.train,
                                          tok.pad_token_id or 0, mesh)
                runs.mark_cell_done(where, val)
                save_session()
            rows += _rows(model_name, n_params, dataset, "base", 0, where, delta=delta)
            base_ppl = rows[-1]["val_ppl"]

            def train_and_attack(method: str, seed: int | None) -> bool:
                """Trains one (method, seed) run and attacks its epochs; True when
                ``stop_after`` stops the study."""
                nonlocal done_new, rows
                run_dir = runs.study_run_dir(out, model_name, dataset, method, seed)
                tcfg = scfg.train_config(method, seed)
                epochs = scfg.attack_epochs or tuple(range(1, tcfg.epochs + 1))
                todo = [e for e in epochs if not runs.cell_done(
                    runs.study_attack_dir(out, model_name, dataset, method, e, seed))]
                history = {}
                label = method if seed is None else f"{method} seed {seed}"
                if todo:
                    with phase("train setup"):  # what train() does not mark itself
                        # a resumed run whose base weights or corpus changed is refused
                        ident = run_identity(model_name, corpus=dataset, drawn=corpus)
                        res = train(base, cfg, tok, method, corpus.train, corpus.validation,
                                    run_dir, tcfg, model_name=model_name, progress=progress,
                                    mesh=mesh, identity=ident)
                    history = {h["epoch"]: h["val_loss"] for h in res.history}
                for e in epochs:
                    where = runs.study_attack_dir(out, model_name, dataset, method, e, seed)
                    if e in todo:
                        if stop_after is not None and done_new >= stop_after:
                            return True
                        params, labels = load_checkpoint(run_dir, base, cfg, tok, epoch=e,
                                                         mesh=mesh)
                        # the canaries the run trained on, as its own record holds them
                        can = (Canaries.load(run_dir / runs.CANARIES) if base_canaries
                               else None)
                        attack(params, where, f"{model_name} {label} epoch {e}",
                               labels=labels, canaries=can,
                               references=references_for(method, tcfg, e))
                        runs.mark_cell_done(where, history[e])
                        save_session()
                        done_new += 1
                        if progress:
                            first, m = next(iter(runs.read_cell(where)[0].items()))
                            print(f"[{time.perf_counter() - t_start:.0f}s] {model_name} / "
                                  f"{dataset} / {label} epoch {e}: val ppl "
                                  f"{np.exp(history[e]):.3f}, {first} AUC {m['auc']:.3f}")
                    rows += _rows(model_name, n_params, dataset, method, e, where, base_ppl,
                                  run_dir, delta, seed=seed)
                return False

            for method in scfg.methods:
                for seed in scfg.run_seeds():
                    stopped = train_and_attack(method, seed)
                    if stopped:
                        runs.write_study_results(out, rows)
                        return rows
            runs.write_study_results(out, rows)
    runs.write_study_results(out, rows)
    if is_main_process():
        save_session()  # the report's run time counts this session too, resumed or not
        with phase("report + figures"):
            write_study_report(out, scfg, rows, seconds=time.perf_counter() - t_start,
                               timings=prof.table())
        save_session()
    return rows
