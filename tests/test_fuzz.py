"""Fuzzed input never gives a traceback: `--set` parsing and coercion, registry entries (YAML and
plugin registration), a run's config.json and trainer.json. Every input either works or raises a
GenzooError (one line in the CLI). A few hundred examples run by default; `-m slow` runs >= 10,000.
"""
import copy
import json
import shutil
import typing

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import genzoo  # noqa: E402
from genzoo.core import checkpoint as ckpt  # noqa: E402
from genzoo.core import config as configlib  # noqa: E402
from genzoo.core import plugins, registry  # noqa: E402
from genzoo.core.data import DataConfig  # noqa: E402
from genzoo.core.factory import plan  # noqa: E402
from genzoo.core.trainer import TrainConfig  # noqa: E402
from genzoo.errors import GenzooError  # noqa: E402
from genzoo.plugins.pixelcnn import PixelCNNConfig  # noqa: E402

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))

KEYS = sorted({*configlib.field_names(PixelCNNConfig), *configlib.field_names(TrainConfig),
               *configlib.field_names(DataConfig)}
              | {f"{s}.{k}" for s, cls in (("model", PixelCNNConfig), ("train", TrainConfig),
                                           ("data", DataConfig)) for k in configlib.field_names(cls)})
NASTY = ["nan", "-nan", "inf", "-inf", "1e400", "-1", "0", "1_000", "None", "null", "true", "[]",
         "[1, 2]", "(0.5, 0.9)", "{'a': 1}", "1,2,3", "", " ", "0x10", "1e-300", "9" * 40,
         "\x00", "é", "[[[[", "((1,),)", "cosine", "fashion-mnist-1k", "auto", "cpu", "cuda:99"]
values = st.one_of(st.sampled_from(NASTY), st.text(max_size=12),
                   st.integers(-2 ** 70, 2 ** 70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
set_items = st.lists(st.one_of(
    st.tuples(st.sampled_from(KEYS), values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20)), max_size=4)

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)

ANNOTATIONS = [int, float, bool, str, int | None, float | None, tuple[float, float],
               tuple[int, ...], list[str], dict, typing.Literal["a", "b"], str | None,
               typing.Literal["word", "char"] | None]


def _set_and_plan(items):
    try:
        overrides = configlib.parse_set(items)
        plan("pixelcnn", "quick", overrides)
    except GenzooError as e:
        assert "\n" not in str(e).strip(), str(e)


def _coerce(value, annotation):
    try:
        configlib.coerce("key", value, annotation)
    except GenzooError:
        pass


@FAST
@given(set_items)
def test_set_parsing_and_planning(items):
    _set_and_plan(items)


@FAST
@given(st.one_of(json_values, values), st.sampled_from(ANNOTATIONS))
def test_coerce(value, annotation):
    _coerce(value, annotation)


# -- registry entries: what a plugin (or registry.yaml) may register --------------------------

FIELDS = {"register_models": ["family", "summary", "chapter", "dataset", "sampler", "config",
                              "presets", "tags", "params", "notes", "figures", "bogus"],
          "register_families": ["model", "samplers", "default_sampler", "summary", "bogus"],
          "register_datasets": ["source", "modality", "location", "summary", "shape", "classes",
                                "options", "license", "provenance", "loader", "bogus"]}
sections = st.dictionaries(st.sampled_from(["model", "train", "data", "other"]),
                           st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), json_values,
                                                                max_size=2), json_values),
                           max_size=3)
field_values = st.one_of(json_values, sections,
                         st.dictionaries(st.sampled_from(["quick", "book"]), sections, max_size=2),
                         st.sampled_from(["pixelcnn", "genzoo.plugins.pixelcnn:PixelCNN",
                                          "nowhere:X", "genzoo:nothing", ""]))
registrations = st.tuples(
    st.sampled_from(sorted(FIELDS)),
    st.one_of(st.sampled_from(["fuzzed", "pixelcnn", "Bad Name", ""]), st.text(max_size=6)),
    st.data())


def _register(hook, name, data):
    kwargs = data.draw(st.dictionaries(st.sampled_from(FIELDS[hook]), field_values, max_size=5))

    class Fuzzed:
        pass
    impl = plugins.hookimpl(lambda register: register(name, **kwargs))
    setattr(Fuzzed, hook, staticmethod(impl))
    host = plugins.PluginHost()
    host.register_object(Fuzzed(), "fuzzed", source="genzoo-fuzz")
    reg = registry.Registry(host)  # a broken plugin is marked failed, never raises
    info = host.infos["fuzzed"]
    assert info.status in ("ok", "error")
    # whatever got in can be used: listed, resolved, looked up
    for entry in reg.models.values():
        for preset in entry.presets:
            entry.resolved(preset)
        reg.list("*")
    try:
        reg.get(f"genzoo-fuzz:{name}")
    except GenzooError:
        pass
    for fam in reg.families.values():
        try:
            fam.model_class()
            fam.sampler_class()
        except GenzooError:
            pass


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(registrations)
def test_plugin_registration_fields(reg_args):
    _register(*reg_args)


def test_a_malformed_builtin_catalogue_is_one_registry_error(monkeypatch):
    import genzoo.plugins as builtin
    for bad in ([1, 2], {"models": [1]}, {"models": {"x": 3}}, {"families": {"x": {"model": 1, "samplers": 3}}},
                {"models": {"x": {"presets": {"quick": {"train": [1]}}}}}):
        monkeypatch.setattr(builtin, "catalogue", lambda bad=bad: bad)
        registry.reset()
        with pytest.raises(GenzooError):
            registry.registry()
    registry.reset()


# -- a run's files: config.json and trainer.json ---------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fuzz") / "run"
    from genzoo.core import runner
    from tiny import tiny  # the `tiny` fixture's table (a module-scoped fixture cannot take it)
    runner.train("pixelcnn", "quick", tiny("pixelcnn", steps=4), out=out, progress=False,
                 stop_after=2)
    yield out
    torch.set_num_threads(before)


def mutate(obj, data):
    """The real file with one value replaced, a key dropped, or the whole thing replaced."""
    obj = copy.deepcopy(obj)
    how = data.draw(st.sampled_from(["replace", "drop", "whole", "replace", "replace"]))
    if how == "whole":
        return data.draw(json_values)
    paths = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append(path + [k])
                walk(v, path + [k])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                paths.append(path + [i])
                walk(v, path + [i])
    walk(obj, [])
    path = data.draw(st.sampled_from(paths))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if how == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    return obj


def _damaged_run(tiny_run, tmp, name, data):
    run = tmp / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_run, run)
    original = json.loads((run / name).read_text())
    text = json.dumps(mutate(original, data), allow_nan=True)
    if data.draw(st.integers(0, 9)) == 0:  # now and then cut short or not JSON at all
        text = text[: data.draw(st.integers(0, len(text)))]
    (run / name).write_text(text)
    return run


def _load_and_resume(run):
    from genzoo.core import runner
    try:
        genzoo.load_run(str(run))
    except GenzooError as e:
        assert "\n" not in str(e).strip(), str(e)
    try:  # restores the checkpoint, trains nothing (stop_after=0)
        runner.resume(run, progress=False, stop_after=0)
    except GenzooError as e:
        assert "\n" not in str(e).strip(), str(e)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([ckpt.CONFIG, ckpt.TRAINER_JSON]), st.data())
def test_damaged_run_files(tiny_run, tmp_path_factory, name, data):
    _load_and_resume(_damaged_run(tiny_run, tmp_path_factory.getbasetemp(), name, data))


# -- the command line: `zoo sample` with fuzzed options ------------------------------------------

cli_values = st.one_of(st.sampled_from(NASTY), st.text(max_size=12),
                       st.integers(-2 ** 70, 2 ** 70).map(str))
sample_args = st.lists(st.one_of(
    st.tuples(st.just("--seed"), cli_values),
    st.tuples(st.just("--n"), st.one_of(st.integers(-3, 6).map(str), st.sampled_from(NASTY))),
    st.tuples(st.just("--sampler"), st.one_of(st.sampled_from(["naive", "cached"]), cli_values)),
    st.tuples(st.just("--device"), st.sampled_from(["cpu", "cuda:99", "tpu", "", "auto"])),
    st.tuples(st.just("--input"), cli_values),
    st.tuples(st.just("--show"), cli_values)), max_size=3)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(sample_args)
def test_sample_options_work_or_are_one_line(tiny_run, tmp_path_factory, pairs):
    """Whatever the options hold (sizes kept small: no --set, --n <= 6), `zoo sample` writes
    its files or says what is wrong in one line; never a traceback."""
    from click.testing import CliRunner

    from genzoo.cli import cli
    out = tmp_path_factory.mktemp("fuzz-sample") / "s"
    args = [a for pair in pairs for a in pair if "\x00" not in a]
    res = CliRunner().invoke(cli, ["sample", str(tiny_run), *args, "--out", str(out)],
                             prog_name="zoo")
    text = res.output.strip()
    assert "Traceback" not in text, text
    if res.exit_code != 0:
        assert len(text.splitlines()) == 1 and text.startswith("Error: "), text
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


# -- the slow lane: >= 10,000 inputs in all -----------------------------------------------------

@pytest.mark.slow
@SLOW
@given(set_items)
def test_set_parsing_and_planning_many(items):
    _set_and_plan(items)


@pytest.mark.slow
@SLOW
@given(st.one_of(json_values, values), st.sampled_from(ANNOTATIONS))
def test_coerce_many(value, annotation):
    _coerce(value, annotation)


@pytest.mark.slow
@SLOW
@given(registrations)
def test_plugin_registration_fields_many(reg_args):
    _register(*reg_args)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([ckpt.CONFIG, ckpt.TRAINER_JSON]), st.data())
def test_damaged_run_files_many(tiny_run, tmp_path_factory, name, data):
    _load_and_resume(_damaged_run(tiny_run, tmp_path_factory.getbasetemp(), name, data))
