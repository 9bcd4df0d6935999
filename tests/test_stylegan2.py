"""StyleGAN2 family: modulated convolutions, the mapping network's truncation, style mixing,
lazy R1, DiffAugment, training, samplers and their option errors. Tiny sizes (8x8 and 16x16
images, a few channels): each test takes seconds on a CPU."""
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core.trainer import StepContext, TrainConfig
from genzoo.errors import ConfigError
from genzoo.nn import latent
from genzoo.plugins.stylegan2 import (MixingSampler, ModulatedConv2d, PriorSampler, StyleGAN2,
                                      StyleGAN2Config, diff_augment, minibatch_stddev)

TINY = {"model.z_dim": 8, "model.w_dim": 8, "model.mapping_layers": 2, "model.channel_base": 64,
        "model.channel_max": 8, "data.size": 16, "train.batch_size": 8, "train.steps": 4,
        "train.sample_every": 0, "train.log_every": 2, "train.sample_n": 4}


def tiny_model(size=8, **over):
    cfg = dict(image_size=size, channels=3, z_dim=8, w_dim=8, mapping_layers=2, channel_base=32,
               channel_max=8, r1_gamma=1.0)
    torch.manual_seed(0)
    return StyleGAN2(StyleGAN2Config(**{**cfg, **over}))


def ctx(step=0):
    c = StepContext(torch.device("cpu"), "none", None)
    c.step = step
    return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny trained run (4 steps, EMA on), shared by the sampler and CLI tests."""
    tmp = tmp_path_factory.mktemp("sg2-run")
    return api.train("stylegan2-twemoji", "quick", {**TINY, "train.ema_decay": 0.9},
                     out=tmp / "run", progress=False)


# -- modulated convolution ----------------------------------------------------------------------

def test_modulated_conv_without_demod_is_a_conv_with_per_sample_scaled_weights():
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, w_dim=6, demodulate=False)
    x, w = torch.randn(3, 4, 7, 7), torch.randn(3, 6)
    styles = conv.affine(w)
    for i in range(3):  # the textbook form: w'_ijk = s_i * w_ijk, one conv per sample
        weight = conv.weight * conv.weight_gain * styles[i].view(1, 4, 1, 1)
        expected = F.conv2d(x[i:i + 1], weight, padding=1)
        assert torch.allclose(conv(x, w)[i:i + 1], expected, atol=1e-5)


def test_demodulation_divides_by_the_scaled_weights_norm_and_normalises_output_std():
    torch.manual_seed(0)
    conv = ModulatedConv2d(16, 8, 3, w_dim=6, demodulate=True)
    w = torch.randn(2, 6) * 3  # styles far from 1: the output scale must not follow them
    x = torch.randn(2, 16, 32, 32)
    y = conv(x, w)
    styles = conv.affine(w)
    for i in range(2):
        weight = conv.weight * conv.weight_gain * styles[i].view(1, 16, 1, 1)
        weight = weight / weight.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()
        assert torch.allclose(y[i:i + 1], F.conv2d(x[i:i + 1], weight, padding=1), atol=1e-4)
    # unit-variance input -> unit-variance output per channel (paper eq. 3), whatever the style
    std = y[:, :, 1:-1, 1:-1].std(dim=(2, 3))
    assert torch.allclose(std, torch.ones_like(std), atol=0.1)


def test_minibatch_stddev_adds_a_channel_shared_within_a_group():
    x = torch.randn(6, 3, 4, 4)
    y = minibatch_stddev(x, 4)  # 6 images: groups of 3 (the largest divisor <= 4)
    assert y.shape == (6, 4, 4, 4) and torch.equal(y[:, :3], x)
    assert torch.allclose(y[0, 3], y[2, 3]) and torch.allclose(y[1, 3], y[5, 3])


# -- shapes, range, mapping, truncation, mixing -------------------------------------------------

def test_shapes_and_unit_range():
    m = tiny_model(16).eval()
    assert m.config.num_ws == 6  # 4x4: conv + toRGB, then 2 convs per resolution
    w = m.sample_latent(5, torch.Generator().manual_seed(0))
    assert w.shape == (5, 8) and m.latent_dim == 8
    x = m.decode(w)
    assert x.shape == (5, 3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert m.discriminator(x * 2 - 1).shape == (5,)
    assert not hasattr(m, "encode")


def test_truncation_zero_gives_the_w_average_image_for_all_samples():
    m = tiny_model().eval()
    m.mapping.w_avg.copy_(torch.randn(8))
    x = PriorSampler(truncation=0.0).sample(m, 4, torch.Generator().manual_seed(0))
    expected = m.decode(m.mapping.w_avg[None])
    assert torch.allclose(x, expected.expand_as(x), atol=1e-6)
    half = PriorSampler(truncation=0.5).latent(m, 3, torch.Generator().manual_seed(1))
    full = PriorSampler().latent(m, 3, torch.Generator().manual_seed(1))
    assert torch.allclose(half, m.mapping.w_avg + 0.5 * (full - m.mapping.w_avg), atol=1e-6)


def test_w_average_is_tracked_during_training():
    m = tiny_model()
    opts = m.configure_optimizers(TrainConfig(lr=1e-3, betas=(0, 0.99)))
    assert torch.equal(m.mapping.w_avg, torch.zeros(8))
    m.training_step({"x": torch.rand(4, 3, 8, 8)}, opts, ctx(1))
    assert m.mapping.w_avg.abs().sum() > 0
    assert "mapping.w_avg" in m.state_dict()  # a buffer: saved, and averaged by the EMA


def test_mixing_grid_shape_and_rows_share_coarse_styles():
    m = tiny_model(16).eval()
    s = MixingSampler(columns=3, coarse=2)
    w_row, w_col, ws = s.grid_ws(m, 2, torch.Generator().manual_seed(0))
    assert ws.shape == (2, 3, 6, 8)
    for i in range(2):
        assert torch.equal(ws[i, :, :2], w_row[i].expand(3, 2, 8))  # coarse from the row source
        for j in range(3):
            assert torch.equal(ws[i, j, 2:], w_col[j].expand(4, 8))  # fine from the column source
    out = s.sample(m, 12, torch.Generator().manual_seed(0))
    assert out.images.shape == (12, 3, 16, 16) and out.nrow == 4
    assert torch.equal(out.images[0], torch.ones(3, 16, 16))  # the blank corner
    assert torch.allclose(out.images[1:4], m.decode(w_col), atol=1e-6)  # the top row
    assert torch.allclose(out.images[4], m.decode(w_row[:1])[0], atol=1e-6)  # a row source
    # every w copy from the row source: each row's mixes are its source image
    every = MixingSampler(columns=3, coarse=5).sample(m, 8, torch.Generator().manual_seed(0))
    assert not torch.allclose(every.images[5], every.images[4], atol=1e-3)  # 1 fine copy differs
    cut = MixingSampler(columns=2).sample(m, 5, torch.Generator().manual_seed(0))
    assert len(cut) == 5


def test_mixing_in_training_switches_w_after_a_crossover():
    m = tiny_model(16, style_mixing=1.0)
    torch.manual_seed(3)
    ws, w = m.training_ws(64, torch.device("cpu"))
    assert torch.equal(ws[:, 0], w)  # the first layer always takes the first z's w
    switched = ~torch.isclose(ws, w[:, None]).all(-1)  # (n, num_ws): layers from the second w
    assert switched.any(1).all()  # probability 1: every image mixes
    assert (switched.int().diff(dim=1) >= 0).all()  # once switched, every later layer is too
    m.config.style_mixing = 0.0
    ws, w = m.training_ws(8, torch.device("cpu"))
    assert torch.equal(ws, w[:, None].expand_as(ws))


# -- DiffAugment ---------------------------------------------------------------------------------

def test_diff_augment_keeps_shapes_and_is_differentiable():
    torch.manual_seed(0)
    x = (torch.rand(5, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape and torch.isfinite(y).all()
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    assert not torch.equal(y, x)
    # cutout zeroes a square of half the side (clipped at the edges)
    zeros = (diff_augment(torch.ones(64, 1, 16, 16), "cutout") == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() >= 16
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ConfigError, match="unknown augment 'flip'"):
        genzoo.create_model("stylegan2-twemoji", augment="color,flip")


# -- training ------------------------------------------------------------------------------------

def test_lazy_r1_runs_only_on_its_interval(monkeypatch):
    m = tiny_model(r1_interval=4)
    opts = m.configure_optimizers(TrainConfig(lr=1e-3, betas=(0, 0.99)))
    # lazy regularisation's Adam: lr and betas to the power c = k / (k + 1)
    c = 4 / 5
    assert opts["discriminator"].param_groups[0]["lr"] == pytest.approx(1e-3 * c)
    assert opts["discriminator"].param_groups[0]["betas"][1] == pytest.approx(0.99 ** c)
    assert opts["generator"].param_groups[0]["betas"] == (0, 0.99)
    calls = []
    real_r1 = StyleGAN2.r1_penalty
    monkeypatch.setattr(StyleGAN2, "r1_penalty", lambda self, x: calls.append(1) or real_r1(self, x))
    batch = {"x": torch.rand(4, 3, 8, 8)}
    for step in range(9):
        out = m.training_step(batch, opts, ctx(step))
        assert (out["r1"] > 0) == (step % 4 == 0)
    assert len(calls) == 3  # steps 0, 4, 8
    d_steps = int(next(iter(opts["discriminator"].state.values()))["step"])
    assert d_steps == 9 + 3  # its own optimizer step each time


def test_r1_is_the_squared_gradient_norm_on_reals():
    m = tiny_model(augment="")
    x = torch.randn(3, 3, 8, 8)
    r1 = m.r1_penalty(x)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.discriminator(xg).sum(), xg)
    assert r1.item() == pytest.approx(g.square().flatten(1).sum(1).mean().item(), rel=1e-5)
    assert r1.requires_grad  # create_graph: the penalty trains D


def test_training_step_updates_both_players():
    m = tiny_model()
    opts = m.configure_optimizers(TrainConfig(lr=1e-3, betas=(0, 0.99)))
    g0 = [p.clone() for p in m.synthesis.parameters()]
    d0 = [p.clone() for p in m.discriminator.parameters()]
    out = m.training_step({"x": torch.rand(4, 3, 8, 8)}, opts, ctx(1))
    assert {"loss", "d_loss", "g_loss", "r1", "d_real", "d_fake"} <= set(out)
    assert torch.isfinite(out["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(g0, m.synthesis.parameters()) if a.ndim > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, m.discriminator.parameters()) if a.ndim > 1)
    assert all(p.requires_grad for p in m.discriminator.parameters())  # unfrozen after G's step


def test_discriminator_separates_real_from_fake_in_a_few_dozen_steps():
    """On 16 fixed twemoji-like images (coloured squares), D's logit gap and G's loss both
    move the way a working GAN's do."""
    torch.manual_seed(0)
    m = tiny_model(8, augment="")
    opts = m.configure_optimizers(TrainConfig(lr=2e-3, betas=(0, 0.99)))
    x = torch.zeros(16, 3, 8, 8)
    x[:, :, 2:6, 2:6] = torch.rand(16, 3, 1, 1)
    rows = [m.training_step({"x": x}, opts, ctx(s)) for s in range(40)]
    first = sum(float(r["d_loss"]) for r in rows[:5]) / 5
    last = sum(float(r["d_loss"]) for r in rows[-5:]) / 5
    gap = sum(float(r["d_real"] - r["d_fake"]) for r in rows[-5:]) / 5
    print(f"d_loss {first:.3f} -> {last:.3f}, logit gap {gap:.3f}")
    assert last < first and last < 2 * math.log(2)  # below chance: D tells them apart
    assert gap > 0


# -- runs: EMA, seeds, samplers, interpolation, CLI ----------------------------------------------

def test_run_has_ema_weights_and_samples_are_seeded(run):
    assert run.ema_path.exists()
    ema, raw = api.load_run(run.path), api.load_run(run.path, ema=False)
    a, b = ema.sample(4, seed=3).images, ema.sample(4, seed=3).images
    assert torch.equal(a, b) and not torch.equal(a, ema.sample(4, seed=4).images)
    assert a.shape == (4, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, raw.sample(4, seed=3).images)  # sampling uses the EMA weights
    assert not torch.equal(ema.model.mapping.w_avg, raw.model.mapping.w_avg)  # its own w_avg
    random = ema.sample(3, seed=1, truncation=0.7, noise="random").images
    assert torch.equal(random, ema.sample(3, seed=1, truncation=0.7, noise="random").images)


@pytest.mark.slow  # two training runs: ~10 s on a loaded 2-core box
def test_training_is_reproducible_from_the_seed(tmp_path):
    over = {**TINY, "train.steps": 3}
    a = api.train("stylegan2-twemoji", "quick", over, out=tmp_path / "a", progress=False)
    b = api.train("stylegan2-twemoji", "quick", over, out=tmp_path / "b", progress=False)
    assert torch.equal(api.load_run(a.path).sample(4, seed=0).images,
                       api.load_run(b.path).sample(4, seed=0).images)


def test_interpolation_is_in_w(run, tmp_path):
    model = api.load_run(run.path).model
    w0, w1 = latent.endpoints(model, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(w0, model.sample_latent(4, torch.Generator().manual_seed(0))[:2])
    grid = latent.interpolation_grid(model, w0, w1, steps=3, methods=("linear",))
    assert grid.shape == (2 * 3, 3, 16, 16)
    assert torch.allclose(grid[0], model.decode(w0[:1])[0], atol=1e-6)  # the ends are w0, w1
    assert torch.allclose(grid[1], model.decode((w0[:1] + w1[:1]) / 2)[0], atol=1e-6)
    result = CliRunner().invoke(cli, ["interpolate", str(run.path), "--pairs", "2", "--steps",
                                      "4", "--out", str(tmp_path / "i.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "i.png").exists()


def test_cli_samples_with_truncation_and_the_mixing_grid(run, tmp_path):
    for args in (["--set", "truncation=0.7"], ["--sampler", "mixing", "--n", "25"]):
        out = tmp_path / f"{args[1].replace('=', '')}.png"
        result = CliRunner().invoke(cli, ["sample", str(run.path), *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.exists()


def _one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--set", "truncation=1.5"], "truncation must be a number psi in [0, 1]"),
    (["--set", "truncation=-0.1"], "truncation must be"),
    (["--set", "truncation=nan"], "for truncation: expected a number, not nan"),
    (["--set", "noise=loud"], "noise must be const, random or none"),
    (["--sampler", "mixing", "--set", "columns=0"], "columns must be from 1 to 64"),
    (["--sampler", "mixing", "--set", "coarse=6"], "coarse must be from 1 to 5"),
    (["--sampler", "mixing", "--set", "noise=random"], "noise must be const or none"),
])
def test_bad_sampler_options_are_one_line(run, args, message):
    line = _one_line_error(CliRunner().invoke(cli, ["sample", str(run.path), *args]))
    assert message in line


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": 24}, "power of two"),
    ({"style_mixing": 1.5}, "style_mixing"),
    ({"r1_gamma": -1}, "r1_gamma"),
    ({"mapping_lr_mul": 0}, "mapping_lr_mul"),
])
def test_bad_config_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        genzoo.create_model("stylegan2-twemoji", **overrides)


def test_registry_presets():
    quick = genzoo.create_model("stylegan2-twemoji")
    assert (quick.config.image_size, quick.config.channels) == (32, 3)
    book = genzoo.create_model("stylegan2-twemoji", preset="book")
    assert (book.config.image_size, book.config.w_dim, book.config.mapping_layers) == (64, 512, 8)
    fashion = genzoo.create_model("stylegan2-fashion")
    assert (fashion.config.image_size, fashion.config.channels) == (32, 1)
    entry = genzoo.registry().get("stylegan2-twemoji")
    assert entry.config["train"]["betas"] == [0, 0.99]
