"""The study: models x datasets x methods x epochs x attacks, resumable, into one folder, and
what is read out of it.

* :mod:`jaxmem.study.config`: :class:`StudyConfig`, from YAML (sections ``train:``, ``audit:``)
* :mod:`jaxmem.study.grid`: :func:`run_study`, the loop over the cells
* :mod:`jaxmem.study.folders`: where each cell lives in the study folder, which are done
* :mod:`jaxmem.study.rows`: the result rows, re-read from each cell's files
* :mod:`jaxmem.study.utility`: comparable utility (perplexity against the base model's)
* :mod:`jaxmem.study.tables`, :mod:`jaxmem.study.report`: ``report.md`` and its figures
* :mod:`jaxmem.study.claims`, :mod:`jaxmem.study.claim4`, :mod:`jaxmem.study.claim5`: the
  paper's claims judged on the per-example scores, once, into records
  (:mod:`jaxmem.study.verdicts`, the study's ``claims.json``) that
  :mod:`jaxmem.study.claim_text` renders for the report
* :mod:`jaxmem.study.frontier`: one study per DP epsilon, and the privacy-utility frontier

Example:
    >>> from jaxmem.study import StudyConfig
    >>> cfg = StudyConfig.from_dict({"models": ["smollm2-135m"], "methods": ["full", "lora:r=8"],
    ...                              "lr": {"lora": 1e-3}, "train": {"epochs": 2},
    ...                              "seeds": [0, 1]})
    >>> cfg.methods, cfg.run_seeds(), cfg.train_config("lora:r=8", seed=1).optim.lr
    (('full', 'lora:r=8'), (0, 1), 0.001)

    ``run_study(cfg, "results/demo")`` then trains and attacks every cell into
    ``results/demo/`` (the README's demo: about 15 minutes on 2 CPU cores), as
    ``jaxmem study experiments/demo.yaml --out-dir results/demo`` does.
"""

from jaxmem.study.config import StudyConfig
from jaxmem.study.grid import run_study

__all__ = ["StudyConfig", "run_study"]
