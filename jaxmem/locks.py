"""One writer per folder: an advisory lock on a run, study, attack or frontier folder (or on a
``score --out`` file), held while the work runs.

The lock is ``fcntl.flock`` on ``.jaxmem.lock`` inside the folder (``.<name>.jaxmem.lock``
beside a file), which records who holds it: pid, host, command and start time. A second
writer is refused at once with :class:`FolderLocked`, naming the folder and the holder. The
kernel drops a flock when its process dies, so the file a killed process leaves behind is
stale and the next writer takes it over; a clean exit removes it (and the folder, if the lock
made it and nothing else was written there).

One process may take a lock it already holds (a count, not a second flock, which would block
itself), and locks nest by folder: a study holds ``<study>/.jaxmem.lock`` while each run it
trains holds the run folder's own. With several processes
(:func:`jaxmem.sharding.is_main_process`) process 0 holds the locks, and the others write
nothing of their own.

Library entry points take the lock themselves (:func:`locked` on :func:`jaxmem.trainer.train`,
:func:`jaxmem.study.run_study`, ...), so Python callers get it too; the CLI takes it earlier,
before any model is loaded (:func:`hold`).

Example:
    >>> import subprocess
    >>> take = "from jaxmem import locks; locks.acquire('runs/lora', 'run')"
    >>> with hold("runs/lora", "run"):
    ...     print(os.listdir("runs/lora"))
    ...     refused = subprocess.run([sys.executable, "-c", take], capture_output=True, text=True)
    ['.jaxmem.lock']
    >>> print(refused.stderr.splitlines()[-1])  # another process fails at once
    jaxmem.locks.FolderLocked: the run folder runs/lora is in use by another jaxmem process
    (pid ... on host ..., since ...); two writers would overwrite each other's files. ...
    >>> os.path.exists("runs/lora")  # the lock made the folder and nothing else came: removed
    False
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

LOCK = ".jaxmem.lock"


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock (or this one lost it)."""


@dataclasses.dataclass
class _Held:
    fd: int
    folder: Path
    count: int
    made: list[Path]  # folders the lock made, removed again if nothing else is written there


_HELD: dict[str, _Held] = {}  # lock file (real path) -> this process's hold


def lock_path(target: str | os.PathLike, *, file: bool = False) -> Path:
    """The lock file of a folder (``<folder>/.jaxmem.lock``) or, with ``file``, of a file
    output (``<dir>/.<name>.jaxmem.lock``)."""
    target = Path(target)
    return target.with_name(f".{target.name}{LOCK}") if file else target / LOCK


def _main() -> bool:
    from jaxmem.sharding import is_main_process

    return is_main_process()


def _make_dirs(folder: Path) -> list[Path]:
    """Makes ``folder`` and its missing parents; returns the ones made, deepest first."""
    missing = []
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first; stops at the first that holds something
        try:
            d.rmdir()
        except OSError:
            return


def _same_file(path: Path, fd: int) -> bool:
    try:
        st, mine = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}


def holder_text(info: dict) -> str:
    """``pid 123 on host h, since 2026-12-07 10:00:00: jaxmem train ...`` (what is known)."""
    if not info:
        return "a process that left no record"
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    if info.get("since"):
        text += f", since {info['since']}"
    return text + (f": {info['command']}" if info.get("command") else "")


def acquire(target: str | os.PathLike, what: str = "folder", *, file: bool = False) -> Path | None:
    """Takes the lock of ``target`` for this process (see the module docstring).

    Args:
      target: the folder (made if missing), or with ``file`` the output file.
      what: the folder's kind, for the message ("run", "study", "attack", "output").
      file: lock a file output instead of a folder.

    Returns:
      The lock file; None on a process other than process 0 (which takes no lock).

    Raises:
      FolderLocked: another process holds it.
      OSError: the folder cannot be made or written into (named, with the fix).
    """
    if not _main():
        return None
    path = lock_path(target, file=file)
    key = os.path.realpath(path)
    if not file and Path(target).exists() and not Path(target).is_dir():
        raise NotADirectoryError(f"{target} is a file; a {what} needs a folder.")
    if key in _HELD:  # this process already holds it: a study re-entering its folder
        _HELD[key].count += 1
        return path
    try:
        made = _make_dirs(path.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot create the {what} folder {path.parent} "
                      f"({e.strerror}); choose a folder you can write to") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            _remove_empty(made)
            raise OSError(e.errno, f"cannot write in {path.parent} ({e.strerror}); choose a "
                          f"{what} folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _read(fd)
            os.close(fd)
            _remove_empty(made)
            where = (f"{target}" if file else f"the folder {target}" if what == "folder"
                     else f"the {what} folder {target}")
            raise FolderLocked(
                f"{where} is in use by another jaxmem process ({holder_text(holder)}); two "
                "writers would overwrite each other's files. Wait for it to finish or stop it "
                "(it resumes later), or use another folder.") from None
        if _same_file(path, fd):  # not a file its holder removed between our open and flock
            break
        os.close(fd)
    # a record left here is a killed process's (the kernel released its flock): taken over
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())
    _HELD[key] = _Held(fd, Path(target), 1, made)
    return path


def is_stale(path: str | os.PathLike) -> bool:
    """Whether a lock file is held by no process (left by a killed one): safe to remove."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.path.realpath(path) not in _HELD
    except OSError:
        return False
    finally:
        os.close(fd)


def release(target: str | os.PathLike, *, file: bool = False) -> None:
    """Gives back a lock taken by :func:`acquire` (the last of nested holds removes the lock
    file, and the folders the lock made if nothing else was written in them)."""
    path = lock_path(target, file=file)
    held = _HELD.get(os.path.realpath(path))
    if held is None:
        return
    held.count -= 1
    if held.count:
        return
    del _HELD[os.path.realpath(path)]
    if _same_file(path, held.fd):  # removed while still held: the next writer finds none
        with contextlib.suppress(OSError):
            path.unlink()
    os.close(held.fd)
    _remove_empty(held.made)


@contextlib.contextmanager
def hold(target: str | os.PathLike | None, what: str = "folder", *,
         file: bool = False) -> Iterator[None]:
    """Holds ``target``'s lock for the block (:func:`acquire`, :func:`release`); None: no lock."""
    if target is None:
        yield
        return
    acquire(target, what, file=file)
    try:
        yield
    finally:
        release(target, file=file)


def check(target: str | os.PathLike, *, file: bool = False) -> None:
    """Stops work whose folder was removed or replaced under it (its lock file is gone or is
    another file): a long job calls it between steps, so it never writes into a folder that
    someone deleted and that the next write would make again.

    Raises:
      FolderLocked: the lock file this process holds is no longer in place.
    """
    path = lock_path(target, file=file)
    held = _HELD.get(os.path.realpath(path))
    if held is not None and not _same_file(path, held.fd):
        raise FolderLocked(
            f"{target} was removed or replaced while this process was writing it (its "
            f"{LOCK} is gone); stopped rather than write into a new folder. Rerun the same "
            "command to start again (or resume, if the folder is back).")


def locked(arg: str, what: str, *, file: bool = False) -> Callable:
    """A decorator: the function holds the lock of its argument ``arg`` (a folder, or with
    ``file`` an output file; None: no lock) while it runs.

    Example:
        >>> @locked("run_dir", "run")
        ... def train(texts, run_dir):
        ...     return os.listdir(run_dir)  # the lock is held while the body runs
        >>> train(["a text"], "runs/lora")
        ['.jaxmem.lock']
    """
    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            target = bound.arguments.get(arg, sig.parameters[arg].default)
            if target is inspect.Parameter.empty:
                target = None
            with hold(target, what, file=file):
                return fn(*args, **kwargs)

        return run

    return wrap


__all__ = ["FolderLocked", "LOCK", "acquire", "check", "hold", "holder_text", "is_stale",
           "lock_path", "locked", "release"]
