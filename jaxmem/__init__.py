"""jaxmem: how much does a fine-tuning method make a language model memorize?

The public API, imported lazily (``import jaxmem`` does not import JAX):

* :func:`load_model` - a base model: ``(params, config, tokenizer)``
* :func:`tiny_model` - a tiny random model with a character tokenizer, for a first try in seconds
* :func:`load_corpus` - fine-tuning, validation, member and non-member texts
* :func:`score_texts` - per-token statistics (:class:`TokenStats`) of texts under a model
* :func:`train` (with :class:`TrainConfig`) - fine-tune with one method, resumably
* :func:`load_checkpoint` - base params + a run's checkpoint
* :func:`run_attacks` (with :class:`AuditConfig`) - membership inference on a model
* :func:`run_study` (with :class:`StudyConfig`) - the whole grid, resumable

Example:
    >>> import jaxmem
    >>> params, cfg, tok = jaxmem.tiny_model()  # jaxmem.load_model("smollm2-135m"): the real one
    >>> stats = jaxmem.score_texts(params, cfg, tok, ["The cat sat on the mat."])
    >>> stats.nll().round(2)  # nats per token: about log(99), a random model's 99 characters
    array([4.59])
"""

import importlib

__version__ = "0.1.0"

_API = {
    "tiny_model": ("jaxmem.models.tiny", "tiny_model"),
    "load_corpus": ("jaxmem.data", "load_corpus"),
    "score_texts": ("jaxmem.scoring", "score_texts"),
    "TokenStats": ("jaxmem.scoring", "TokenStats"),
    "train": ("jaxmem.trainer", "train"),
    "TrainConfig": ("jaxmem.trainer", "TrainConfig"),
    "load_checkpoint": ("jaxmem.trainer", "load_checkpoint"),
    "run_attacks": ("jaxmem.audit", "run_attacks_on"),
    "AuditConfig": ("jaxmem.audit", "AuditConfig"),
    "run_study": ("jaxmem.study", "run_study"),
    "StudyConfig": ("jaxmem.study", "StudyConfig"),
}
__all__ = sorted([*_API, "load_model"])


def load_model(*args, **kwargs):
    """Loads a base model (:func:`jaxmem.models.load_model`, same arguments).

    Args:
      name_or_path: an alias (``"smollm2-135m"``, the embedded default, or ``"gpt2"``...), a
        Hugging Face directory, a ``.gguf`` file or a hub id.

    Returns:
      ``LoadedModel(params, config, tokenizer)``; params are float32 numpy arrays.

    Example:
        >>> import jaxmem
        >>> params, cfg, tok = jaxmem.load_model("smollm2-135m")  # embedded: offline, ~3 s
        >>> cfg.arch, cfg.n_layers, cfg.d_model, cfg.vocab_size
        ('llama', 30, 576, 49152)
    """
    from jaxmem.models import load_model as load

    return load(*args, **kwargs)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'jaxmem' has no attribute {name!r}")
    module, attr = _API[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
