"""GAN families (dcgan, wgan-gp, cgan): gradient penalty, networks, training step, samplers,
stability guards, resume, CLI errors. Tiny sizes: the whole file runs in well under a minute."""
import json

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core.checkpoint import load_tensors
from genzoo.core.trainer import StepContext, TrainConfig
from genzoo.errors import ConfigError, DataError, TrainingDiverged
from genzoo.nn.gan import gradient_penalty
from genzoo.plugins.gan import (CGAN, CGANConfig, DCGAN, DCGANConfig, WGANGP, WGANGPConfig,
                                PriorSampler, stage_filters)
from tiny import tiny as tiny_config  # the module-scoped fixture below cannot take `tiny`


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per family (4 steps, a grid at steps 2 and 4), shared by the
    sampling and CLI tests."""
    tmp = tmp_path_factory.mktemp("gan-runs")
    return {name: api.train(name, "quick", tiny_config(name, **{"train.sample_every": 2}),
                            out=tmp / name, progress=False)
            for name in ("dcgan", "wgan-gp", "cgan")}


# -- gradient penalty -------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_is_known():
    # C(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever alpha is
    w = torch.zeros(1, 2, 3, 3)
    w[0, 0, 0, 0], w[0, 1, 2, 1] = 2.0, 5 ** 0.5  # ||w|| = sqrt(4 + 5) = 3
    w.requires_grad_(True)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx(4.0, abs=1e-5)
    # create_graph: the penalty trains the critic; d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    (g,) = torch.autograd.grad(gp, w)
    assert torch.allclose(g, 2 * (3 - 1) * w.detach() / 3, atol=1e-5)


def test_gradient_penalty_of_a_quadratic_critic_at_a_point():
    # C(x) = ||x||^2 / 2 has gradient x; with real == fake == x the points are x itself
    x = torch.zeros(3, 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    gp = gradient_penalty(lambda v: 0.5 * (v ** 2).flatten(1).sum(1), x, x.clone())
    assert gp.item() == pytest.approx(((1 - 1) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2) / 3)


# -- networks and configs ---------------------------------------------------------------------

def test_book_stage_filters_and_shapes():
    assert stage_filters(DCGANConfig()) == [64, 128, 256, 512]
    assert stage_filters(CGANConfig()) == [64, 128, 128, 128]  # the book's cgan critic
    torch.manual_seed(0)
    m = DCGAN(DCGANConfig(image_size=16, filters=4, z_dim=5)).eval()
    z = m.sample_latent(3, torch.Generator().manual_seed(0))
    x = m.decode(z)
    assert x.shape == (3, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert m.score(x * 2 - 1).shape == (3,)
    assert m.latent_dim == 5 and not hasattr(m, "encode")  # generators have no encoder


def test_critic_has_no_batch_norm_but_the_dcgan_discriminator_does():
    has_bn = lambda mod: any(isinstance(x, torch.nn.BatchNorm2d) for x in mod.modules())  # noqa: E731
    assert has_bn(DCGAN(DCGANConfig(image_size=16)).discriminator)
    assert not has_bn(WGANGP(WGANGPConfig(image_size=16)).critic)
    assert not has_bn(CGAN(CGANConfig(image_size=16)).critic)


def test_upsample_switch_replaces_transposed_convs():
    m = DCGAN(DCGANConfig(image_size=32, filters=4, upsample="resize"))
    kinds = {type(x) for x in m.generator.modules()}
    assert torch.nn.Upsample in kinds
    assert sum(isinstance(x, torch.nn.ConvTranspose2d) for x in m.generator.modules()) == 1  # 1x1 -> 4x4
    assert m.decode(torch.randn(2, 100)).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("overrides, message", [
    ({"critic_steps": 0}, "critic_steps must be >= 1"),
    ({"image_size": 28}, "power of two"),
    ({"gp_weight": -1}, "gp_weight"),
])
def test_bad_config_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        genzoo.create_model("wgan-gp", **overrides)


def test_cgan_takes_its_classes_from_the_data():
    assert genzoo.create_model("cgan").num_classes == 8  # twemoji's categories
    assert genzoo.create_model("cgan-celeba").num_classes == 2  # a binary attribute
    from genzoo.core.data import ImageData
    unlabelled = ImageData(torch.rand(4, 3, 16, 16), name="folder")
    with pytest.raises(DataError, match="data.label"):
        CGAN.config_from_data(unlabelled)


# -- training step ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls, cfg, keys", [
    (DCGAN, DCGANConfig(image_size=16, filters=4, z_dim=4), {"d_loss", "g_loss", "d_real_acc"}),
    (WGANGP, WGANGPConfig(image_size=16, filters=4, z_dim=4, critic_steps=3),
     {"c_loss", "g_loss", "wasserstein", "gp"}),
    (CGAN, CGANConfig(image_size=16, filters=4, z_dim=4, num_classes=3), {"wasserstein", "gp"}),
])
def test_training_step_updates_both_players(cls, cfg, keys):
    torch.manual_seed(0)
    m = cls(cfg)
    opts = m.configure_optimizers(TrainConfig(lr=1e-3, betas=(0.5, 0.9)))
    g0 = [p.clone() for p in m.generator.parameters()]
    d0 = [p.clone() for p in m.adversary.parameters()]
    batch = {"x": torch.rand(6, cfg.channels, 16, 16), "y": torch.tensor([0, 1, 2, 0, 1, 2])}
    out = m.training_step(batch, opts, StepContext(torch.device("cpu"), "none", None))
    assert {"loss"} | keys <= set(out) and torch.isfinite(out["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()) if a.ndim > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, m.adversary.parameters()) if a.ndim > 1)
    # alternating updates: critic_steps critic steps per generator step
    d_steps = getattr(cfg, "critic_steps", 1)
    state = lambda o: next(iter(o.state.values()))["step"]  # noqa: E731
    assert int(state(opts[m.critic_name])) == d_steps and int(state(opts["generator"])) == 1
    assert all(p.requires_grad for p in m.adversary.parameters())  # unfrozen after the G step


def test_bench_counts_flops_through_the_gradient_penalty():
    from genzoo.core.bench import train_flops
    m = WGANGP(WGANGPConfig(image_size=16, filters=4, z_dim=4))
    opts = m.configure_optimizers(TrainConfig())
    batch = {"x": torch.rand(2, 3, 16, 16)}
    assert train_flops(m, batch, opts, StepContext(torch.device("cpu"), "none", None)) > 0


def test_samples_move_toward_the_data(tmp_path):
    """A short seeded DCGAN run on 16x16 digits: the distance between the mean generated image
    and the mean training image (per-pixel L1) must shrink well below the untrained generator's."""
    from genzoo.core.data import DataConfig, load
    over = {"data.name": "mnist-5k", "data.size": 16, "model.filters": 16, "model.max_filters": 32,
            "model.z_dim": 16, "train.batch_size": 32, "train.steps": 80, "train.lr": 1e-3,
            "train.sample_every": 0, "train.log_every": 50}
    data_mean = load(DataConfig(name="mnist-5k", size=16, channels=1)).images().mean(0)

    def distance(model):
        x = PriorSampler().sample(model.eval(), 256, torch.Generator().manual_seed(1))
        return float((x.mean(0) - data_mean).abs().mean())

    torch.manual_seed(0)
    before = distance(genzoo.create_model("dcgan", **over))
    run = api.train("dcgan", "quick", over, out=tmp_path / "digits", progress=False)
    after = distance(api.load_run(run.path).model)
    print(f"mean-image L1 distance: untrained {before:.4f}, trained {after:.4f}")
    assert after < 0.5 * before


# -- runs: monitoring, resume, NaN stop -------------------------------------------------------

def test_run_logs_both_losses_and_writes_grids(runs):
    for name, keys in (("dcgan", {"d_loss", "g_loss"}), ("wgan-gp", {"c_loss", "g_loss", "wasserstein"})):
        run = runs[name]
        train_rows = [m for m in run.metrics() if "split" not in m]
        assert keys | {"loss"} <= set(train_rows[-1])
        assert (run.path / "loss.png").exists()
        assert len(list(run.samples_dir.glob("step_*.png"))) >= 2


@pytest.mark.parametrize("name", ["dcgan", "cgan"])
def test_resume_reaches_the_same_weights(tmp_path, tiny, name):
    whole = api.train(name, "quick", tiny(name, steps=6), out=tmp_path / "whole", progress=False)
    half = api.train(name, "quick", tiny(name, steps=6), out=tmp_path / "half", progress=False,
                     stop_after=3)
    api.resume(half.path, progress=False)
    a, b = load_tensors(whole.weights_path), load_tensors(half.weights_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch, tiny):
    real_step = DCGAN.training_step

    def poisoned(self, batch, optimizers, ctx):
        out = real_step(self, batch, optimizers, ctx)
        if ctx.step >= 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DCGAN, "training_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint \(step 4\)"):
        api.train("dcgan", "quick", tiny("dcgan", steps=12, **{"train.checkpoint_every": 2,
                                                               "train.log_every": 1}),
                  out=tmp_path / "nan", progress=False)
    weights = load_tensors(tmp_path / "nan" / "model.safetensors")
    assert all(torch.isfinite(t.float()).all() for t in weights.values())
    assert json.loads((tmp_path / "nan" / "trainer.json").read_text())["step"] == 4


# -- sampling ---------------------------------------------------------------------------------

def test_prior_sampler_is_seeded_and_truncates(runs):
    loaded = api.load_run(runs["wgan-gp"].path)
    a, b = loaded.sample(4, seed=3).images, loaded.sample(4, seed=3).images
    assert torch.equal(a, b) and not torch.equal(a, loaded.sample(4, seed=4).images)
    s = PriorSampler(truncation=0.5)
    z = s.latent(loaded.model, 200, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5
    with pytest.raises(ConfigError, match="temperature"):
        PriorSampler(temperature=0)
    # sampling a model mid-training uses, and leaves, its batch-norm running statistics
    model = loaded.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(PriorSampler().sample(model, 4, torch.Generator().manual_seed(3)), a)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cgan_label_and_label_grid(runs):
    loaded = api.load_run(runs["cgan"].path)
    model, k = loaded.model, loaded.model.num_classes
    assert k == 8
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # --label L: every image conditioned on L
    z = PriorSampler().latent(model, 5, g())
    assert torch.allclose(PriorSampler().sample(model, 5, g(), label=3), model.decode(z, 3))
    # no label: the same z under each label in turn
    grid = PriorSampler().sample(model, 2 * k, g())
    z = PriorSampler().latent(model, 2, g())
    expected = model.decode(z.repeat_interleave(k, 0), torch.arange(2 * k) % k)
    assert torch.allclose(grid, expected)
    with pytest.raises(ConfigError, match=r"valid labels are 0\.\.7 \(0=Activities"):
        loaded.sample(2, inputs={"label": 8})
    with pytest.raises(ConfigError, match="unconditional"):
        api.load_run(runs["dcgan"].path).sample(2, inputs={"label": 0})


def test_interpolation_works_on_a_gan_run(runs, tmp_path):
    from genzoo.nn import latent
    model = api.load_run(runs["dcgan"].path).model
    z0, z1 = latent.endpoints(model, 2, torch.Generator().manual_seed(0))
    grid = latent.interpolation_grid(model, z0, z1, steps=5)
    assert grid.shape == (2 * 2 * 5, 1, 16, 16)
    result = CliRunner().invoke(cli, ["interpolate", str(runs["cgan"].path), "--pairs", "2",
                                      "--steps", "4", "--out", str(tmp_path / "i.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "i.png").exists()


# -- CLI errors -------------------------------------------------------------------------------

def _one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_label_out_of_range(runs):
    line = _one_line_error(CliRunner().invoke(cli, ["sample", str(runs["cgan"].path), "--label", "99"]))
    assert "label 99" in line and "0..7" in line


def test_cli_label_on_an_unconditional_run(runs):
    line = _one_line_error(CliRunner().invoke(cli, ["sample", str(runs["dcgan"].path), "--label", "1"]))
    assert "unconditional" in line


def test_cli_sample_with_a_label(runs, tmp_path):
    out = tmp_path / "blond.png"
    result = CliRunner().invoke(cli, ["sample", str(runs["cgan"].path), "--label", "1", "--n", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_cli_critic_steps_below_one(tmp_path):
    line = _one_line_error(CliRunner().invoke(cli, ["train", "wgan-gp", "--set", "critic_steps=0",
                                                    "--out", str(tmp_path / "r"), "--no-progress"]))
    assert "critic_steps must be >= 1" in line
