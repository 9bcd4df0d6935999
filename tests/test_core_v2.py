"""Core v2: a plugin adds a data source and a family with run artifacts without touching core;
samplers declare their inputs and grad needs; every modality has a writer; layering holds."""
import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import plugins, registry
from genzoo.core.data import PointData
from genzoo.core.model import Model
from genzoo.core.sample import PointSample, TextSample, preview, write
from genzoo.core.sampler import Sampler, draw
from genzoo.core.text import Tokenizer
from genzoo.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent.parent


# -- a plugin written against core v2 only ------------------------------------------------------

def load_ring(spec, cfg, split):
    """A data source core knows nothing about: points on a noisy ring."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    angle = torch.rand(cfg.points, generator=g) * 2 * math.pi
    r = 2 + 0.1 * torch.randn(cfg.points, generator=g)
    return PointData(torch.stack([r * angle.cos(), r * angle.sin()], 1), name=spec.name)


@dataclass
class GaussConfig:
    dims: int = 2


class Gauss(Model):
    """A diagonal Gaussian; keeps the data's mean as an artifact and counts training steps in a
    JSON artifact, so both kinds of artifact must survive save, load and resume."""

    Config = GaussConfig
    modality = "points"
    likelihood_unit = "point"

    def __init__(self, config):
        super().__init__(config)
        self.mu = nn.Parameter(torch.zeros(config.dims))
        self.log_std = nn.Parameter(torch.zeros(config.dims))
        self.data_mean = None
        self.seen = 0

    def setup(self, data):
        self.data_mean = data.x.mean(0)

    def artifacts(self):
        return {"data_mean": self.data_mean, "seen": {"examples": self.seen}}

    def load_artifacts(self, artifacts):
        self.data_mean = artifacts["data_mean"]
        self.seen = artifacts["seen"]["examples"]

    def log_prob(self, batch):
        d = torch.distributions.Normal(self.mu, self.log_std.exp())
        return d.log_prob(batch["x"]).sum(1)

    def loss(self, batch):
        if self.training:
            self.seen += batch["x"].shape[0]
        return {"loss": -self.log_prob(batch).mean()}


class GaussSampler(Sampler):
    name = "gauss"
    inputs = {"noise": "a fixed (n, 2) noise tensor"}
    shows = {"mean": "the data mean kept with the run"}

    def sample(self, model, n, generator, noise=None, show=()):
        eps = noise if noise is not None else torch.randn(n, 2, generator=generator)
        out = PointSample(model.mu.detach() + model.log_std.detach().exp() * eps)
        if "mean" in show:
            out.extras["mean"] = f"data mean {model.data_mean.tolist()}"
        return out


class GradSampler(Sampler):
    """Needs input gradients, like Langevin dynamics."""

    name = "grad"
    needs_grad = True

    def sample(self, model, n, generator, **_):
        assert torch.is_grad_enabled() and not model.mu.requires_grad
        x = torch.zeros(n, 2, requires_grad=True)
        for _ in range(20):
            (g,) = torch.autograd.grad(model.log_prob({"x": x}).sum(), x)
            x = (x + 0.1 * g).detach().requires_grad_(True)
        return PointSample(x.detach())


class RingPlugin:
    @plugins.hookimpl
    def register_datasets(self, register):
        register("ring", source="ring", modality="points", loader="test_core_v2:load_ring",
                 shape=[2], summary="points on a ring")

    @plugins.hookimpl
    def register_families(self, register):
        register("gauss", model=Gauss, samplers={"gauss": GaussSampler, "grad": GradSampler},
                 default_sampler="gauss")

    @plugins.hookimpl
    def register_models(self, register):
        register("gauss-ring", family="gauss", dataset={"name": "ring", "points": 512},
                 presets={"quick": {"train": {"steps": 30, "lr": 0.05, "batch_size": 64,
                                              "sample_every": 0, "log_every": 10}}})


@pytest.fixture
def ring_plugin():
    registry.reset()
    plugins.host().register_object(RingPlugin(), "ring-plugin", source="genzoo-ring")
    yield
    registry.reset()


def test_plugin_data_source_and_artifacts_round_trip(ring_plugin, tmp_path):
    run = api.train("gauss-ring", progress=False, out=tmp_path / "run")
    assert (run.path / "artifacts.safetensors").exists() and (run.path / "artifacts.json").exists()
    loaded = api.load_run(run.path)
    assert loaded.model.seen == 30 * 64
    assert loaded.model.data_mean.shape == (2,) and loaded.model.data_mean.abs().max() < 0.5
    assert float(loaded.model.log_std.detach().exp().mean()) > 1.0  # learned the ring's spread (radius 2)
    s = loaded.sample(8, seed=0)
    assert isinstance(s, PointSample) and s.points.shape == (8, 2)
    ev = __import__("genzoo.core.metrics", fromlist=["evaluate"]).evaluate(str(run.path))
    assert "nats_per_point" in ev and "bits_per_dim" not in ev


def test_resume_restores_artifacts_bit_exactly(ring_plugin, tmp_path):
    full = api.train("gauss-ring", progress=False, out=tmp_path / "full")
    part = api.train("gauss-ring", progress=False, out=tmp_path / "part", stop_after=10)
    assert api.load_run(part.path, ema=False).model.seen == 10 * 64
    api.resume(part.path, progress=False)
    a, b = api.load_run(full.path).model, api.load_run(part.path).model
    assert torch.equal(a.mu, b.mu) and torch.equal(a.log_std, b.log_std) and a.seen == b.seen


def test_missing_artifacts_are_a_clear_checkpoint_error(ring_plugin, tmp_path):
    run = api.train("gauss-ring", progress=False, out=tmp_path / "run")
    (run.path / "artifacts.safetensors").unlink()
    with pytest.raises(CheckpointError, match="artifacts"):
        api.load_run(run.path)


def test_samplers_declare_inputs_shows_and_grad_needs(ring_plugin, tmp_path):
    run = api.train("gauss-ring", progress=False, out=tmp_path / "run")
    loaded = api.load_run(run.path)
    noise = torch.zeros(3, 2)
    s = loaded.sample(3, inputs={"noise": noise})
    assert torch.allclose(s.points, loaded.model.mu.detach().expand(3, 2))
    with pytest.raises(ConfigError, match="input 'prompt' given, but sampler 'gauss' of family 'gauss' takes inputs: noise"):
        loaded.sample(3, inputs={"prompt": "hello"})
    with pytest.raises(ConfigError, match="has no chain to show .*it can show: mean"):
        loaded.sample(3, inputs={"show": ("chain",)})
    shown = loaded.sample(3, inputs={"show": ("mean",)})
    assert "data mean" in shown.extras["mean"]
    # a gradient sampler climbs log p toward the mean, and leaves no gradient in the network
    up = loaded.sample(4, sampler="grad")
    assert (up.points - loaded.model.mu.detach()).norm(dim=1).max() < 1.0
    assert all(p.grad is None and p.requires_grad for p in loaded.model.parameters())
    paths = loaded.write(up, tmp_path / "climb")
    assert paths[0].suffix == ".png" and paths[0].stat().st_size > 1000
    # the CLI maps --show onto the same declaration
    res = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "4", "--show", "mean",
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "data mean" in res.output and (tmp_path / "cli-mean.txt").exists()
    res = CliRunner().invoke(cli, ["sample", str(run.path), "--label", "1"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "unconditional" in res.output


def test_draw_runs_without_grad_unless_declared():
    class Probe(Sampler):
        name = "probe"

        def sample(self, model, n, generator, **_):
            assert not torch.is_grad_enabled() and not model.training
            return PointSample(torch.zeros(n, 2))

    model = Gauss(GaussConfig()).train()
    draw(model, Probe(), 2, torch.Generator())
    assert model.training  # restored


def test_text_and_points_writers(tmp_path):
    t = TextSample(["recipe for soup | boil water .", "recipe for tea"], prompt="recipe for")
    paths = write(t, tmp_path / "t")
    assert [p.suffix for p in paths] == [".txt", ".jsonl"]
    rows = [json.loads(line) for line in paths[1].read_text().splitlines()]
    assert rows[0]["text"].startswith("recipe for soup") and rows[1]["prompt"] == "recipe for"
    assert preview(t)[0].startswith("[0] recipe for soup")
    ref = PointData(torch.randn(100, 2))
    (png,) = write(PointSample(torch.randn(50, 2)), tmp_path / "p", reference=ref)
    from PIL import Image
    with Image.open(png) as im:
        assert im.width >= 512


def test_word_tokenizer_like_the_book():
    tok = Tokenizer.build(["Recipe for Soup | Boil the water, then add salt.",
                           "Recipe for Tea | Boil the water."], "word", max_vocab=8)
    assert tok.vocab[:2] == ["", "[UNK]"] and len(tok) == 8
    assert tok.split("Boil, then!") == ["boil", ",", "then", "!"]
    ids = tok.encode("boil the soup quickly")
    assert tok.unk_id in ids  # words past the cap are [UNK]
    again = Tokenizer.from_json(json.loads(json.dumps(tok.to_json())))
    assert again == tok and again.encode("recipe for tea") == tok.encode("recipe for tea")
    assert tok.decode(tok.encode("boil the water .")) == "boil the water."
    with pytest.raises(ConfigError, match="only unknown words"):
        tok.encode_prompt("zebra quantum")
    char = Tokenizer.build(["abc"], "char")
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        char.encode_prompt("abz")


def test_bad_starts_leave_nothing_behind(tmp_path):
    for overrides in ({"lr": "nan"}, {"log_every": 0}, {"grad_clip": -1}, {"limit": -1},
                      {"data.name": "tinyshakespeare"}, {"test_fraction": 1.5}):
        with pytest.raises(genzoo.GenzooError):
            api.train("pixelcnn", overrides={"steps": 2, **overrides}, out=tmp_path / "run",
                      progress=False)
        assert not (tmp_path / "run").exists(), overrides
    res = CliRunner().invoke(cli, ["train", "pixelcnn", "--data", "tinyshakespeare", "--steps", "1"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "models image data, but dataset 'tinyshakespeare' is text" in res.output


def test_core_never_imports_api_or_a_family():
    for path in (ROOT / "genzoo" / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                assert not n.startswith(("genzoo.api", "genzoo.plugins", "genzoo.commands")), \
                    f"{path.name} imports {n}"


def test_tables_stay_readable_when_piped():
    res = CliRunner().invoke(cli, ["list"])  # CliRunner's stdout is not a terminal
    assert res.exit_code == 0
    for e in genzoo.registry().list():
        assert e.name in res.output  # names are never folded across lines


def test_plot_draws_one_axis_per_quantity(tmp_path):
    run = api.train("pixelcnn", overrides={"steps": 4, "log_every": 1, "sample_every": 0,
                                           "batch_size": 8, "blocks": 1, "filters": 8},
                    out=tmp_path / "run", progress=False)
    res = CliRunner().invoke(cli, ["plot", str(run.path), "--out", str(tmp_path / "m.png")])
    assert res.exit_code == 0, res.output
    from PIL import Image
    with Image.open(tmp_path / "m.png") as im:
        assert im.width > 800  # loss, nll, bits_per_dim side by side


def test_cosine_schedule_decays_to_its_floor():
    from genzoo.core.trainer import TrainConfig, lr_factor, validate_train
    cfg = TrainConfig(schedule="cosine", warmup_steps=10, lr_floor=0.1)
    assert lr_factor(cfg, 0, 110) == pytest.approx(0.1)  # warm-up from lr / 10
    assert lr_factor(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_factor(cfg, 60, 110) == pytest.approx(0.55)
    assert lr_factor(cfg, 110, 110) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="lr_floor"):
        validate_train(TrainConfig(lr_floor=1.5))


def test_save_grid_and_output_stems_keep_a_dot_inside_the_name(tmp_path):
    """A writer's own extension names the stem (g.png -> g); any other dot is the name's
    (r0.5-grid -> r0.5-grid.png, where with_suffix("") wrote r0.png)."""
    from genzoo.core.sample import output_stem
    assert output_stem("a/grid.png") == Path("a/grid")
    assert output_stem("a/t0.8-grid") == Path("a/t0.8-grid")
    images = torch.rand(4, 1, 8, 8)
    assert api.save_grid(images, tmp_path / "g.png") == tmp_path / "g.png"
    path = api.save_grid(images, tmp_path / "r0.5-grid")
    assert path == tmp_path / "r0.5-grid.png" and path.stat().st_size > 0
    assert not (tmp_path / "r0.png").exists()
