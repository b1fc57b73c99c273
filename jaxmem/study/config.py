"""What a study runs: :class:`StudyConfig`, read from YAML (nested sections or dotted keys).

The options of a study come in sections: the grid and the data at the top (``models``,
``datasets``, ``methods``, ``n_*``, ``seeds``), how each cell trains under ``train:``
(:class:`jaxmem.trainer.TrainConfig`) and how it is attacked under ``audit:``
(:class:`jaxmem.audit.AuditConfig`). :func:`read_options` reads a YAML file and ``key=value``
overrides into dotted keys (``train.epochs``); :meth:`StudyConfig.from_dict` builds the
config from them. Options of older versions (flat ``epochs``, ``max_length``) are refused with
their new names.

Example:
    >>> cfg = StudyConfig.from_dict({"methods": ["lora"], "train": {"epochs": 2}})
    >>> cfg.train.epochs, cfg.train_config("lora").optim.lr
    (2, 0.0001)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from jaxmem.attacks import DEFAULT_ATTACKS, parse_attack
from jaxmem.audit import AuditConfig
from jaxmem.config import (check, check_positive_ints, is_int, is_number, iter_fields,
                           load_yaml, replace_nested)
from jaxmem.canaries import CanaryConfig
from jaxmem.data import SPLITS
from jaxmem.extraction import ExtractionConfig
from jaxmem.trainer import TrainConfig
from jaxmem.tuning import method_config


EXECUTION_FIELDS = ("mesh",)
# The CanaryConfig fields a study's canary_exposure: sets (how exposure is measured, not which
# canaries are trained on), and their study defaults. Exposure costs one scoring pass per
# reference secret (smollm2-135m, 2 shared CPU cores: 1,000 took 115 s per model, 2,000 205 s),
# and a study measures every attacked (method, epoch), so 1,000 (sampled cap log2(1001) = 10
# bits, above the 1-3 bits CPU-scale fine-tunes reach; the skew-normal estimate goes beyond).
EXPOSURE_OPTIONS = ("n_samples", "exact_max", "batch_size", "dtype")
EXPOSURE_DEFAULTS = {"n_samples": 1000}
STUDY_ATTACKS = tuple(a for a in DEFAULT_ATTACKS if a != "lowercase")

# The flat study options of versions before 0.1 -> their homes, named in the error that
# refuses them (a config is not converted).
_MOVED = {
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
    intervals hold the seed variance (:mod:`jaxmem.study.claims`). Without ``seeds`` a cell trains
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
        check(self, "split", lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}")
        check(self, "seeds", lambda v: v is None or (len(v) > 0 and len(set(v)) == len(v) and all(
            is_int(x) and 0 <= x < 2**32 for x in v)),
            "None or a list of distinct integers >= 0, e.g. [0, 1, 2]")
        check(self, "attack_epochs", lambda v: v is None or all(
            is_int(e) and 1 <= e <= self.train.epochs for e in v),
            f"None or epochs between 1 and train.epochs ({self.train.epochs})")
        check(self, "lr", lambda v: isinstance(v, dict) and all(
            is_number(x) and x >= 0 for x in v.values()), "a mapping of method -> learning rate")
        for m in self.methods:
            method_config(m)  # fail now, not after hours, on an unknown method
        for a in self.audit.attacks:
            parse_attack(a)
        if self.extraction is not None:
            self.extraction_config()  # an unknown or bad field fails now
        self.exposure_options()  # so does a bad canary_exposure

    def extraction_config(self):
        """``extraction`` as a :class:`jaxmem.extraction.ExtractionConfig` (None when off)."""
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
        opts = {**EXPOSURE_DEFAULTS, **(opts or {})}
        CanaryConfig.from_spec(self.train.canaries, **opts)  # a bad value fails now
        return opts

    def to_dict(self) -> dict:
        # train by its own to_dict: train.dp and train.canaries in their string spellings
        return json.loads(json.dumps({**dataclasses.asdict(self), "train": self.train.to_dict()}))

    def identity(self) -> dict:
        """What makes two configs the same study: everything but how it runs (``mesh``)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        """A config from nested mappings (``{"train": {"epochs": 3}}``) and/or dotted keys
        (``{"train.epochs": 3}``).

        Raises:
          ValueError: an unknown option; the flat options of older versions (``epochs``,
            ``block_size``, ...) and ``max_length`` are named with their new homes.
        """
        dotted = dotted_options(d)
        _refuse_moved(dotted)
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
    d = dotted_options(d)
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


def dotted_options(d: dict, prefix: str = "") -> dict:
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
            out.update(dotted_options(v, f"{prefix}{k}."))
        elif prefix + k not in SECTIONS:  # an empty section (None): its defaults
            out[prefix + k] = v
    return out


def _example(section: str) -> str:
    return {"train": "epochs: 3", "audit": "n_boot: 500", "train.optim": "lr: 1.0e-3",
            "frontier": "delta: 1.0e-5"}[section]


def _refuse_moved(dotted: dict) -> None:
    """Refuses, in one error, the options of older versions: flat ``epochs``, ``block_size``,
    ... (now under ``train:`` / ``audit:``) and ``max_length`` (now ``block_size``), each
    named with its new home."""
    moved = [f"{k} -> {' and '.join(_MOVED[k])}" for k in dotted if k in _MOVED]
    moved += [f"{k} -> " + (k.rpartition(".")[0] + ".block_size" if "." in k
                            else " and ".join(_MOVED["block_size"]))
              for k in dotted if k.rpartition(".")[2] == "max_length"]
    if moved:
        raise ValueError(
            "These study options moved in jaxmem 0.1: " + ", ".join(moved) + ". Write them "
            "nested (train: {epochs: 3}) or dotted (--set train.epochs=3); see "
            "experiments/demo.yaml.")
