"""A plugin can add, never silently replace: a writer, sampler, dataset, command, family or model
name that is taken (by a built-in or an earlier plugin) is a clash. The error names both
sources, `zoo plugins` shows the plugin as failed with that line, the first one stays, and the
clashing plugin is out as a whole (none of its other registrations, none of its commands)."""
import json
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from genzoo.cli import cli
from genzoo.core import plugins, registry
from genzoo.core.plugins import hookimpl
from genzoo.errors import RegistryError

EVIL = "genzoo-evil"


def clash_line(kind, name, first="built-in", second=EVIL, of=""):
    of = f" of {of}" if of else ""
    return (f"RegistryError: duplicate {kind} name {name!r}{of}: registered by {first} and by "
            f"{second}; the later one is not loaded — rename it")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def plugin_row(name):
    """The plugin's row of `zoo plugins --json`."""
    res = invoke("plugins", "--json")
    assert res.exit_code == 0, res.output
    return next(i for i in json.loads(res.output) if i["name"] == name)


def install(obj, name="evil", source=EVIL):
    plugins.host().register_object(obj, name, source=source)
    return registry.registry()


def assert_failed_with(line, name="evil"):
    row = plugin_row(name)
    assert (row["status"], row["error"]) == ("error", line)
    table = invoke("plugins")
    assert table.exit_code == 0 and "error" in table.output


def evil_writer(sample, stem, reference=None):
    raise AssertionError("the plugin's writer ran")


# -- one test per kind: the built-in wins, the line names both, `zoo plugins` shows it --------

def test_a_writer_for_image_is_refused_and_every_grid_is_the_builtin_s(tmp_path):
    import torch

    from genzoo.core import sample

    class P:
        @hookimpl
        def register_writers(self, register):
            register("image", evil_writer)

    reg = install(P())
    assert reg.writers["image"] == "genzoo.core.sample:write_image"
    assert sample.writer_for("image") is sample.write_image
    # training's grids and `zoo sample`'s go through sample.write
    paths = sample.write(sample.ImageSample(torch.rand(4, 1, 8, 8)), tmp_path / "grid")
    assert [p.name for p in paths] == ["grid.png"] and paths[0].stat().st_size > 0
    assert_failed_with(clash_line("writer kind", "image"))


def test_writer_for_prefers_the_core_writers_even_over_the_registry(monkeypatch):
    from genzoo.core import sample
    monkeypatch.setitem(registry.registry().writers, "image", evil_writer)
    assert sample.writer_for("image") is sample.write_image


def test_the_registry_knows_every_core_writer_lazily():
    from genzoo.core import sample
    reg = registry.registry()
    assert set(registry.CORE_WRITERS) == set(sample.BUILTIN_WRITERS)
    for kind, fn in sample.BUILTIN_WRITERS.items():
        assert registry.resolve(reg.writers[kind], kind) is fn
        assert reg.writer_plugins[kind] == "built-in"


@pytest.mark.parametrize("name", ["cached", "naive"])
def test_a_sampler_a_family_has_is_refused(name):
    from genzoo.plugins.pixelcnn import CachedSampler, NaiveSampler

    class P:
        @hookimpl
        def register_samplers(self, register):
            register("pixelcnn", name, "genzoo.plugins.gan:PriorSampler")

    fam = install(P()).get_family("pixelcnn")
    assert fam.sampler_class("cached") is CachedSampler
    assert fam.sampler_class("naive") is NaiveSampler
    assert_failed_with(clash_line("sampler", name, of="family 'pixelcnn'"))


def test_a_dataset_name_is_refused():
    class P:
        @hookimpl
        def register_datasets(self, register):
            register("mnist-5k", source="folder", location="/tmp/evil")

    spec = install(P()).get_dataset("mnist-5k")
    assert (spec.plugin, spec.source) == ("built-in", "embedded")
    assert_failed_with(clash_line("dataset", "mnist-5k"))


@pytest.mark.parametrize("name", ["list", "sample", "reconstruct", "List", "latent_plot"])
def test_a_command_name_is_refused_and_help_shows_the_builtin(name):
    class P:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello")
            def hello():
                """EVIL hello"""

            @cli.command(name)
            def evil():
                """EVIL command"""
                click.echo("EVIL ran")

    install(P())
    help_text = invoke("--help").output
    assert "EVIL" not in help_text and "hello" not in help_text  # all its commands or none
    assert "List models in the registry" in help_text
    assert "EVIL ran" not in invoke("list", "--json").output
    builtin = {"List": "list", "latent_plot": "latent-plot"}.get(name, name)
    like = f" (too close to {builtin!r})" if builtin != name else ""
    assert_failed_with(f"RegistryError: duplicate command name {name!r}{like}: registered by "
                       f"built-in and by {EVIL}; the later one is not loaded — rename it")
    check = invoke("plugins", "--check")
    assert check.exit_code == 1
    assert sum(f"duplicate command name {name!r}" in line
               for line in check.output.splitlines()) == 1


def test_a_family_name_is_refused():
    class P:
        @hookimpl
        def register_families(self, register):
            register("pixelcnn", model="genzoo.plugins.gan:DCGAN")

    fam = install(P()).get_family("pixelcnn")
    assert (fam.plugin, fam.model) == ("built-in", "genzoo.plugins.pixelcnn:PixelCNN")
    assert_failed_with(clash_line("family", "pixelcnn"))


def test_a_model_name_is_refused_even_when_the_plugin_asks_to_go_first():
    class P:
        @hookimpl(tryfirst=True)
        def register_models(self, register):
            register("pixelcnn", family="pixelcnn", summary="EVIL")

    reg = install(P())
    assert reg.get("pixelcnn").plugin == "built-in" and reg.get("pixelcnn").summary != "EVIL"
    assert reg.get("built-in:pixelcnn") is reg.get("pixelcnn")
    with pytest.raises(RegistryError, match=f"plugin {EVIL} did not load"):
        reg.get(f"{EVIL}:pixelcnn")
    assert_failed_with(clash_line("model", "pixelcnn"))


# -- whatever the load order: the first stays, the later one names both -----------------------

@pytest.mark.parametrize("order", [("dist-a", "dist-b"), ("dist-b", "dist-a")])
@pytest.mark.parametrize("kind", ["writer", "sampler", "command", "model"])
def test_between_two_plugins_the_first_stays_and_the_second_names_both(order, kind):
    def make(source):
        class P:
            if kind == "writer":
                @hookimpl
                def register_writers(self, register):
                    register("same", f"{source}:write")
            elif kind == "sampler":
                @hookimpl
                def register_samplers(self, register):
                    register("pixelcnn", "same", f"{source}:Sampler")
            elif kind == "model":
                @hookimpl
                def register_models(self, register):
                    register("same", family="pixelcnn", summary=source)
            else:
                @hookimpl
                def register_commands(self, cli):
                    cli.add_command(click.Command("same", help=source), "same")
        return P()

    first, second = order
    plugins.host().register_object(make(first), first, source=first)
    plugins.host().register_object(make(second), second, source=second)
    reg = registry.registry()
    if kind == "command":
        assert invoke("same", "--help").output.count(first) == 1
    else:
        got = {"writer": lambda: reg.writers["same"],
               "sampler": lambda: reg.get_family("pixelcnn").samplers["same"],
               "model": lambda: reg.get("same").summary}[kind]()
        assert first in got
    shown = {"writer": "writer kind", "sampler": "sampler", "command": "command",
             "model": "model"}[kind]
    of = "family 'pixelcnn'" if kind == "sampler" else ""
    assert plugin_row(first)["status"] == "ok"
    assert plugin_row(second)["error"] == clash_line(shown, "same", first, second, of=of)


# -- a plugin is in as a whole or out as a whole ----------------------------------------------

def test_a_clash_in_a_late_hook_takes_out_everything_the_plugin_registered():
    class P:
        @hookimpl
        def register_families(self, register):
            register("evil-family", model="genzoo.plugins.pixelcnn:PixelCNN")

        @hookimpl
        def register_datasets(self, register):
            register("evil-data", source="embedded", location="x.npz")

        @hookimpl
        def register_models(self, register):
            register("evil-model", family="evil-family")

        @hookimpl
        def register_samplers(self, register):
            register("pixelcnn", "evil-extra", "genzoo.plugins.pixelcnn:CachedSampler")

        @hookimpl
        def register_writers(self, register):
            register("evil-kind", evil_writer)
            register("image", evil_writer)

    reg = install(P())
    assert "evil-family" not in reg.families and "evil-model" not in reg.models
    assert "evil-data" not in reg.datasets
    assert "evil-extra" not in reg.families["pixelcnn"].samplers
    assert "evil-kind" not in reg.writers and reg.writers["image"] == registry.CORE_WRITERS["image"]
    assert plugin_row("evil")["error"] == clash_line("writer kind", "image")


def test_a_raising_sampler_hook_takes_out_the_plugin_s_models():
    class P:
        @hookimpl
        def register_models(self, register):
            register("half-model", family="pixelcnn")

        @hookimpl
        def register_samplers(self, register):
            register("pixelcnn", "half-sampler", "genzoo.plugins.pixelcnn:CachedSampler")
            raise ValueError("then it fell over")

    reg = install(P())
    assert "half-model" not in reg.models
    assert "half-sampler" not in reg.families["pixelcnn"].samplers
    assert plugin_row("evil")["error"] == "ValueError: then it fell over"


def test_a_command_hook_that_raises_half_way_adds_no_command():
    class P:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("half-hello")
            def hello():
                click.echo("hi")
            raise RuntimeError("commands half added")

    install(P())
    assert "half-hello" not in invoke("--help").output
    assert invoke("half-hello").exit_code != 0
    assert plugin_row("evil")["error"] == "RuntimeError: commands half added"


def test_a_plugin_s_commands_survive_a_reset_without_clashing_with_themselves():
    class P:
        @hookimpl
        def register_commands(self, cli):
            cli.add_command(click.Command("hello-again", callback=lambda: click.echo("hi")))

    install(P(), name="fine", source="genzoo-fine")
    assert invoke("hello-again").output == "hi\n"
    registry.reset()  # a new host: the built-in latent commands are added again, no clash
    assert plugin_row("genzoo.plugins")["status"] == "ok"
    assert "reconstruct" in invoke("--help").output and "hello-again" not in cli.commands


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["list", "sample", "train", "data", "plugins", "latent-plot"]).flatmap(
    lambda n: st.tuples(*[st.sampled_from(sorted({c, c.upper(), "_" if c == "-" else c}))
                          for c in n]).map("".join)))
def test_any_spelling_of_a_builtin_command_is_a_clash(name):
    group = click.Group("zoo", commands=dict(cli.commands))
    before = dict(group.commands)
    info = plugins.PluginInfo("evil", EVIL)

    def register_commands(cli):
        cli.add_command(click.Command(name), name)

    with pytest.raises(RegistryError) as e:
        plugins.host().stage_commands(group, info, register_commands)
    assert str(e.value).startswith(f"duplicate command name {name!r}")
    assert f"registered by built-in and by {EVIL}" in str(e.value)
    assert group.commands == before


@pytest.mark.parametrize("name", ["", "-x", "--help", "two words", "tab\there"])
def test_a_command_name_no_one_can_type_is_refused(name):
    group = click.Group("zoo")

    def register_commands(cli):
        cli.add_command(click.Command("ok-name"), "ok-name")
        cli.add_command(click.Command(name or None), name)

    with pytest.raises((ValueError, TypeError)):
        plugins.host().stage_commands(group, plugins.PluginInfo("evil", EVIL), register_commands)
    assert group.commands == {}


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=12))
def test_any_writer_kind_is_added_or_refused_in_one_line_and_image_stays(kind):
    class P:
        @hookimpl
        def register_writers(self, register):
            register(kind, evil_writer)

    host = plugins.PluginHost()
    host.register_object(P(), "evil", source=EVIL)
    reg = registry.Registry(host)
    info = host.infos["evil"]
    assert reg.writers["image"] == registry.CORE_WRITERS["image"]
    if info.status == "ok":
        assert reg.writers[kind] is evil_writer and reg.writer_plugins[kind] == EVIL
    else:
        assert kind not in reg.writers or reg.writer_plugins[kind] == "built-in"
        assert len(info.error.splitlines()) == 1 and repr(kind) in info.error


# -- plugin identities: no entry point can pass for, or switch off, the built-ins -------------

class FakeEntryPoint:
    def __init__(self, name, dist, obj):
        self.name, self.value, self.dist, self._obj = name, f"{dist}.plugin", SimpleNamespace(
            name=dist, version="6.6.6"), obj

    def load(self):
        return self._obj


class ClaimsPixelcnn:
    @hookimpl
    def register_models(self, register):
        register("pixelcnn", family="pixelcnn", summary="EVIL")


@pytest.fixture
def entry_points(monkeypatch):
    """entry_points(*eps): the zoo sees these as the installed `genzoo` entry points."""
    def use(*eps):
        monkeypatch.setattr(plugins.importlib.metadata, "entry_points",
                            lambda group=None: list(eps) if group == plugins.PROJECT else [])
        registry.reset()
    return use


@pytest.mark.parametrize("allow", [None, "", "genzoo-evil"])
def test_an_entry_point_named_like_the_builtin_plugin_does_not_switch_it_off(
        entry_points, monkeypatch, allow):
    if allow is None:
        monkeypatch.delenv("GENZOO_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("GENZOO_LOAD_PLUGINS", allow)
    entry_points(FakeEntryPoint("genzoo.plugins", EVIL, ClaimsPixelcnn()))
    reg = registry.registry()
    assert reg.get("pixelcnn").plugin == "built-in" and len(reg.models) > 10
    rows = json.loads(invoke("plugins", "--json").output)
    builtin = [r for r in rows if r["source"] == "built-in"]
    assert [(r["name"], r["status"]) for r in builtin] == [("genzoo.plugins", "ok")]
    evil = next(r for r in rows if r["source"] == EVIL)
    assert evil["status"] == ("skipped" if allow == "" else "error")
    if allow != "":
        assert evil["error"] == ("RuntimeError: plugin name 'genzoo.plugins' already used by "
                                 "built-in")


@pytest.mark.parametrize("dist", ["built-in", "Built_In", "built.in"])
def test_a_distribution_cannot_call_itself_built_in(entry_points, monkeypatch, dist):
    monkeypatch.delenv("GENZOO_LOAD_PLUGINS", raising=False)
    entry_points(FakeEntryPoint("evil", dist, ClaimsPixelcnn()))
    reg = registry.registry()  # a "built-in" clash would raise and take the CLI down
    assert reg.get("pixelcnn").summary != "EVIL"
    row = plugin_row("evil")
    assert row["status"] == "error"
    assert row["error"] == (f"RuntimeError: distribution name {dist!r} is reserved for genzoo's "
                            "own plugin; rename the distribution")
    assert invoke("list", "--json").exit_code == 0


def test_two_entry_points_of_one_name_keep_both_rows(entry_points, monkeypatch):
    class Fine:
        @hookimpl
        def register_models(self, register):
            register("fine-model", family="pixelcnn")

    class FailsOnLoad(FakeEntryPoint):
        def load(self):
            raise ImportError("needs libfoo")

    monkeypatch.delenv("GENZOO_LOAD_PLUGINS", raising=False)
    entry_points(FailsOnLoad("same", "dist-a", None), FakeEntryPoint("same", "dist-b", Fine()))
    assert registry.registry().get("fine-model").plugin == "dist-b"
    rows = [r for r in json.loads(invoke("plugins", "--json").output) if r["name"] == "same"]
    assert [(r["source"], r["status"], r["error"]) for r in rows] == [
        ("dist-a", "error", "ImportError: needs libfoo"), ("dist-b", "ok", "")]
