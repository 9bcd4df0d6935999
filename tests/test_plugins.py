"""Plugins through real entry points: the README's example, a broken one and a clashing one are
installed with pip into a temporary site dir; the zoo must list the good one, isolate the others."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import genzoo
from genzoo.cli import cli
from genzoo.core import plugins, registry
from genzoo.errors import RegistryError

ROOT = Path(__file__).resolve().parents[1]

# the only tests that load entry-point plugins (tests/conftest.py keeps them out elsewhere)
pytestmark = pytest.mark.usefixtures("third_party_plugins")


def readme_plugin_files() -> dict[str, str]:
    """The files of the README's "Write a plugin" example, exactly as a user would copy them."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Write a plugin", 1)[1].split("\n## ", 1)[0]
    files = {}
    for m in re.finditer(r"^`(genzoo-pixels/[^`]+)`.*?\n```\w*\n(.*?)```", section, re.S | re.M):
        files[m.group(1)] = m.group(2)
    return files


def write_dist(base: Path, name: str, module: str, code: str) -> Path:
    pkg = base / name
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text("")
    (pkg / module / "plugin.py").write_text(textwrap.dedent(code))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.0.1"
        [project.entry-points.genzoo]
        {module} = "{module}.plugin"
        """))
    return pkg


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("dists")
    files = readme_plugin_files()
    assert set(files) == {"genzoo-pixels/pyproject.toml", "genzoo-pixels/genzoo_pixels/plugin.py",
                          "genzoo-pixels/genzoo_pixels/model.py"}
    for rel, content in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(content)
    (base / "genzoo-pixels/genzoo_pixels/__init__.py").write_text("")
    broken = write_dist(base, "genzoo-broken", "genzoo_broken", """
        raise ImportError("this plugin needs libfoo, which is not installed")
        """)
    clash = write_dist(base, "genzoo-clash", "genzoo_clash", """
        import genzoo

        @genzoo.hookimpl
        def register_models(register):
            register("pixelcnn", family="pixelcnn", summary="a second pixelcnn")
        """)
    target = base / "site"
    # --no-deps: genzoo is already importable; --no-build-isolation: no index needed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target),
                    str(base / "genzoo-pixels"), str(broken), str(clash)],
                   check=True, capture_output=True, text=True)
    return target


@pytest.fixture
def installed(site, monkeypatch, third_party_plugins):
    monkeypatch.syspath_prepend(str(site))
    registry.reset()
    yield site
    registry.reset()


def zoo(site: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    return subprocess.run([sys.executable, "-m", "genzoo", *args], capture_output=True, text=True,
                          env=e, timeout=120)


def test_readme_plugin_appears_in_zoo_list_from_its_distribution(site):
    res = zoo(site, "list", "--json")
    assert res.returncode == 0, res.stderr
    entries = {e["name"]: e for e in json.loads(res.stdout)}
    assert entries["pixels-fashion"]["source"] == "genzoo-pixels"
    assert entries["pixels-fashion"]["family"] == "pixels"
    # the clashing plugin is out, the built-in pixelcnn is still the built-in one
    assert entries["pixelcnn"]["source"] == "built-in"


def test_broken_and_clashing_plugins_are_isolated_and_reported(site):
    res = zoo(site, "plugins", "--json")
    assert res.returncode == 0, res.stderr
    infos = {i["name"]: i for i in json.loads(res.stdout)}
    assert infos["pixels"]["status"] == "ok"
    assert infos["genzoo_broken"]["status"] == "error"
    assert "libfoo" in infos["genzoo_broken"]["error"]
    assert infos["genzoo_clash"]["status"] == "error"
    assert "duplicate model name 'pixelcnn'" in infos["genzoo_clash"]["error"]
    assert "built-in" in infos["genzoo_clash"]["error"] and "genzoo-clash" in infos["genzoo_clash"]["error"]
    assert zoo(site, "--help").returncode == 0


def test_strict_mode_and_allowlist(site):
    res = zoo(site, "list", "--json", env={"GENZOO_STRICT_PLUGINS": "1"})
    assert res.returncode != 0 and "libfoo" in res.stderr
    res = zoo(site, "list", "--json", env={"GENZOO_LOAD_PLUGINS": "genzoo-pixels"})
    names = {e["name"] for e in json.loads(res.stdout)}
    assert "pixels-fashion" in names
    res = zoo(site, "list", "--json", env={"GENZOO_LOAD_PLUGINS": ""})
    assert "pixels-fashion" not in {e["name"] for e in json.loads(res.stdout)}


def test_plugin_model_trains_and_samples_like_a_builtin(installed, tmp_path):
    run = genzoo.train("pixels-fashion", out=str(tmp_path / "run"), **{"train.steps": 40,
                                                                     "sample_every": 0})
    losses = [m["loss"] for m in run.metrics() if "split" not in m]
    assert losses[-1] < losses[0]
    images = genzoo.load_run(str(run.path)).sample(4, seed=0).images
    assert images.shape == (4, 1, 16, 16)
    assert 0 <= float(images.min()) and float(images.max()) <= 1


def test_dist_prefixed_name_and_duplicate_error_names_both_sources(monkeypatch):
    class A:
        @plugins.hookimpl
        def register_models(self, register):
            register("same", family="pixelcnn")

    host = plugins.PluginHost()
    host.register_object(A(), "first", source="dist-a")
    host.register_object(A(), "second", source="dist-b")
    reg = registry.Registry(host)
    assert reg.get("dist-a:same").plugin == "dist-a"
    assert "duplicate model name 'same': registered by dist-a and by dist-b" in host.infos["second"].error
    monkeypatch.setenv("GENZOO_STRICT_PLUGINS", "1")
    host2 = plugins.PluginHost()
    host2.register_object(A(), "first", source="dist-a")
    host2.register_object(A(), "second", source="dist-b")
    with pytest.raises(RegistryError, match="registered by dist-a and by dist-b"):
        registry.Registry(host2)


@pytest.mark.parametrize("args", [["list"], ["--help"], ["info", "pixelcnn"], ["list", "--json"]])
def test_listing_imports_neither_torch_nor_any_family(args):
    # what keeps `zoo list` fast is what it does not import: the catalogue names family code
    # lazily, so a regression shows up here as a module name, not as a flaky timing
    code = ("import sys\nfrom genzoo.cli import main\nsys.argv = ['zoo', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('genzoo.plugins.'))\n"
            "print('IMPORTED', heavy)")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "IMPORTED []"


def test_unknown_model_suggests_close_matches():
    res = CliRunner().invoke(cli, ["info", "pixelcn"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("Error: unknown model 'pixelcn'; did you mean 'pixelcnn'")
    assert len(res.output.strip().splitlines()) == 1


def test_plugin_can_add_a_sampler_to_a_builtin_family_and_a_command(monkeypatch):
    import click

    from genzoo.plugins.pixelcnn import CachedSampler

    class Greedy(CachedSampler):
        name = "greedy"

        def __init__(self, **options):
            super().__init__(**{"top_k": 1, **options})

    class P:
        @plugins.hookimpl
        def register_samplers(self, register):
            register("pixelcnn", "greedy", Greedy)

        @plugins.hookimpl
        def register_commands(self, cli):
            @cli.command("hello")
            def hello():
                click.echo("hello from a plugin")

    host = plugins.host()
    host.register_object(P(), "greedy-plugin", source="genzoo-greedy")
    reg = registry.registry()
    assert reg.get_family("pixelcnn").sampler_class("greedy") is Greedy
    import genzoo.cli as zcli
    zcli._load_plugin_commands(zcli.cli)
    try:
        assert CliRunner().invoke(zcli.cli, ["hello"]).output.strip() == "hello from a plugin"
    finally:
        zcli.cli.commands.pop("hello", None)
