"""The ``jaxmem`` command: a thin layer over the library (``jaxmem --help`` lists the
subcommands, ``jaxmem COMMAND --help`` their options).

* :mod:`jaxmem.cli.parser`: the parser, built without importing JAX (``--help`` is instant);
* :func:`main` (here): parse, start the devices, take the output's lock, run the subcommand,
  and turn any failure into one ``error:`` line, any Python warning into one ``warning:`` line,
  and Ctrl-C into an exit within a second or two with the resume hint;
* one module per group of subcommands (:mod:`~jaxmem.cli.score`: score, info;
  :mod:`~jaxmem.cli.train`: train, export; :mod:`~jaxmem.cli.attack`;
  :mod:`~jaxmem.cli.measure`: extract, canaries; :mod:`~jaxmem.cli.grid`: study, frontier, plan),
  imported only when its command runs; :mod:`~jaxmem.cli.common` what they share.

Example:
    >>> from jaxmem.cli import main
    >>> main(["info", "smollm2-135m", "--method", "lora:r=16"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import threading
import time
import warnings

from jaxmem.cli.parser import build_parser, given

# command -> (module of jaxmem.cli, function): imported when the command runs
COMMANDS = {"info": ("score", "cmd_info"), "score": ("score", "cmd_score"),
            "train": ("train", "cmd_train"), "export": ("train", "cmd_export"),
            "attack": ("attack", "cmd_attack"), "extract": ("measure", "cmd_extract"),
            "canaries": ("measure", "cmd_canaries"), "study": ("grid", "cmd_study"),
            "frontier": ("grid", "cmd_frontier"), "plan": ("grid", "cmd_plan")}


def command(name: str):
    """The function that runs subcommand ``name`` (its module imported now)."""
    module, func = COMMANDS[name]
    return getattr(importlib.import_module(f"jaxmem.cli.{module}"), func)


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
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
                or "No space left on device" in str(e) or "Disk quota exceeded" in str(e)):
            return e
        e = e.__cause__ or e.__context__
    return None


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # like Ctrl-C: locks released, the work resumes on a rerun


INTERRUPTED = "interrupted; a run or study resumes where it stopped"
# After Ctrl-C the main thread unwinds (locks released, lock files removed) as soon as Python
# runs again; a jitted step or scoring batch in flight holds it until the call returns (seconds
# for a 135M model on a CPU). Past this grace the process exits at once: every file jaxmem
# writes is whole or absent, a checkpoint without its marker is removed on resume, and the
# kernel drops the flocks of a dead process.
INTERRUPT_GRACE_S = 1.0


_SHOWN: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for the command: one ``warning: <message>`` line, without the
    source path and code line a library user gets, and each message once (:func:`main` sets
    it, then restores it)."""
    text = " ".join(str(message).split())
    if text in _SHOWN:  # a study meets the same truncation in every cell: said once
        return
    _SHOWN.add(text)
    try:  # through tqdm when it is loaded, so that a progress bar is not cut in two
        from tqdm import tqdm
        tqdm.write(f"warning: {text}", file=sys.stderr)
    except Exception:
        print(f"warning: {text}", file=sys.stderr)


def _exit_now(code: int) -> None:
    """Leaves the process at once (no interpreter teardown: freeing a model's arrays and joining
    XLA's and orbax's threads took seconds), stdout and stderr flushed first."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    os._exit(code)


def _watch_interrupts(state: dict) -> None:
    """Makes Ctrl-C (and SIGTERM) end the command within :data:`INTERRUPT_GRACE_S` even while the
    main thread waits in a long XLA call, where Python's own handler cannot run.

    The C-level signal handler writes the signal's number to a wakeup fd at once; a daemon
    thread reading it gives the main thread the grace to unwind (and print the hint itself),
    then prints the hint and exits. A second Ctrl-C exits at once."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch():
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data or not set(data) & {signal.SIGINT, signal.SIGTERM}:
                continue
            deadline = time.monotonic() + INTERRUPT_GRACE_S
            while (left := deadline - time.monotonic()) > 0:
                if _readable(r, left) and os.read(r, 64):
                    break  # a second Ctrl-C: now
            if not state.get("hinted"):
                state["hinted"] = True
                print(INTERRUPTED, file=sys.stderr)
            _exit_now(130)

    threading.Thread(target=watch, name="jaxmem-interrupt", daemon=True).start()


def _readable(fd: int, timeout: float) -> bool:
    import select
    return bool(select.select([fd], [], [], max(timeout, 0.0))[0])


def _restart_with_huge_pages() -> None:
    """Re-executes this command once with glibc's ``glibc.malloc.hugetlb=1`` tunable.

    XLA's CPU backend allocates each step's temporaries with malloc, which maps large blocks
    fresh from the kernel on every call: a full fine-tuning step of the 135M model took 430,000
    page faults (1.7 GB zero-filled) per step. With the tunable, malloc asks for transparent
    huge pages and the faults drop to about 1,000 (measured: 5.5 s -> 5.1 s per step). glibc
    reads tunables only at process start, hence the restart; ``JAXMEM_HUGEPAGES=0`` (or a
    GLIBC_TUNABLES of your own, or a kernel with huge pages off) skips it. :func:`main` calls it
    once the command line parsed, so ``--help`` and usage errors answer without it.
    """
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
    console = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)  # --help, --version and usage errors exit here
    if console:  # the console command (not a call from Python): restart once, see there
        _restart_with_huge_pages()
    args.given = given(argv)
    debug = args.debug or os.environ.get("JAXMEM_DEBUG", "") not in ("", "0")
    on_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    interrupt = {"hinted": False}
    if console and on_main_thread:
        _watch_interrupts(interrupt)
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning  # the command's warnings: one line each
    try:
        from jaxmem import compile_cache
        from jaxmem.cli import common

        compile_cache.enable()  # before the first compile; JAXMEM_COMPILE_CACHE=off disables
        if hasattr(args, "mesh"):  # the commands that shard
            common.setup_devices(args)
        run = command(args.command)
        with common.output_lock(args):
            return run(args)
    except KeyboardInterrupt:
        if not interrupt["hinted"]:
            interrupt["hinted"] = True
            print(INTERRUPTED, file=sys.stderr)
        if console:  # the locks are released by now; skip the interpreter's slow teardown
            _exit_now(130)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old_show
        if on_main_thread:
            signal.signal(signal.SIGTERM,
                          old_handler if old_handler is not None else signal.SIG_DFL)


__all__ = ["COMMANDS", "command", "main"]
