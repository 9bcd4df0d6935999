"""pluggy hook specs and the plugin manager (entry-point group ``genzoo``).

Every entry point is loaded on its own inside try/except: one broken plugin is recorded and shown
by ``zoo plugins``, never allowed to take the CLI down (llm's most-reported failure mode, where
``load_setuptools_entrypoints`` raises on the first bad plugin). Hooks are called one
implementation at a time for the same reason, and so every registration knows its source.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from genzoo.core.env import env_bool, env_names
from genzoo.errors import RegistryError

PROJECT = "genzoo"
BUILTIN = "built-in"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Modules inside genzoo that register built-in families through the very same hooks.
BUILTIN_PLUGINS = ("genzoo.plugins",)


def clash(kind: str, name: str, first: str, second: str, like: str | None = None,
          of: str = "") -> str:
    """The one wording of every clash (a family, model, dataset, sampler, writer or command
    name given twice): both sources are named, the first one stays, the later one is not loaded
    at all. `like` is the name already taken when it is spelt differently (``List``, ``list``);
    `of` says whose name it is (``family 'pixelcnn'`` for a sampler)."""
    taken = f" (too close to {like!r})" if like is not None and like != name else ""
    by = f"twice by {first}" if first == second else f"by {first} and by {second}"
    return (f"duplicate {kind} name {name!r}{' of ' + of if of else ''}{taken}: registered "
            f"{by}; the later one is not loaded — rename it")


def _command_key(name: str) -> str:
    # click spells a function `latent_plot` as the command `latent-plot`, and a terminal user
    # does not tell `List` from `list` in a help page: names equal under this key clash
    return name.casefold().replace("_", "-")


class hookspecs:
    """Callback-style hooks: plugins call ``register(...)`` so the host keeps control of dedup,
    validation and error attribution."""

    @hookspec
    def register_families(self, register: Callable[..., None]) -> None:
        """``register(name, model="pkg.mod:ModelClass", samplers={"name": "pkg.mod:Sampler"},
        default_sampler="name")``. Code may be given as a class or a lazy ``module:attr`` string;
        strings keep ``zoo list`` from importing torch."""

    @hookspec
    def register_models(self, register: Callable[..., None]) -> None:
        """``register(name, family=..., summary=..., dataset={...}, presets={...}, ...)``: a named,
        ready-to-train configuration (the fields of a ``registry.yaml`` entry)."""

    @hookspec
    def register_datasets(self, register: Callable[..., None]) -> None:
        """``register(name, source=..., modality=..., loader="pkg.mod:load_x", ...)``; the
        loader is ``load(spec, cfg, split) -> Dataset`` (see ``genzoo.core.data``)."""

    @hookspec
    def register_samplers(self, register: Callable[..., None]) -> None:
        """``register(family, name, "pkg.mod:SamplerClass")``: extra samplers for any family."""

    @hookspec
    def register_writers(self, register: Callable[..., None]) -> None:
        """``register(kind, "pkg.mod:write_x")``: how samples of a kind become files
        (``write_x(sample, stem, reference=None) -> list[Path]``)."""

    @hookspec
    def register_commands(self, cli: Any) -> None:
        """Add click commands to the ``zoo`` group."""


@dataclass
class PluginInfo:
    name: str  # entry-point name, or the module name for built-ins
    source: str  # distribution name, or "built-in"
    version: str = ""
    module: str = ""
    status: str = "ok"  # ok | error | skipped
    error: str = ""
    hooks: list[str] = field(default_factory=list)


def _allowlist() -> set[str] | None:
    return env_names("GENZOO_LOAD_PLUGINS", "plugin")  # unset: all; empty: none


def strict() -> bool:
    return bool(env_bool("GENZOO_STRICT_PLUGINS", False))


class PluginHost:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._loaded = False

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for modname in BUILTIN_PLUGINS:
            module = importlib.import_module(modname)
            self._register(module, PluginInfo(modname, BUILTIN, module=modname))
        allow = _allowlist()
        for ep in importlib.metadata.entry_points(group=PROJECT):
            dist = ep.dist.name if ep.dist else "?"
            info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else "", ep.value)
            if allow is not None and dist not in allow and ep.name not in allow:
                info.status = "skipped"
                info.error = "not in GENZOO_LOAD_PLUGINS"
                self._store(info)
                continue
            if _normal(dist) == _normal(BUILTIN):
                # call_each trusts this source (built-ins first, their errors raised): a
                # distribution must not be able to claim it
                self.fail(info, RuntimeError(f"distribution name {dist!r} is reserved for "
                                             "genzoo's own plugin; rename the distribution"))
                continue
            try:
                module = ep.load()
            except BaseException as e:  # SystemExit too: a plugin must not end the CLI
                if strict() and not isinstance(e, SystemExit):
                    raise
                self.fail(info, e)
                continue
            self._register(module, info)

    def _register(self, module: Any, info: PluginInfo) -> None:
        holder = next((i for i in self.infos.values() if i.name == info.name and i.status == "ok"),
                      None)
        if holder is not None:
            self.fail(info, RuntimeError(f"plugin name {info.name!r} already used by "
                                         f"{holder.source}"))
            return
        key = self._key(info)  # info.name, unless a plugin that did not load holds it
        try:
            self.pm.register(module, name=key)
        except Exception as e:  # pluggy validates hook signatures here
            if strict():
                raise
            self.fail(info, e)
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        self.infos[key] = info

    def _key(self, info: PluginInfo) -> str:
        """Where `info` goes in `infos` (and its name in pluggy): its name, or, when that is
        taken by another plugin, the name with its source, so neither replaces the other."""
        key, n = info.name, 1
        while key in self.infos and self.infos[key] is not info:
            n += 1
            key = f"{info.name} ({info.source})" + (f" #{n}" if n > 2 else "")
        return key

    def _store(self, info: PluginInfo) -> None:
        if not any(i is info for i in self.infos.values()):
            self.infos[self._key(info)] = info

    def fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.status = "error"
        info.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        self._store(info)

    def register_object(self, obj: Any, name: str, source: str = "test") -> None:
        """Register an in-process plugin (tests, notebooks)."""
        self.load()
        self._register(obj, PluginInfo(name, source, module=repr(obj)))

    def add_commands(self, group: Any) -> None:
        """Every loaded plugin's ``register_commands``, into the click `group`, once per host:
        built-ins first, each plugin through `stage_commands` (all of its commands or none; a
        name the group has is a clash naming both). Commands a previous host added are taken
        out first, so a reset (tests, an in-process install) does not clash with itself."""
        if getattr(group, "_genzoo_commands_host", None) is self:
            return
        owners: dict[str, tuple[str, Any]] = group.__dict__.setdefault("_genzoo_command_owners", {})
        for name, (_, command) in list(owners.items()):
            if group.commands.get(name) is command:
                del group.commands[name]
            del owners[name]
        group._genzoo_commands_host = self
        self.call_each("register_commands", lambda info, fn: self.stage_commands(group, info, fn))

    def stage_commands(self, group: Any, info: PluginInfo, fn: Callable[..., Any]) -> None:
        """Run one plugin's ``register_commands`` against a group of its own, then move what it
        added into `group`. A plugin that raises half-way adds nothing; one whose command name
        `group` already has (a built-in ``list``, an earlier plugin's) adds nothing and raises
        the clash, naming both, so the built-in keeps its name whatever the load order."""
        import click
        staging = click.Group(name=getattr(group, "name", None))
        fn(cli=staging)
        owners: dict[str, tuple[str, Any]] = group.__dict__.setdefault("_genzoo_command_owners", {})
        taken = {_command_key(n): n for n in group.commands}
        own: dict[str, str] = {}
        for name, command in staging.commands.items():
            if not isinstance(name, str) or not re.fullmatch(r"[^\W_][\w.-]*", name):
                raise ValueError(f"command name {name!r} from {info.source}: use letters, digits, "
                                 "'-', '_' or '.', starting with a letter or digit")
            if not isinstance(command, click.Command):
                raise TypeError(f"command {name!r} from {info.source} is {command!r}, not a "
                                "click command")
            key = _command_key(name)
            if key in own:  # the plugin gave two names for one (`a_b` and `a-b`)
                raise RegistryError(clash("command", name, info.source, info.source, own[key]))
            if key in taken:
                first = taken[key]
                owner = owners[first][0] if first in owners else BUILTIN
                raise RegistryError(clash("command", name, owner, info.source, like=first))
            own[key] = name
        for name, command in staging.commands.items():
            group.add_command(command, name)
            owners[name] = (info.source, command)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)

    def implementations(self, hook: str) -> Iterator[tuple[PluginInfo, Callable[..., Any]]]:
        """Each implementation of `hook` with the plugin it came from, built-ins first."""
        self.load()
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        # pluggy calls last-registered first; we want registration order so built-ins win ties.
        for impl in impls:
            info = self.infos.get(impl.plugin_name)
            if info is None or info.status != "ok":
                continue
            yield info, impl.function

    def call_each(self, hook: str, call: Callable[[PluginInfo, Callable[..., Any]], None],
                  wrap: Callable[[Exception, PluginInfo], Exception] | None = None,
                  on_fail: Callable[[PluginInfo], None] | None = None) -> None:
        """``call(info, fn)`` for each implementation of `hook`, one plugin at a time, built-ins
        first. A raising third-party plugin is marked broken (shown by ``zoo plugins``) and
        `on_fail` undoes what it half did; a built-in's error, or any error under
        GENZOO_STRICT_PLUGINS, is raised (through `wrap`, which may name the plugin)."""
        impls = sorted(self.implementations(hook), key=lambda p: p[0].source != BUILTIN)
        for info, fn in impls:
            try:
                call(info, fn)
            except Exception as e:
                if strict() or info.source == BUILTIN:
                    err = e if wrap is None else wrap(e, info)
                    if err is e:
                        raise
                    raise err from e
                self.fail(info, e)
                if on_fail is not None:
                    on_fail(info)


def _normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_host: PluginHost | None = None


def host() -> PluginHost:
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def reset() -> None:
    """Forget loaded plugins (tests, or after installing a plugin in-process)."""
    global _host
    _host = None
