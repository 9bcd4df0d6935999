"""The catalogue's hygiene: duplicate YAML keys, where entries come from, `zoo plugins --check`,
one way to call plugin hooks, and a `zoo sample` that takes whatever a sampler declares."""
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo.cli import _sampler_inputs, cli
from genzoo.core import plugins, registry
from genzoo.core.registry import read_yaml
from genzoo.core.sampler import Sampler
from genzoo.errors import ConfigError, RegistryError
from cli_checks import one_line_error


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- registry.yaml: a key given twice is an error, at any level -------------------------------

@pytest.mark.parametrize("text,key,lines", [
    ("families:\n  a: {model: x}\n  b: {model: y}\n  a: {model: z}\n", "a", (2, 4)),
    ("models:\n  m:\n    family: f\n    presets:\n      quick: {}\n    family: g\n", "family", (3, 6)),
    ("models:\n  m:\n    presets:\n      quick:\n        train: {lr: 1, lr: 2}\n", "lr", (5, 5)),
    ("a: 1\nb: 2\na: 3\n", "a", (1, 3)),
])
def test_a_key_given_twice_names_both_lines(text, key, lines):
    with pytest.raises(RegistryError) as e:
        read_yaml(text, "registry.yaml")
    where = f"twice on line {lines[0]}" if lines[0] == lines[1] else f"at lines {lines[0]} and {lines[1]}"
    assert str(e.value) == f"registry.yaml: duplicate key {key!r} {where}; keep one"


def test_yaml_without_duplicates_reads_as_plain_yaml():
    assert read_yaml("a: 1\nb: {c: [1, 2]}\nx: &anchor {p: 1}\ny:\n  <<: *anchor\n  p: 2\n") == {
        "a": 1, "b": {"c": [1, 2]}, "x": {"p": 1}, "y": {"p": 2}}
    assert read_yaml("") is None


def test_the_builtin_catalogue_refuses_a_duplicate_and_has_none(monkeypatch):
    import genzoo.plugins as builtin
    text = (Path(builtin.__file__).parent.parent / "registry.yaml").read_text()
    assert builtin.catalogue() == read_yaml(text)  # no duplicate in the shipped file

    class Files:  # importlib.resources.files("genzoo") serving a doctored registry.yaml
        def joinpath(self, name):
            return self

        def read_text(self, encoding=None):
            return text.replace("\nwriters:", "\n  pixelcnn:\n    model: x:Y\nwriters:", 1)

    monkeypatch.setattr(builtin.resources, "files", lambda package: Files())
    builtin.catalogue.cache_clear()
    try:
        registry.reset()
        with pytest.raises(RegistryError, match=r"genzoo/registry.yaml: duplicate key 'pixelcnn' "
                                                r"at lines 6 and \d+"):
            registry.registry()
    finally:
        builtin.catalogue.cache_clear()
        registry.reset()


# -- plugin vs data source: two names ---------------------------------------------------------

class Rings:
    @plugins.hookimpl
    def register_datasets(self, register):
        register("rings", source="points", modality="points", loader="nowhere_at_all:load")

    @plugins.hookimpl
    def register_models(self, register):
        register("rings-pixelcnn", family="pixelcnn", presets={"quick": {}})


def test_every_entry_records_its_plugin_and_a_dataset_its_data_source():
    plugins.host().register_object(Rings(), "rings", source="genzoo-rings")
    reg = registry.registry()
    assert {e.plugin for e in reg.families.values()} == {"built-in"}
    assert reg.get("rings-pixelcnn").plugin == "genzoo-rings"
    assert reg.get("genzoo-rings:rings-pixelcnn").name == "rings-pixelcnn"
    rings, mnist = reg.get_dataset("rings"), reg.get_dataset("mnist-5k")
    assert (rings.plugin, rings.source) == ("genzoo-rings", "points")
    assert (mnist.plugin, mnist.source) == ("built-in", "embedded")
    listed = {d["name"]: d for d in json.loads(invoke("data", "list", "--json").output)}
    assert (listed["rings"]["plugin"], listed["rings"]["source"]) == ("genzoo-rings", "points")


@pytest.mark.parametrize("hook,kwargs", [
    ("register_models", {"family": "pixelcnn", "plugin": "someone-else"}),
    ("register_datasets", {"source": "embedded", "plugin": "someone-else"}),
    ("register_datasets", {"source": "embedded", "origin": "someone-else"}),
])
def test_a_plugin_cannot_claim_another_plugin(hook, kwargs):
    class Claims:
        pass
    setattr(Claims, hook, staticmethod(plugins.hookimpl(lambda register: register("x", **kwargs))))
    host = plugins.PluginHost()
    host.register_object(Claims(), "claims", source="genzoo-claims")
    registry.Registry(host)
    assert host.infos["claims"].status == "error"
    assert "unknown field" in host.infos["claims"].error


# -- one way to call a hook on every plugin ---------------------------------------------------

def test_call_each_isolates_a_raising_plugin_and_drops_what_it_half_registered():
    class Half:
        @plugins.hookimpl
        def register_families(self, register):
            register("half-family", model="genzoo.plugins.pixelcnn:PixelCNN")

        @plugins.hookimpl
        def register_models(self, register):
            register("half-model", family="half-family")
            raise ValueError("then it fell over")

    host = plugins.PluginHost()
    host.register_object(Half(), "half", source="genzoo-half")
    reg = registry.Registry(host)
    assert host.infos["half"].status == "error"
    assert host.infos["half"].error == "ValueError: then it fell over"
    assert "half-family" not in reg.families and "half-model" not in reg.models
    assert "pixelcnn" in reg.models  # the built-ins are untouched
    assert not hasattr(registry.Registry, "_ordered")  # no second copy of the loop


def test_a_raising_builtin_hook_is_one_registry_error(monkeypatch):
    import genzoo.plugins as builtin

    def boom(register):
        raise KeyError("oops")
    monkeypatch.setattr(builtin, "register_writers", plugins.hookimpl(boom))
    registry.reset()
    with pytest.raises(RegistryError, match="register_writers of plugin genzoo.plugins "
                                            r"\(built-in\) failed: KeyError: 'oops'"):
        registry.registry()


# -- zoo plugins --check ----------------------------------------------------------------------

def test_check_passes_over_the_builtins():
    res = invoke("plugins", "--check")
    assert res.exit_code == 0, res.output
    line = res.output.strip()
    assert line.startswith("all ") and line.endswith("references load (1 plugin)")
    from genzoo.core.checks import references
    refs = list(references(registry.registry()))
    assert {f for _, f, _, _ in refs} >= {"model", "samplers.cached", "writer", "loader", "source"}


def test_check_names_every_broken_reference_and_exits_1():
    import click

    class Broken:
        @plugins.hookimpl
        def register_families(self, register):
            register("bent", model="genzoo.plugins.pixelcnn:NoSuchModel",
                     samplers={"ok": "genzoo.plugins.pixelcnn:CachedSampler",
                               "gone": "genzoo_no_such_module.x:Sampler",
                               "nonclass": "genzoo.plugins.pixelcnn:torch"})

        @plugins.hookimpl
        def register_datasets(self, register):
            register("bent-data", source="points", loader="genzoo.core.data:no_loader")
            register("odd-data", source="carrier-pigeon")

        @plugins.hookimpl
        def register_writers(self, register):
            register("bent-kind", "genzoo.core.sample:not_a_writer")

        @plugins.hookimpl
        def register_commands(self, cli):
            @cli.command("bent-hello")
            def hello():
                click.echo("hi")
            raise RuntimeError("commands half added")

    plugins.host().register_object(Broken(), "bent", source="genzoo-bent")
    res = invoke("plugins", "--check")
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    expected = [
        "family bent: model = genzoo.plugins.pixelcnn:NoSuchModel: AttributeError:",
        "family bent: samplers.gone = genzoo_no_such_module.x:Sampler: ModuleNotFoundError:",
        "family bent: samplers.nonclass = genzoo.plugins.pixelcnn:torch: TypeError:",
        "dataset bent-data: loader = genzoo.core.data:no_loader: AttributeError:",
        "dataset odd-data: source = carrier-pigeon: RegistryError: unknown source",
        "writer bent-kind: writer = genzoo.core.sample:not_a_writer: AttributeError:",
        "plugin bent: module = ",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert "commands half added" in next(line for line in lines if line.startswith("plugin bent"))
    assert not any("samplers.ok" in line or "family pixelcnn" in line for line in lines)
    assert lines[-1].startswith(f"{len(expected)} broken (")


# -- zoo sample: any declared input, any declared view ----------------------------------------

class Typed(Sampler):
    name = "typed"
    inputs = {"label": "a class", "prompt": "a text", "loose": "not annotated"}

    def sample(self, model, n, generator, label: int | None = None, prompt: str | None = None,
               **rest):
        return torch.zeros(n, 1, 2, 2)


def test_input_values_take_the_type_of_the_sampler_parameter():
    got = _sampler_inputs(Typed, "fam", ("label=3", "prompt=none", "loose=1.5", "prompt=a=b"))
    assert got == {"label": 3, "prompt": "a=b", "loose": "1.5"}
    assert _sampler_inputs(Typed, "fam", ("prompt=none",)) == {"prompt": "none"}
    with pytest.raises(ConfigError, match="bad value 'three' for label: expected an integer"):
        _sampler_inputs(Typed, "fam", ("label=three",))
    with pytest.raises(ConfigError, match=r"^unknown input 'noise' for sampler 'typed' of family "
                                          r"'fam'; its inputs: label, prompt, loose$"):
        _sampler_inputs(Typed, "fam", ("noise=1",))
    with pytest.raises(ConfigError, match="bad --input 'label': expected NAME=VALUE"):
        _sampler_inputs(Typed, "fam", ("label",))


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    from tiny import tiny
    out = tmp_path_factory.mktemp("gpt") / "run"
    return genzoo.train("gpt", out=str(out), progress=False, **tiny("gpt", steps=2))


def _texts(res):
    assert res.exit_code == 0, res.output
    wrote = [line.split("wrote ", 1)[1] for line in res.output.splitlines() if line.startswith("wrote ")]
    return Path(next(w for w in wrote if w.endswith(".txt"))).read_text()


def test_input_and_show_reach_the_sampler_like_their_shortcuts(gpt_run, tmp_path):
    common = ["sample", gpt_run.path, "--n", 2, "--set", "max_new_tokens=4", "--seed", 1]
    by_flag = _texts(invoke(*common, "--prompt", "recipe for", "--show-attention",
                            "--out", tmp_path / "a"))
    by_name = _texts(invoke(*common, "--input", "prompt=recipe for", "--show", "attention",
                            "--out", tmp_path / "b"))
    assert by_flag == by_name and by_flag.startswith("recipe for")
    shown = sorted(p.name for p in tmp_path.iterdir())
    assert any("attention" in name for name in shown if name.startswith("a")), shown
    assert ([n[1:] for n in shown if n.startswith("a")]
            == [n[1:] for n in shown if n.startswith("b")])


def test_undeclared_inputs_and_views_are_one_line(gpt_run):
    one_line_error(invoke("sample", gpt_run.path, "--input", "label=2"),
                   "unknown input 'label' for sampler 'cached' of family 'gpt'", "its inputs: prompt")
    one_line_error(invoke("sample", gpt_run.path, "--show", "chain"), "chain", "attention")
    one_line_error(invoke("sample", gpt_run.path, "--show-chain"), "chain", "attention")
    one_line_error(invoke("sample", gpt_run.path, "--prompt", "a", "--input", "prompt=b"),
                   "--prompt and --input prompt=... disagree")


def test_show_x_flags_are_hidden_aliases():
    text = invoke("sample", "--help").output
    assert "--show VIEW" in text and "--input NAME=VALUE" in text
    assert "--show-chain" not in text and "--show-probs" not in text
