"""``zoo plugins --check``: import every lazy ``module:attr`` reference the catalogue holds.

Entries name their code as strings so ``zoo list`` stays fast, which also means a typo in a
plugin (or in registry.yaml) surfaces only when someone trains or samples that one model. This
walks them all once: families' models and samplers, dataset loaders (a dataset's own, or its
source's), writers; plugins that failed to load (their commands included) are reported too.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from genzoo.core.sources import SOURCES
from genzoo.core.plugins import BUILTIN, strict
from genzoo.core.registry import Registry, resolve
from genzoo.errors import RegistryError


@dataclass
class Broken:
    entry: str  # e.g. "family pixels", "dataset rings", "plugin genzoo_broken"
    field: str  # e.g. "model", "samplers.fast", "loader"
    reference: str  # the "module:attr" string (or what was given instead)
    error: str  # one line: ExceptionType: message

    def line(self) -> str:
        return f"{self.entry}: {self.field} = {self.reference}: {self.error}"


def references(reg: Registry) -> Iterator[tuple[str, str, Any, str]]:
    """(entry, field, reference, what it must be) for every code reference in `reg`: "class"
    for models and samplers, "callable" for loaders and writers, "source" for a dataset without
    a loader of its own (its source must be one that has one)."""
    for name, fam in reg.families.items():
        yield f"family {name}", "model", fam.model, "class"
        for sampler, ref in fam.samplers.items():
            yield f"family {name}", f"samplers.{sampler}", ref, "class"
    for name, spec in reg.datasets.items():
        if spec.loader is not None:
            yield f"dataset {name}", "loader", spec.loader, "callable"
        else:
            yield f"dataset {name}", "source", spec.source, "source"
    for kind, writer in reg.writers.items():
        yield f"writer {kind}", "writer", writer, "callable"


def _problem(ref: Any, want: str) -> str | None:
    if want == "source":  # the loader is the source's
        if ref not in SOURCES:
            return (f"RegistryError: unknown source and no loader given; sources with a "
                    f"loader: {', '.join(SOURCES)}")
        ref, want = SOURCES[ref], "callable"
    try:
        obj = resolve(ref, "it")
    except RegistryError as e:
        cause = e.__cause__ or e
        first = (str(cause).splitlines() or [""])[0]
        return f"{type(cause).__name__}: {first}"
    except Exception as e:  # noqa: BLE001 -- an import may raise anything; report, don't die
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    if want == "class" and not isinstance(obj, type):
        return f"TypeError: {obj!r} is not a class"
    if want == "callable" and not callable(obj):
        return f"TypeError: {obj!r} is not callable"
    return None


def check(reg: Registry, cli: Any = None) -> tuple[int, list[Broken]]:
    """Import every reference of `reg` and look at every plugin's load status: the number of
    references checked, and the broken ones. Given `cli` (a throwaway click group), plugins'
    ``register_commands`` are run against it first, so a raising one is reported too."""
    raised: list[Broken] = []
    if cli is not None:
        def add_commands(info: Any, fn: Any) -> None:
            try:
                reg.host.stage_commands(cli, info, fn)  # all its commands or none
            except Exception as e:  # a built-in's (or, when strict, any) error: report it
                if not (strict() or info.source == BUILTIN):
                    raise  # call_each marks the plugin broken; its line comes below
                first = (str(e).splitlines() or [""])[0]
                raised.append(Broken(f"plugin {info.name}", "register_commands",
                                     info.module or info.source, f"{type(e).__name__}: {first}"))
        reg.host.call_each("register_commands", add_commands)
    broken = [Broken(f"plugin {i.name}", "module", i.module or i.source, i.error)
              for i in reg.host.infos.values() if i.status == "error"] + raised
    n = 0
    for entry, field, ref, want in references(reg):
        n += 1
        problem = _problem(ref, want)
        if problem is not None:
            shown = ref if isinstance(ref, str) else getattr(ref, "__qualname__", repr(ref))
            broken.append(Broken(entry, field, str(shown), problem))
    return n, broken
