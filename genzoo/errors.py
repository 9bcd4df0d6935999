"""Errors a user can cause. The CLI prints them as one line and exits non-zero.

This module imports nothing heavy, so the CLI can catch these without importing torch.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class GenzooError(Exception):
    """Base class: a mistake in input, not a bug. Printed as one line, no traceback."""


class UnknownNameError(GenzooError, KeyError):
    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = ""):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        shown = ", ".join(valid[:30]) + (" ..." if len(valid) > 30 else "")
        msg += f" Valid: {shown or '(none)'}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)
        self.name, self.valid = name, valid

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ConfigError(GenzooError):
    pass


class RegistryError(GenzooError):
    pass


class CheckpointError(GenzooError):
    pass


class DataError(GenzooError):
    pass


class CredentialsError(DataError):
    pass


class TrainingDiverged(GenzooError):
    pass
