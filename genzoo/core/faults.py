"""The kill points of the crash tests: ``GENZOO_FAULT=POINT[@STEP]`` SIGKILLs the process there.

Call sites name the module (``faults.fault("save:staged", step)``), so an in-process test can
replace ``genzoo.core.faults.fault`` with a function that raises instead."""
from __future__ import annotations

import os
import signal


def fault(point: str, step: int | None = None) -> None:
    """Test hook: ``GENZOO_FAULT=POINT`` or ``POINT@STEP`` SIGKILLs this process at that point
    (the kill tests use it to cut a save between any two files). Unset in normal use."""
    spec = os.environ.get("GENZOO_FAULT")
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name != point:
        return
    if at and step is not None and at.strip() != str(step):
        return
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
