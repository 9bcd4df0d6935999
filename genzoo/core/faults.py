"""The kill points of the crash tests: ``GENZOO_FAULT=POINT[@STEP][:SIGNAL]`` sends SIGNAL
(SIGKILL unless named: ``step@8:SIGINT``, ``step@3:SIGTERM``) to the process there.

Call sites name the module (``faults.fault("save:staged", step)``), so an in-process test can
replace ``genzoo.core.faults.fault`` with a function that raises instead."""
from __future__ import annotations

import os
import signal


def fault(point: str, step: int | None = None) -> None:
    """Test hook: ``GENZOO_FAULT=POINT`` or ``POINT@STEP`` SIGKILLs this process at that point
    (the kill tests use it to cut a save between any two files); ``...:SIGINT`` or
    ``...:SIGTERM`` sends that signal instead (the stop tests: a signal at a known step). Unset
    in normal use."""
    spec = os.environ.get("GENZOO_FAULT")
    if not spec:
        return
    spec, _, sig = spec.partition(":SIG")
    name, _, at = spec.partition("@")
    if name != point:
        return
    if at and step is not None and at.strip() != str(step):
        return
    signum = getattr(signal, f"SIG{sig.strip()}", None) if sig else None
    if signum is None:
        signum = getattr(signal, "SIGKILL", signal.SIGTERM)
    os.kill(os.getpid(), signum)
