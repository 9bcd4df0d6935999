"""Pipelines of trained components (genzoo.core.pipeline / stages), on a toy two-stage model that
trains in a second: stage "enc" learns a linear autoencoder of ring points, stage "prior" a
Gaussian over its codes, computed through the frozen encoder inside its loss (so a missing
freeze would show as encoder gradients)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from genzoo import api
from genzoo.core import plugins, registry
from genzoo.core.pipeline import REFERENCE, Pipeline, Stage, sha256
from genzoo.errors import CheckpointError, ConfigError
from genzoo.family import Model, PointData, PointSample, Sampler


def load_ring(spec, cfg, split):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 512 if split == "train" else 128
    angle = torch.rand(n, generator=g) * 2 * math.pi
    x = torch.stack([2 * angle.cos(), 0.5 * angle.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)
    return PointData(x, mean=torch.zeros(2), std=torch.ones(2), name="ring2")


class Enc(Model):
    modality = "points"
    likelihood_unit = None

    @dataclass
    class Config:
        dim: int = 2
        code: int = 2

    def __init__(self, config):
        super().__init__(config)
        self.encoder = nn.Linear(config.dim, config.code)
        self.decoder = nn.Linear(config.code, config.dim)

    def loss(self, batch):
        x = batch["x"]
        return {"loss": (self.decoder(self.encoder(x)) - x).pow(2).mean()}


class Prior(Model):
    modality = "points"
    likelihood_unit = None

    @dataclass
    class Config:
        code: int = 0  # from the encoder (component_config)

    def __init__(self, config):
        super().__init__(config)
        self.mu = nn.Parameter(torch.zeros(config.code))
        self.log_std = nn.Parameter(torch.zeros(config.code))

    def loss(self, batch):
        z = self.upstream["enc"].encoder(batch["x"])  # gradients would reach enc, if not frozen
        nll = ((z - self.mu) / self.log_std.exp()).pow(2).mul(0.5).add(self.log_std).sum(1)
        return {"loss": nll.mean() + 1e-3 * z.pow(2).mean()}

    def training_step(self, batch, optimizers, ctx):
        out = super().training_step(batch, optimizers, ctx)
        enc = self.upstream["enc"]
        GRADS.append(any(p.grad is not None or p.requires_grad for p in enc.parameters()))
        MODES.append(enc.training)
        return out


GRADS: list[bool] = []
MODES: list[bool] = []


class Toy(Pipeline):
    modality = "points"
    stages = (Stage("enc", Enc, preview="decode"), Stage("prior", Prior))

    @classmethod
    def component_config(cls, name, data, upstream):
        if name == "prior":
            return {"code": upstream["enc"].config.code}
        return {}


class Decode(Sampler):
    name = "decode"

    def sample(self, model, n, generator, **_):
        z = torch.randn(n, model.enc.config.code, generator=generator)
        return PointSample(model.enc.decoder(z).detach())


class Full(Sampler):
    name = "sample"

    def sample(self, model, n, generator, **_):
        z = model.prior.mu + model.prior.log_std.exp() * torch.randn(
            n, model.prior.config.code, generator=generator)
        return PointSample(model.enc.decoder(z).detach())


TRAIN = {"batch_size": 64, "log_every": 5, "checkpoint_every": 5, "sample_every": 0, "lr": 0.02}


class ToyPlugin:
    @plugins.hookimpl
    def register_datasets(self, register):
        register("ring2", source="ring2", modality="points", loader="test_pipeline:load_ring",
                 shape=[2], summary="points on an ellipse")

    @plugins.hookimpl
    def register_families(self, register):
        register("toy", model=Toy, samplers={"sample": Full, "decode": Decode},
                 default_sampler="sample")

    @plugins.hookimpl
    def register_models(self, register):
        register("toy-ring", family="toy", dataset={"name": "ring2"},
                 config={"model": {"enc": {"code": 2}}, "train": {"enc": {"lr": 0.03}}},
                 presets={"quick": {"train": {**TRAIN, "enc": {"steps": 20},
                                              "prior": {"steps": 15, "lr": 0.05}}}})


@pytest.fixture
def toy():
    registry.reset()
    plugins.host().register_object(ToyPlugin(), "toy-plugin", source="genzoo-toy")
    GRADS.clear()
    MODES.clear()
    yield
    registry.reset()


def weights(path):
    return load_file(str(path))


def same_state(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_stages_train_in_one_run_with_a_folder_per_component(toy, tmp_path):
    run = api.train("toy-ring", progress=False, out=tmp_path / "run")
    index = json.loads((run.path / "model_index.json").read_text())
    assert index["stages"] == ["enc", "prior"] and index["family"] == "toy"
    for name, steps in (("enc", 20), ("prior", 15)):
        folder = run.path / "components" / name
        state = json.loads((folder / "trainer.json").read_text())
        assert state["step"] == steps and state["complete"]
        assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
        assert any(m.get("split") == "test" for m in map(json.loads, (folder / "metrics.jsonl")
                                                         .read_text().splitlines()))
    # no weights at the top: one stage's files never mix with another's
    assert not (run.path / "model.safetensors").exists()
    assert set(weights(run.path / "components/prior/model.safetensors")) == {"mu", "log_std"}
    assert sorted(p.name for p in (run.path / "components/enc/samples").iterdir())  # previews
    assert sorted(p.name for p in (run.path / "samples").iterdir())  # the last stage's grids
    loaded = api.load_run(run.path)
    assert isinstance(loaded.model, Toy) and loaded.model.num_params() == 6 + 6 + 4
    s = loaded.sample(32, seed=0)
    assert isinstance(s, PointSample) and s.points.shape == (32, 2)
    assert loaded.sample(32, seed=0).points.equal(s.points)
    # the prior learned: its loss on the encoder's codes fell
    logged = [json.loads(line) for line in
              (run.path / "components/prior/metrics.jsonl").read_text().splitlines()]
    train = [m["loss"] for m in logged if "split" not in m]
    assert train[-1] < train[0] - 0.2, train


def test_frozen_components_never_receive_gradients(toy, tmp_path):
    run = api.train("toy-ring", progress=False, out=tmp_path / "run")
    assert len(GRADS) == 15 and not any(GRADS) and not any(MODES)
    enc = run.path / "components/enc/model.safetensors"
    before = sha256(enc)
    api.train("toy-ring", progress=False, out=tmp_path / "again", stage="prior", source=run.path)
    assert sha256(enc) == before


@pytest.mark.parametrize("where", [("enc", 7), ("prior", 6)])
def test_resume_inside_either_stage_equals_an_uninterrupted_run(toy, tmp_path, where):
    full = api.train("toy-ring", progress=False, out=tmp_path / "full")
    part = api.train("toy-ring", progress=False, out=tmp_path / "part", stop_after=where)
    stopped = json.loads((part.path / f"components/{where[0]}/trainer.json").read_text())
    assert stopped["step"] == where[1] and not stopped["complete"]
    api.resume(part.path, progress=False)
    for name in ("enc", "prior"):
        a, b = full.path / "components" / name, part.path / "components" / name
        assert same_state(a / "model.safetensors", b / "model.safetensors"), name
        assert same_state(a / "trainer.safetensors", b / "trainer.safetensors"), name
    with pytest.raises(CheckpointError, match="is finished"):
        api.resume(part.path, progress=False)


def test_a_new_prior_trains_on_a_finished_encoder_by_reference(toy, tmp_path):
    first = api.train("toy-ring", progress=False, out=tmp_path / "first")
    second = api.train("toy-ring", "quick", {"prior.lr": 0.01}, progress=False, out=tmp_path / "second",
                       stage="prior", source=first.path)
    own = second.path / "components/enc"
    ref = json.loads((own / REFERENCE).read_text())
    assert not (own / "model.safetensors").exists()  # referenced, not copied
    assert ref["sha256"]["model.safetensors"] == sha256(first.path / "components/enc/model.safetensors")
    assert json.loads((second.path / "components/prior/trainer.json").read_text())["complete"]
    loaded = api.load_run(second.path)
    assert torch.equal(loaded.model.enc.encoder.weight,
                       api.load_run(first.path).model.enc.encoder.weight)
    # the first run's encoder changes: the second run refuses to load, in one line
    w = weights(first.path / "components/enc/model.safetensors")
    w["encoder.weight"] = w["encoder.weight"] + 1
    from safetensors.torch import save_file
    save_file(w, str(first.path / "components/enc/model.safetensors"))
    with pytest.raises(CheckpointError, match="changed since"):
        api.load_run(second.path)
    from genzoo.core.stages import describe
    assert describe(second.path)[0]["state"] == "broken"


def test_bad_stage_and_from_are_one_line_and_write_nothing(toy, tmp_path):
    first = api.train("toy-ring", progress=False, out=tmp_path / "first", stop_after=("enc", 5))
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text(json.dumps({"name": "x", "family": "toy-single"}))
    cases = [
        (dict(stage="nope", source=first.path), "no stage 'nope'.*enc, prior"),
        (dict(stage="prior"), "needs --from"),
        (dict(source=first.path), "needs --stage"),
        (dict(stage="enc", source=first.path), "first stage"),
        (dict(stage="prior", source=first.path), "'enc' of .* is at step 5 of 20"),
        (dict(stage="prior", source=tmp_path / "missing"), "no run at"),
    ]
    for kwargs, message in cases:
        out = tmp_path / "new"
        with pytest.raises((ConfigError, CheckpointError), match=message):
            api.train("toy-ring", progress=False, out=out, **kwargs)
        assert not out.exists()
    with pytest.raises(ConfigError, match="one network"):
        api.train("pixelcnn", progress=False, out=tmp_path / "n", stage="prior", source=first.path)
    assert not (tmp_path / "n").exists()


def test_overrides_route_to_stages(toy):
    from genzoo.core.factory import plan
    p = plan("toy-ring", "quick", {"steps": 3, "prior.lr": 0.5, "enc.code": 3})
    assert p.stages["enc"]["train"].steps == 3 and p.stages["prior"]["train"].steps == 3
    assert plan("toy-ring", "quick").stages["enc"]["train"].steps == 20
    # the entry's enc.lr and the preset's enc.steps merge (a preset refines a stage)
    assert p.stages["prior"]["train"].lr == 0.5 and p.stages["enc"]["train"].lr == 0.03
    assert p.stages["enc"]["model"] == {"code": 3}
    with pytest.raises(ConfigError, match="unknown key 'bogus' for stage 'enc'"):
        plan("toy-ring", "quick", {"enc.bogus": 1})
    with pytest.raises(ConfigError, match="unknown config key 'codez'.*did you mean code"):
        plan("toy-ring", "quick", {"codez": 1})
    with pytest.raises(ConfigError, match="'code' exists in stages enc and prior; write enc.code"):
        plan("toy-ring", "quick", {"code": 1})
    m = api.create_model("toy-ring", **{"enc.code": 3})
    assert isinstance(m, Toy) and m.prior.config.code == 3 and m.num_params() == (6 + 3) + (6 + 2) + 6


def test_cli_info_lists_components_and_refuses_bad_stage(toy, tmp_path):
    from genzoo.cli import cli
    run = api.train("toy-ring", progress=False, out=tmp_path / "run")
    res = CliRunner().invoke(cli, ["info", str(run.path)])
    assert res.exit_code == 0, res.output
    assert "enc" in res.output and "prior" in res.output and "finished" in res.output
    res = CliRunner().invoke(cli, ["train", "toy-ring", "--stage", "bogus", "--from",
                                   str(run.path), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "no stage 'bogus'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_eval_and_bench_see_every_component(toy, tmp_path):
    from genzoo.core.bench import bench_model
    from genzoo.core.metrics import evaluate
    run = api.train("toy-ring", progress=False, out=tmp_path / "run")
    assert json.loads((run.path / "config.json").read_text())["params"] == 6 + 6 + 4
    ev = evaluate(str(run.path), metrics=("loss",))
    logged = [json.loads(line) for line in
              (run.path / "components/enc/metrics.jsonl").read_text().splitlines()]
    test = [m for m in logged if m.get("split") == "test"][-1]
    assert {"enc/loss", "prior/loss"} <= set(ev)
    assert ev["enc/loss"] == pytest.approx(test["loss"], rel=1e-5)  # the same split and weights
    records = bench_model("toy-ring", preset="quick", repeats=1, steps_per_repeat=2, n_samples=4)
    names = {(r["model"], r["metric"]) for r in records}
    assert ("toy-ring/enc", "train_throughput") in names
    assert ("toy-ring/prior", "train_throughput") in names
    assert ("toy-ring", "sample_latency") in names
    from_run = bench_model(None, run=str(run.path), repeats=1, steps_per_repeat=2, n_samples=4)
    assert any(r["model"] == "toy-ring/prior" for r in from_run)
