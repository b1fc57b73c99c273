"""A run's content identity: digests of what defines it, checked before it is resumed or followed.

A run is what it trained on, not where its files were. ``run.json`` records under ``identity``
(:data:`KEY`)::

    "model":     {"name", "path", "root", "local", "files": {name: digest}}   the base weights
    "tokenizer": the same, "name" as --tokenizer gave it (None: the model's own), or
                 {"in": "gguf"} (the GGUF file holds it)
    "corpus":    the same, "name" absolute; a local corpus only
    "texts":     {"train", "validation", "members", "nonmembers": sha256}   the texts drawn

``path`` is absolute, resolved when the run was trained: ``jaxmem attack / extract / canaries
--run-dir`` use it (``local``: the user named a path, not an alias or hub id), never the current
folder's ``./model``. File names are relative to ``root`` (the folder holding them), so an
identical copy elsewhere compares equal. A corpus is judged by the texts drawn (every source,
hub datasets included): its files' digests name the file that changed when those differ. A
tokenizer given as a hub id is recorded by name.

A file's digest (:func:`file_digest`) is a sha256 of the whole file up to :data:`FULL_HASH`
bytes; above that (model weights: a 7B model's 13 GB) of its size and :data:`N_BLOCKS` evenly
spaced blocks of :data:`BLOCK` bytes, first, middle and last included, so it costs about 16 MiB
of reads per file whatever its size. A sampled digest catches a replaced or re-trained file (its
bytes differ everywhere), not a single edited byte between blocks.

Example:
    >>> from jaxmem.data import load_corpus
    >>> notes = Path("notes.txt")
    >>> _ = notes.write_text("".join(f"Note {i}: the river rose.\\n\\n" for i in range(96)))
    >>> ident = run_identity("smollm2-135m", corpus="notes.txt", drawn=load_corpus("notes.txt"))
    >>> ident["model"]["path"]  # absolute: the embedded GGUF file
    '/.../SmolLM2-135M-Instruct.Q4_1.gguf'
    >>> sorted(ident["corpus"]["files"]), sorted(ident["texts"])
    (['notes.txt'], ['members', 'nonmembers', 'train', 'validation'])
    >>> _ = notes.write_text("".join(f"Note {i}: the river fell.\\n\\n" for i in range(96)))
    >>> now = run_identity("smollm2-135m", corpus="notes.txt", drawn=load_corpus("notes.txt"))
    >>> difference(ident, now)
    'the corpus file /.../notes.txt changed since the run was trained'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from jaxmem import runs
from jaxmem.checkpointing import CheckpointError
from jaxmem.data.files import LOCAL_EXTS, list_files
from jaxmem.data.sources import ALIASES as CORPUS_ALIASES
from jaxmem.io import read_json
from jaxmem.models.checkpoints import ALIASES as MODEL_ALIASES
from jaxmem.models.checkpoints import EMBEDDED, download_from_hub

KEY = "identity"  # run.json's key
FULL_HASH = 64 << 20  # files up to this size are hashed whole
BLOCK = 64 << 10
N_BLOCKS = 257  # odd, so the middle block is always among them
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "spiece.model", "tokenizer.tiktoken", "merges.txt", "vocab.txt",
                   "special_tokens_map.json", "added_tokens.json")
TEXT_SETS = ("train", "validation", "members", "nonmembers")


# ----------------------------------------------------------------------------- digests

def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file: whole up to :data:`FULL_HASH` bytes, else of its size and
    :data:`N_BLOCKS` evenly spaced :data:`BLOCK`-byte blocks (see the module's docstring)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
        for i in range(N_BLOCKS):
            f.seek(i * (size - BLOCK) // (N_BLOCKS - 1))
            h.update(f.read(BLOCK))
    return "sampled:" + h.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts in order (each length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _absolute(name: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(name)))


# ----------------------------------------------------------------------------- what is read

def locate_model(name: str) -> dict:
    """The base weights' files, resolved as :func:`jaxmem.models.load_model` resolves ``name``
    (embedded, ``.gguf``, alias, local folder, hub id: its cached snapshot).

    Raises:
      FileNotFoundError: a local model that does not exist.
      ValueError: a name that is no model (as ``load_model`` refuses it).
    """
    name = str(name)
    if name in EMBEDDED or name.endswith(".gguf"):
        local = name not in EMBEDDED
        path = _absolute(name) if local else Path(EMBEDDED[name]())
        if not path.is_file():
            raise FileNotFoundError(f"No such model file or directory: {path}")
        return _part(name, path, path.parent, [path], local)
    path = _absolute(name)
    local = name not in MODEL_ALIASES and path.exists()
    if local and not path.is_dir():
        raise ValueError(f"{path} is a file but not a .gguf; pass a HF model directory or a "
                         ".gguf.")
    if not local:
        if name not in MODEL_ALIASES and (name.startswith((".", "/", "~"))
                                          or name.count("/") > 1
                                          or name.endswith(".safetensors")):
            raise FileNotFoundError(f"No such model file or directory: {path}")
        if name not in MODEL_ALIASES and name.count("/") != 1:
            raise ValueError(f"Unknown model {name!r}: not an alias, not an existing path, and "
                             "not a hub id of the form 'org/name'.")
        # the files load_model reads (downloaded once, or the cached copy offline)
        path = Path(download_from_hub(MODEL_ALIASES.get(name, name)))
    files = [p for p in path.iterdir() if p.is_file() and (
        p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"
        or p.name.endswith(".safetensors.index.json"))]
    return _part(name, path, path, files, local)


def _part(name: str, path: Path, root: Path, files: Sequence[Path], local: bool) -> dict:
    """One part of an identity: ``path`` absolute, ``files`` digested by name under ``root``."""
    return {"name": name, "path": str(path), "root": str(root), "local": local,
            "files": {str(f.relative_to(root)): file_digest(f) for f in sorted(files)}}


def locate_tokenizer(tokenizer: str | None, model: dict) -> dict:
    """The tokenizer's files: ``tokenizer`` (a folder or hub id, as ``--tokenizer`` takes it) or
    the model's own (``model`` from :func:`locate_model`; a GGUF file holds its own). A hub
    id is recorded by name alone (the hub keeps its files)."""
    if tokenizer is None and model["path"].endswith(".gguf"):
        return {"in": "gguf"}  # the weights' digest covers it
    if tokenizer is None:
        path, local = Path(model["path"]), model["local"]
    else:
        path, local = _absolute(tokenizer), True
        if not path.is_dir():
            return {"name": tokenizer, "path": None, "local": False, "files": {}}
    files = [path / n for n in TOKENIZER_NAMES if (path / n).is_file()]
    return _part(tokenizer, path, path, files, local)


def locate_corpus(name: str) -> dict | None:
    """A local corpus's files (a file, a folder, or a ``wikitext:`` / ``webnlg:`` / ``xsum:``
    path) with ``name`` made absolute; None for a named corpus (embedded, hub)."""
    key = str(name).strip()
    prefix, sep, rest = key.partition(":")
    if sep and CORPUS_ALIASES.get(prefix.lower()) in ("wikitext", "webnlg", "xsum") and rest:
        head, path = prefix + ":", _absolute(rest)
    elif key.lower() in CORPUS_ALIASES or not Path(key).expanduser().exists():
        return None
    else:
        head, path = "", _absolute(key)
    if not path.exists():
        raise FileNotFoundError(f"No such corpus file or folder: {path}")
    return _part(head + str(path), path, path if path.is_dir() else path.parent,
                 list_files(path, (*LOCAL_EXTS, ".raw")), True)


def run_identity(model: str, *, tokenizer: str | None = None, corpus: str | None = None,
                 drawn=None) -> dict:
    """What defines a run, for ``run.json``: base weights, tokenizer, corpus files, texts drawn.

    Args:
      model: the base model as given to :func:`jaxmem.models.load_model`.
      tokenizer: ``--tokenizer`` (None: the model's own).
      corpus: the corpus as given to :func:`jaxmem.data.load_corpus`.
      drawn: the :class:`jaxmem.data.Corpus` drawn from it (its four sets' digests).
    """
    m = locate_model(model)
    out = {"model": m, "tokenizer": locate_tokenizer(tokenizer, m)}
    c = locate_corpus(corpus) if corpus is not None else None
    if c is not None:
        out["corpus"] = c
    if drawn is not None:
        out["texts"] = {k: texts_digest(getattr(drawn, k)) for k in TEXT_SETS}
    return out


# ----------------------------------------------------------------------------- comparing

def _diff_files(what: str, old: dict, new: dict) -> str | None:
    """How a part's files differ, naming the first file that does (None: identical)."""
    of, nf = old.get("files") or {}, new.get("files") or {}
    for name in sorted(set(of) | set(nf)):
        if of.get(name) == nf.get(name):
            continue
        here = str(Path(new["root"], name)) if new.get("root") else name
        there = str(Path(old["root"], name)) if old.get("root") else name
        if name not in nf:
            return f"the {what} file {here} is missing (the run was trained with {there})"
        if name not in of:
            return f"the {what} file {here} is new (the run was trained without it)"
        if here == there:
            return f"the {what} file {here} changed since the run was trained"
        return f"the {what} file {here} differs from {there}, which the run was trained with"
    return None


def difference(old: dict, new: dict,
               parts: Sequence[str] = ("model", "tokenizer", "texts")) -> str | None:
    """The first way ``new`` (:func:`run_identity`) differs from the recorded ``old``, in words
    naming the file; None when they agree. A part either side lacks is not compared (a run
    recorded before it was).

    The corpus is judged by the texts drawn: a corpus file edited where no drawn text comes
    from is the same run. When they differ, the corpus file that changed is named, if one did;
    else "the texts drawn differ" (a hub dataset, or how jaxmem draws them, changed).
    """
    names = {"model": "base weights", "tokenizer": "tokenizer", "corpus": "corpus"}
    for part in parts:
        o, n = old.get(part), new.get(part)
        if o is None or n is None:
            continue
        if part == "texts":
            differ = [k for k in TEXT_SETS if k in o and k in n and o[k] != n[k]]
            if not differ:
                continue
            if old.get("corpus") and new.get("corpus"):
                found = _diff_files("corpus", old["corpus"], new["corpus"])
                if found:
                    return found
            return (f"the texts drawn differ from those the run was trained on "
                    f"({', '.join(differ)}): the corpus or how it is drawn changed")
        if "in" not in o and "in" not in n:
            found = _diff_files(names[part], o, n)
            if found:
                return found
    return None


RESUME_FIX = ("Restore it, or train into a new run folder (another --run-dir; a study: another "
              "--out-dir), or pass --overwrite to retrain this run from scratch.")
FOLLOW_FIX = ("Restore it (the run's adapter and members hold only with the files it was "
              "trained on), or train a new run on the current files.")


def stale_run(run_dir: str | os.PathLike, spec: dict, *, overwrite: bool) -> bool:
    """Before a run folder is resumed: whether its recorded identity differs from ``spec``'s.

    Compared only where the spec names the same model and data (another name or size is
    :func:`jaxmem.runs.claim_dir`'s plain difference); a run recorded before identities were
    kept resumes unchecked.

    Returns:
      True when it differs and ``overwrite`` (the caller retrains from scratch).

    Raises:
      CheckpointError: it differs and ``overwrite`` is False; naming the file and the fix.
    """
    path = Path(run_dir) / runs.RUN_SPEC
    new = spec.get(KEY)
    if new is None or not path.exists():
        return False
    old_spec = read_json(path)
    old = old_spec.get(KEY)
    if old is None:
        return False
    parts = []
    if old_spec.get("model") == spec.get("model"):
        parts += ["model", "tokenizer"]
    if all(old_spec.get(k) == spec.get(k) for k in ("data", "n_train", "n_validation")):
        parts += ["texts"]
    found = difference(old, new, parts)
    if found is None:
        return False
    if overwrite:
        return True
    raise CheckpointError(f"{run_dir} was trained on other content: {found}. {RESUME_FIX}")


def verify_run(run_dir: str | os.PathLike, old: dict, *, model: str,
               tokenizer: str | None = None, corpus: str | None = None) -> None:
    """``--run-dir`` (attack, extract, canaries): the base weights and tokenizer now at the given
    places must be those the run recorded (``old``), and ``corpus`` (the recorded one) must
    still exist; the texts drawn from it are :func:`verify_texts`'s.

    Raises:
      FileNotFoundError: a recorded file or folder is gone (naming its absolute path).
      CheckpointError: one differs (naming the file).
    """
    try:
        m = locate_model(model)
        new = {"model": m, "tokenizer": locate_tokenizer(tokenizer, m)}
        if corpus is not None and old.get("corpus") and not Path(old["corpus"]["path"]).exists():
            raise FileNotFoundError(f"No such corpus file or folder: {old['corpus']['path']}")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{run_dir} was trained on files that are gone: {e}. "
                                f"{FOLLOW_FIX}") from None
    found = difference(old, new, ("model", "tokenizer"))
    if found:
        raise CheckpointError(f"{run_dir} was trained on other content: {found}. {FOLLOW_FIX}")


def verify_texts(run_dir: str | os.PathLike, old: dict, drawn, corpus: str | None = None
                 ) -> None:
    """``--run-dir``: the texts drawn now (a :class:`jaxmem.data.Corpus`, from ``corpus``) must
    be the run's.

    Raises:
      CheckpointError: naming the corpus file that changed, else which sets differ.
    """
    new = {"texts": {k: texts_digest(getattr(drawn, k)) for k in TEXT_SETS}}
    if corpus is not None and old.get("corpus") and difference(old, new, ("texts",)):
        new["corpus"] = locate_corpus(corpus)  # only now: to name the file that changed
    found = difference(old, new, ("texts",))
    if found:
        raise CheckpointError(f"{run_dir} was trained on other content: {found}. {FOLLOW_FIX}")


__all__ = ["KEY", "difference", "file_digest", "locate_corpus", "locate_model",
           "locate_tokenizer", "run_identity", "stale_run", "texts_digest", "verify_run",
           "verify_texts"]
