"""The catalogue: families, models (named configurations) and datasets, from all plugins.

Entries name their code lazily (``module:attr``), so listing never imports torch or a family
module; registering by import side effect is timm's most-reported "unknown model" cause.

Every entry records the ``plugin`` (distribution, or "built-in") it came from; a dataset's
``source`` is something else: the kind of place its data comes from (embedded, torchvision...).
"""
from __future__ import annotations

import copy

import fnmatch
import importlib
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import cache, partial
from typing import Any

import yaml

from genzoo.core import plugins
from genzoo.errors import GenzooError, RegistryError, UnknownNameError

PRESETS = ("quick", "book")
SECTIONS = ("model", "train", "data")

# The core's own sample kinds and their writers (``genzoo.core.sample.BUILTIN_WRITERS``, named
# lazily so listing imports no torch; a test keeps the two equal). They sit in every registry
# from the start, so a plugin's writer for one of them is a clash, like a model name.
CORE_WRITERS = {**{kind: f"genzoo.core.sample:write_{kind}"
                   for kind in ("image", "text", "points", "events")},
                "video": "genzoo.core.video:write_video"}
_NAME = r"[a-z0-9][a-z0-9._-]*"  # family, model, dataset and sampler names


@dataclass
class FamilyEntry:
    name: str
    model: Any  # class or "module:attr"
    samplers: dict[str, Any] = field(default_factory=dict)
    default_sampler: str | None = None
    summary: str = ""
    plugin: str = plugins.BUILTIN  # the distribution that registered it

    def model_class(self) -> type:
        return _a_class(resolve(self.model, f"family {self.name!r} ({self.plugin})"),
                        f"the model of family {self.name!r} ({self.plugin})")

    def sampler_class(self, name: str | None = None) -> type:
        name = name or self.default_sampler or next(iter(self.samplers), None)
        if name not in self.samplers:
            raise UnknownNameError(f"sampler for family {self.name!r}", str(name), self.samplers)
        return _a_class(resolve(self.samplers[name], f"sampler {name!r} of family {self.name!r}"),
                        f"sampler {name!r} of family {self.name!r}")


@dataclass
class ModelEntry:
    name: str
    family: str
    summary: str = ""
    chapter: int | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # base for all presets
    presets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)  # per preset, checked by a test
    notes: str = ""
    figures: str = ""  # measured figures for the README's table (with the benchmark behind them)
    plugin: str = plugins.BUILTIN  # the distribution that registered it

    def resolved(self, preset: str = "quick") -> dict[str, dict[str, Any]]:
        """Entry config merged with one preset: ``{"model": {...}, "train": {...}, "data": {...}}``."""
        if preset not in self.presets:
            raise UnknownNameError(f"preset of {self.name!r}", preset, self.presets)
        out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        out["data"].update(self.dataset)
        for layer in (self.config, self.presets[preset]):
            for section, values in (layer or {}).items():
                for key, value in (values or {}).items():
                    # a pipeline's per-stage mappings (train: {prior: {steps: ...}}) merge key by
                    # key: a preset's stage settings refine the entry's, never replace them whole
                    if isinstance(value, dict) and isinstance(out[section].get(key), dict):
                        out[section][key] = {**out[section][key], **value}
                    else:
                        out[section][key] = value
        return out


@dataclass
class DatasetSpec:
    name: str
    source: str  # embedded | torchvision | kaggle | folder | text | points | a plugin's own
    modality: str = "image"  # image | text | points | events
    location: str = ""  # package file, torchvision class, kaggle slug, or folder path
    summary: str = ""
    shape: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    provenance: str = ""
    loader: str | None = None  # "module:attr" of load(spec, cfg, split); default: the source's
    plugin: str = plugins.BUILTIN  # the distribution that registered it


def _a_class(obj: Any, what: str) -> type:
    if not isinstance(obj, type):
        raise RegistryError(f"{what} is {obj!r}, not a class; give the class or 'module:Class'")
    return obj


def resolve(ref: Any, what: str) -> Any:
    """Import a lazy ``module:attr`` reference; classes pass through."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as e:
        raise RegistryError(f"cannot load {what} from {ref!r}: {type(e).__name__}: {e}") from e
    return obj


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (the C parser where there is one) that refuses a key given twice in
    one mapping: plain PyYAML keeps the last silently, so a pasted-twice entry hides an edit."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *x` keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says why, below
                continue
            if first is not None:
                where = f"twice on line {line}" if first == line else f"at lines {first} and {line}"
                raise RegistryError(f"{self.name}: duplicate key {key!r} {where}; keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, name: str = "<yaml>") -> Any:
    """Parse a catalogue file (``registry.yaml``, a plugin's own) safely; a key given twice at
    any level is a RegistryError naming both lines. `name` is how errors name the file."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _as_registry_error(e: Exception, info: Any, hook: str) -> Exception:
    """A plugin's own exception (the built-in catalogue too: a malformed registry.yaml) as one
    line that names it; genzoo's errors pass unchanged."""
    if isinstance(e, GenzooError):
        return e
    first = (str(e).splitlines() or [""])[0][:200]
    return RegistryError(f"{hook} of plugin {info.name} ({info.source}) failed: "
                         f"{type(e).__name__}: {first}")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (None when it does): registry entries come
    from YAML and third-party code, and a wrong shape must fail at registration, in one line."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, a) for a in args]
        return None if any(p is None for p in problems) else next(p for p in problems if p)
    if hint is type(None):
        return None if value is None else f"expected nothing, got {type(value).__name__}"
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {type(value).__name__}"
        inner = args[0] if args else Any
        return next((p for p in (_type_problem(v, inner) for v in value) if p), None)
    if origin is dict:
        if not isinstance(value, dict):
            return f"expected a mapping, got {type(value).__name__}"
        kt, vt = args if args else (Any, Any)
        for k, v in value.items():
            problem = _type_problem(k, kt) or _type_problem(v, vt)
            if problem:
                return f"at {k!r}: {problem}"
        return None
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        return None
    return None if ok else f"expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}"


def _sections_problem(config: Any, presets: Any) -> str | None:
    """``config`` is {section: {key: value}}; ``presets`` is {preset: such a config}."""
    layers = [config] if config is not None else list((presets or {}).values())
    for layer in layers:
        for section, values in (layer or {}).items():
            if section not in SECTIONS:
                return f"has unknown section {section!r}; valid: {', '.join(SECTIONS)}"
            if values is not None and not isinstance(values, dict):
                return f"section {section!r} should be a mapping of settings"
            if values and not all(isinstance(k, str) for k in values):
                return f"section {section!r} has a key that is not a string"
    return None


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    # once per entry class, not once per entry: `zoo --help` builds the catalogue too (a plugin
    # that failed in it must add no command), and this was a third of that time
    return typing.get_type_hints(cls)


def _make(cls: type, name: str, kwargs: dict[str, Any], source: str, kind: str) -> Any:
    valid = {f.name for f in fields(cls)} - {"name", "plugin"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise RegistryError(f"{kind} {name!r} from {source}: unknown field {unknown[0]!r}; "
                            f"valid fields: {', '.join(sorted(valid))}")
    hints = _type_hints(cls)
    for key, value in kwargs.items():
        problem = _type_problem(value, hints.get(key, Any))
        if problem is None and key in ("presets", "config"):
            problem = _sections_problem(value if key == "config" else None,
                                        value if key == "presets" else None)
        if problem:
            raise RegistryError(f"{kind} {name!r} from {source}: field {key!r} {problem}")
    try:
        return cls(name=name, **kwargs)
    except TypeError as e:
        raise RegistryError(f"{kind} {name!r} from {source}: {e}") from None


class Registry:
    def __init__(self, host: plugins.PluginHost | None = None):
        self.host = host or plugins.host()
        self.families: dict[str, FamilyEntry] = {}
        self.models: dict[str, ModelEntry] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.writers: dict[str, Any] = dict(CORE_WRITERS)  # kind -> callable or "module:attr"
        # where writers, and samplers a plugin adds to a family, came from: clashes name both
        # sources, and a plugin that fails takes its own out (a family's own samplers are its)
        self.writer_plugins: dict[str, str] = dict.fromkeys(CORE_WRITERS, plugins.BUILTIN)
        self.sampler_plugins: dict[tuple[str, str], str] = {}
        self._load()

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        self.host.load()
        for hook, target in (("register_families", self.families),
                             ("register_datasets", self.datasets),
                             ("register_models", self.models)):
            def call(info: plugins.PluginInfo, fn: Any, hook: str = hook,
                     target: dict[str, Any] = target) -> None:
                staged: list[tuple[str, Any]] = []
                fn(register=self._recorder(hook, info.source, staged))
                for name, entry in staged:
                    self._add(target, name, entry, info.source, hook)
            # a failing plugin is out as a whole: partial state is worse
            self.host.call_each(hook, call, wrap=partial(_as_registry_error, hook=hook),
                                on_fail=lambda info: self._drop(info.source))
        # a plugin that fails here is out as a whole too: its families, models, datasets
        # (added above), samplers and writers go
        self.host.call_each("register_samplers", self._add_samplers,
                            wrap=partial(_as_registry_error, hook="register_samplers"),
                            on_fail=lambda info: self._drop(info.source))
        self.host.call_each("register_writers", self._add_writers,
                            wrap=partial(_as_registry_error, hook="register_writers"),
                            on_fail=lambda info: self._drop(info.source))
        for entry in self.models.values():
            if entry.family not in self.families:
                entry.notes = (entry.notes + f" [family {entry.family!r} is not registered]").strip()

    def _add_samplers(self, info: plugins.PluginInfo, fn: Any) -> None:
        staged: list[tuple[str, str, Any]] = []
        fn(register=lambda family, name, sampler: staged.append((family, name, sampler)))
        seen: set[tuple[str, str]] = set()
        for family, name, _ in staged:  # all checked before any is added
            fam = self.get_family(family)
            if not isinstance(name, str) or not re.fullmatch(_NAME, name):
                raise RegistryError(f"sampler name {name!r} for family {family!r} from "
                                    f"{info.source}: use lowercase letters, digits, '-', '_' "
                                    "or '.'")
            if name in fam.samplers or (family, name) in seen:
                first = (info.source if (family, name) in seen
                         else self.sampler_plugins.get((family, name), fam.plugin))
                raise RegistryError(plugins.clash("sampler", name, first, info.source,
                                                  of=f"family {family!r}"))
            seen.add((family, name))
        for family, name, sampler in staged:
            self.families[family].samplers[name] = sampler
            self.sampler_plugins[family, name] = info.source

    def _add_writers(self, info: plugins.PluginInfo, fn: Any) -> None:
        staged: list[tuple[str, Any]] = []
        fn(register=lambda kind, writer: staged.append((kind, writer)))
        seen: set[str] = set()
        for kind, _ in staged:  # all checked before any is added
            if not isinstance(kind, str) or not re.fullmatch(_NAME, kind):
                raise RegistryError(f"writer kind {kind!r} from {info.source}: use lowercase "
                                    "letters, digits, '-', '_' or '.'")
            if kind in self.writers or kind in seen:
                first = info.source if kind in seen else self.writer_plugins[kind]
                raise RegistryError(plugins.clash("writer kind", kind, first, info.source))
            seen.add(kind)
        for kind, writer in staged:
            self.writers[kind] = writer
            self.writer_plugins[kind] = info.source

    @staticmethod
    def _recorder(hook: str, source: str, staged: list[tuple[str, Any]]):
        cls, kind = {"register_families": (FamilyEntry, "family"),
                     "register_datasets": (DatasetSpec, "dataset"),
                     "register_models": (ModelEntry, "model")}[hook]

        def register(name: str, **kwargs: Any) -> None:
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
                raise RegistryError(f"{kind} name {name!r} from {source}: use lowercase letters, "
                                    "digits, '-', '_' or '.'")
            # a deep copy: entries are changed later (a plugin adds a sampler to a family), and
            # must never write through into the plugin's own dicts (the built-in plugin's are
            # its cached registry.yaml, which outlives a registry reset)
            entry = _make(cls, name, copy.deepcopy(kwargs), source, kind)
            entry.plugin = source
            staged.append((name, entry))
        return register

    def _add(self, target: dict[str, Any], name: str, entry: Any, source: str, hook: str) -> None:
        if name in target:
            kind = {"register_families": "family", "register_datasets": "dataset",
                    "register_models": "model"}[hook]
            raise RegistryError(plugins.clash(kind, name, target[name].plugin, source))
        target[name] = entry

    def _drop(self, plugin: str) -> None:
        """Take out everything `plugin` registered (it failed part-way: half of a plugin is
        worse than none)."""
        for target in (self.families, self.models, self.datasets):
            for name in [n for n, e in target.items() if e.plugin == plugin]:
                del target[name]
        for (family, name), source in list(self.sampler_plugins.items()):
            if source == plugin:
                del self.sampler_plugins[family, name]
                if family in self.families:
                    self.families[family].samplers.pop(name, None)
        for kind in [k for k, source in self.writer_plugins.items() if source == plugin]:
            del self.writer_plugins[kind]
            del self.writers[kind]

    # -- lookups -----------------------------------------------------------------------------
    def get(self, name: str) -> ModelEntry:
        if ":" in name:  # "dist:name" always works, and disambiguates
            source, _, short = name.partition(":")
            entry = self.models.get(short)
            if entry is not None and entry.plugin == source:
                return entry
            # never another source's model under this one's name: say why it is not there
            broken = [i for i in self.host.infos.values()
                      if source in (i.source, i.name) and i.status != "ok"]
            if broken:
                raise RegistryError(f"model {name!r}: plugin {source} did not load "
                                    f"({broken[0].error}); see `zoo plugins`")
            if entry is not None:
                raise RegistryError(f"model {short!r} comes from {entry.plugin}, not {source}; "
                                    f"name it {short!r} or {entry.plugin + ':' + short!r}")
            name = short
        if name in self.models:
            return self.models[name]
        raise UnknownNameError("model", name, self.models,
                               "List them with `zoo list`")

    def get_family(self, name: str) -> FamilyEntry:
        if name not in self.families:
            raise UnknownNameError("family", name, self.families,
                                   "Is the plugin that provides it installed? See `zoo plugins`")
        return self.families[name]

    def get_dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise UnknownNameError("dataset", name, self.datasets, "See `zoo data list`")
        return self.datasets[name]

    def list(self, pattern: str | None = None, tags: Iterable[str] = (),
             exclude: str | None = None) -> list[ModelEntry]:
        tags = set(tags)
        out = []
        for name, entry in self.models.items():
            if pattern and not fnmatch.fnmatch(name, pattern):
                continue
            if exclude and fnmatch.fnmatch(name, exclude):
                continue
            if tags and not tags <= set(entry.tags) | {entry.family}:
                continue
            out.append(entry)
        return sorted(out, key=lambda e: _natural_key(e.name))


_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def reset() -> None:
    global _registry
    _registry = None
    plugins.reset()
