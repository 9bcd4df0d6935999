"""`zoo new-plugin NAME`: the package it writes pip-installs (through the same machinery as the
README's plugin example in test_plugins.py: pip --target, no index, no build isolation), shows
in `zoo list` from its own distribution and trains with `zoo run`; bad names are one line."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from genzoo.cli import cli

# entry points are loaded here, as in test_plugins.py (tests/conftest.py keeps them out elsewhere)
pytestmark = pytest.mark.usefixtures("third_party_plugins")


def test_the_scaffold_installs_lists_and_trains(tmp_path):
    from test_plugins import zoo
    pkg = tmp_path / "pkg"
    r = CliRunner().invoke(cli, ["new-plugin", "tiny-pixels", "--out", str(pkg)])
    assert r.exit_code == 0, r.output
    files = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    assert files == ["README.md", "genzoo_tiny_pixels/__init__.py", "genzoo_tiny_pixels/model.py",
                     "genzoo_tiny_pixels/plugin.py", "pyproject.toml",
                     "tests/test_genzoo_tiny_pixels.py"]
    for code in ("model.py", "plugin.py"):  # the public SDK only
        imports = [line for line in (pkg / "genzoo_tiny_pixels" / code).read_text().splitlines()
                   if line.startswith(("import ", "from "))]
        assert all("genzoo" not in line or line.startswith("from genzoo.family import")
                   for line in imports), imports
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(pkg)],
                   check=True, capture_output=True, text=True)
    res = zoo(site, "list", "--json")
    assert res.returncode == 0, res.stderr
    entries = {e["name"]: e for e in json.loads(res.stdout)}
    assert entries["tiny-pixels-fashion"]["source"] == "genzoo-tiny-pixels"
    assert entries["tiny-pixels-fashion"]["family"] == "tiny-pixels"
    res = zoo(site, "run", "tiny-pixels-fashion", "--steps", "20", "--n", "4", "--no-progress",
              "--set", "train.log_every=5",
              "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert list((tmp_path / "run" / "samples").glob("final*.png"))
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line) and "split" not in json.loads(line)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name, message", [
    ("My_Plugin", "is not valid"),
    ("9lives", "is not valid"),
    ("a--b", "is not valid"),
    ("x" * 41, "is not valid"),
    ("pixelcnn", "is taken: a family of that name"),
    ("cnn", "is taken: its model cnn-fashion exists"),
])
def test_bad_names_are_one_line(tmp_path, name, message):
    r = CliRunner().invoke(cli, ["new-plugin", name, "--out", str(tmp_path / "p")])
    assert r.exit_code == 1 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_an_existing_folder_is_refused(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep")
    r = CliRunner().invoke(cli, ["new-plugin", "ok-name", "--out", str(used)])
    assert r.exit_code == 1 and "not an empty folder" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert sorted(p.name for p in used.iterdir()) == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(cli, ["new-plugin", "ok-name", "--out", str(empty)]).exit_code == 0
