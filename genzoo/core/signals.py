"""Stopping on a signal: SIGINT (Ctrl-C) and SIGTERM (docker, systemd, slurm, Kubernetes) are
requests the training loop honours between two steps, so a checkpoint holds only completed steps;
``Interrupted`` carries what was saved to the CLI's one line; ``die_with_parent`` ties a launched
process to its launcher's life (Linux' parent-death signal).

A leaf: it imports only the standard library.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal. `message` is the one line for the user; `signum` gives the
    exit code (128 + signum: 130 for SIGINT, 143 for SIGTERM); `run` the folder to resume, `step`
    the step of the checkpoint kept there (None: the run has no checkpoint)."""

    def __init__(self, run: Any = None, signum: int = signal.SIGINT, step: int | None = None,
                 message: str | None = None):
        self.run, self.signum, self.step = run, int(signum), step
        if message is None:
            what = signal_name(signum)
            if run is None:
                message = f"stopped by {what}"
            elif step is None:
                message = (f"stopped by {what} before the first checkpoint; run the same command "
                           f"again to start {run} over")
            else:
                message = (f"stopped by {what}; the checkpoint of step {step} is kept "
                           f"(continue with: zoo train --resume {run})")
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _installable(signum: int) -> bool:
    # a signal the process was told to ignore (nohup, `cmd &` in a script) stays ignored
    return signal.getsignal(signum) is not signal.SIG_IGN


class StopRequest:
    """While active (a context manager, main thread only), SIGINT and SIGTERM set ``signum``
    instead of raising; the training loop reads it at the next step boundary, saves and stops.
    A second signal stops at once (``Interrupted`` raised wherever the loop is): what was
    committed before stays, a half-written checkpoint is dropped."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum=signum, message=f"stopped at once by a second "
                                                     f"{signal_name(signum)}")
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if _main_thread():
            for s in STOP_SIGNALS:
                if _installable(s):
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._previous.clear()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum=signum)


@contextlib.contextmanager
def terminate_interrupts() -> Iterator[None]:
    """SIGTERM raises like Ctrl-C does (``Interrupted``) while the block runs, so cleanup code
    (``finally``, a lock's release, a half-made run folder's removal) runs instead of the process
    vanishing. Only where SIGTERM has its default action and in the main thread."""
    term = getattr(signal, "SIGTERM", None)
    if term is None or not _main_thread() or signal.getsignal(term) is not signal.SIG_DFL:
        yield
        return
    old = signal.signal(term, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(term, old)


PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = getattr(signal, "SIGTERM", 15)) -> bool:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux'
    PR_SET_PDEATHSIG): torchrun's workers, and torchrun under ``zoo train --nproc``, then stop
    with their launcher instead of training on in the background. Returns whether it is set
    (False off Linux). A parent that died before the call is not seen by it: check
    ``orphaned()`` after."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def orphaned() -> bool:
    """Whether this process' parent is already gone (it was re-parented to init)."""
    return os.name == "posix" and os.getppid() == 1
