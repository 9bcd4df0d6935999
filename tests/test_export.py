"""`zoo export`: ONNX checked with onnxruntime (outputs equal torch's within the stated
tolerance), torch.export programs saved, reloaded and run, Hugging Face folders that load back as
runs, and one-line refusals (a family with no deployable network, a pipeline, a used --out)."""
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli
from genzoo.core.export import ATOL, RTOL, export_run, supported_families
from genzoo.errors import ConfigError


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    from tiny import tiny
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("cgan", "lstm", "ddm", "vae-fashion", "pixelcnn"):
        out[name] = api.train(name, "quick", tiny(name, steps=2), out=root / name,
                              progress=False).path
    return out


def _close(expected: torch.Tensor, got) -> float:
    got = torch.as_tensor(got)
    assert got.shape == expected.shape
    diff = (got.float() - expected.float()).abs()
    assert torch.all(diff <= ATOL + RTOL * expected.float().abs()), float(diff.max())
    return float(diff.max())


def test_onnx_equals_torch_in_onnxruntime(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(cli, ["export", str(runs["cgan"]), "--format", "onnx",
                                 "--out", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    assert "checked:  onnxruntime" in r.output and "input     label int64" in r.output
    record = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert [t["name"] for t in record["inputs"]] == ["z", "label"]
    assert record["check"]["max_abs_diff"] <= ATOL
    # independently of the export's own check: a batch of another size, every label
    loaded = api.load_run(runs["cgan"])
    z = torch.randn(5, loaded.model.latent_dim, generator=torch.Generator().manual_seed(3))
    label = torch.arange(5) % loaded.model.num_classes
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (got,) = session.run(["image"], {"z": z.numpy(), "label": label.numpy()})
    with torch.no_grad():
        expected = loaded.model.decode(z, label)
    _close(expected, got)


@pytest.mark.parametrize("name", ["lstm", "ddm"])
def test_torch_export_program_is_saved_reloaded_and_run(runs, tmp_path, name):
    record = export_run(runs[name], "torch-export", tmp_path / "pt2")
    assert record["check"]["checked"] and (tmp_path / "pt2" / "model.pt2").is_file()
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2"))
    module, inputs, names = api.load_run(runs[name]).model.export_module()
    bigger = tuple(torch.cat([t, t], dim=1 if n in ("h", "c") else 0)
                   for n, t in zip(names["inputs"], inputs))  # batch 4 instead of 2
    with torch.no_grad():
        want = module(*bigger)
        got = program.module()(*bigger)
    want, got = (x if isinstance(x, tuple) else (x,) for x in (want, got))
    assert len(got) == len(names["outputs"])
    for w, g in zip(want, got):
        _close(w, g)


def test_hf_folder_is_a_model_card_and_loads_back(runs, tmp_path):
    out = tmp_path / "hub"
    r = CliRunner().invoke(cli, ["export", str(runs["vae-fashion"]), "--format", "hf",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"config.json", "model.safetensors", "README.md", "metrics.json",
            "samples.png"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    import yaml
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "genzoo" and meta["license"] == "mit"
    assert "vae" in meta["tags"] and meta["datasets"] == ["fashion-mnist-1k"] and meta["metrics"]
    command = json.loads((out / "config.json").read_text())["command"]
    assert command.startswith("zoo train vae-fashion ") and "--set train.steps=2" in command
    assert command in card and "![samples](samples.png)" in card
    assert "test_after_training" in json.loads((out / "metrics.json").read_text())
    # the folder is a run folder too: it samples what the run samples
    a = api.load_run(out).sample(3, seed=1).images
    b = api.load_run(runs["vae-fashion"]).sample(3, seed=1).images
    assert torch.equal(a, b)


def test_refusals_are_one_line(runs, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(runs["pixelcnn"]), "--format", "onnx"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "pixelcnn cannot export" in r.output and "supported:" in r.output
    for family in ("dcgan", "vae", "ddm", "gpt", "lstm", "classifier"):
        assert family in supported_families()
    assert "pixelcnn" not in supported_families()
    # the pixelcnn's weights still package for the Hub
    assert export_run(runs["pixelcnn"], "hf", tmp_path / "px")["file"] == "model.safetensors"
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["export", str(runs["cgan"]), "--format", "hf", "--out", str(used)])
    assert r.exit_code == 1 and "is not an earlier export" in r.output
    assert (used / "notes.txt").read_text() == "mine"
    pipe = tmp_path / "pipe"
    shutil.copytree(runs["cgan"], pipe)
    (pipe / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match="is a pipeline"):
        export_run(pipe, "onnx")
    r = CliRunner().invoke(cli, ["export", str(runs["cgan"]), "--format", "tflite"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_a_second_export_replaces_the_first(runs, tmp_path):
    out = tmp_path / "again"
    export_run(runs["vae-fashion"], "hf", out)
    (out / "stale.txt").write_text("from before")
    export_run(runs["vae-fashion"], "hf", out)
    assert not (out / "stale.txt").exists() and (out / "export.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary folder left


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcgan", "wgan-gp", "autoencoder", "gpt"])
@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_every_exporting_family(tmp_path, name, fmt):
    pytest.importorskip("onnxruntime")
    from tiny import tiny
    run = api.train(name, "quick", tiny(name, steps=1), out=tmp_path / "run", progress=False)
    record = export_run(run.path, fmt, tmp_path / "out")
    assert record["check"]["checked"] and record["check"]["max_abs_diff"] <= ATOL
