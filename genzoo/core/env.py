"""genzoo's environment variables, read through small typed readers.

Each reader is called where its variable is used (never at import, so ``zoo --help`` and
``zoo list`` work whatever a variable that they do not use holds), and a value it cannot use
is a one-line ``ConfigError`` naming the variable, the value and what is valid. An unset or
blank variable means the default.

A leaf of the core: it imports only the standard library and ``genzoo.errors``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from genzoo.errors import ConfigError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
_INT = re.compile(r"[+-]?[0-9]{1,30}")  # an integer literal; 30 digits is far past any use
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what an entry point name may hold


def raw(name: str) -> str | None:
    """The variable's value, stripped; None when it is unset or blank (the default applies)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def shown(value: str) -> str:
    """A value quoted for a one-line message: repr (so a newline cannot split the line), cut
    to a readable length."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def bad(name: str, value: str, want: str) -> ConfigError:
    return ConfigError(f"environment variable {name}={shown(value)} is not valid: {want}")


def env_int(name: str, default: int, lo: int | None = None, hi: int | None = None,
            unit: str = "") -> int:
    """An integer literal in [lo, hi] (``1e9`` and ``1.5`` are not integers)."""
    value = raw(name)
    if value is None:
        return default
    lo_s = "" if lo is None else f">= {lo}"
    hi_s = "" if hi is None else f"<= {hi}"
    bounds = " and ".join(s for s in (lo_s, hi_s) if s)
    want = f"expected a whole number{' of ' + unit if unit else ''}" + \
        (f" {bounds}" if bounds else "") + f", or unset it (default {default})"
    if not _INT.fullmatch(value):
        raise bad(name, value, want)
    n = int(value)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise bad(name, value, want)
    return n


def env_bool(name: str, default: bool | None) -> bool | None:
    """1/true/yes/on or 0/false/no/off, any case."""
    value = raw(name)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    default_s = {True: "on", False: "off", None: "automatic"}[default]
    raise bad(name, value, f"expected 1 or 0 (also true/false, yes/no, on/off), or unset it "
                           f"(default {default_s})")


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """One of `choices` (compared without case)."""
    value = raw(name)
    if value is None:
        return default
    for c in choices:
        if value.lower() == c.lower():
            return c
    raise bad(name, value, f"expected one of {', '.join(choices)}, or unset it (default {default})")


def env_names(name: str, what: str = "item") -> set[str] | None:
    """A comma-separated list of names: None when unset, the empty set when set but blank (the
    way to say "none"). A value that is not blank but names nothing (``,,``) or holds a name
    with characters a name cannot have is an error, not "none" by accident."""
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        return set()
    names = {s.strip() for s in value.split(",") if s.strip()}
    wrong = sorted(n for n in names if not _NAME.fullmatch(n))
    if not names or wrong:
        why = f"{shown(wrong[0])} is not a {what} name" if wrong else f"it names no {what}"
        raise bad(name, value, f"{why}; expected {what} names separated by commas (letters, "
                               f"digits, _ . -), set it empty for none, or unset it for all")
    return names


def check_folder(path: Path, what: str) -> Path:
    """`path` as a folder genzoo can use or make: not a file, not inside a file, and (when it
    does not exist yet) under a folder it may write in. `what` names where the path came from
    in the message (``GENZOO_DATA='x'``, ``--data-root x``). An existing folder that cannot be
    written is left to the write that needs it (a read-only, filled cache is fine)."""
    try:
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{what} is a file, not a folder; name a folder")
            return path
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    except OSError as e:  # a name too long, a loop of links...
        raise ConfigError(f"{what} cannot be used: {e.strerror or e}") from None
    if not parent.is_dir():
        raise ConfigError(f"{what} is inside {parent}, which is a file, not a folder; name a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} does not exist and cannot be made: no permission to write in "
                          f"{parent}; name a folder you can write")
    return path


def env_path(name: str, default: Path | None = None) -> Path | None:
    """A folder: ``~`` expanded, and checked by ``check_folder``."""
    value = raw(name)
    if value is None:
        return default
    return check_folder(Path(value).expanduser(), f"environment variable {name}={shown(value)}")
