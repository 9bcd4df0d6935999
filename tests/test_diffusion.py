"""The ddm family (Foster ch. 8): schedules, the samplers' maths, seeds, EMA weights, the data
statistics stored with a run, latent tools on noise maps, and one-line errors through the CLI."""
import math

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core.data import ImageData
from genzoo.core.sample import ImageSample
from genzoo.errors import ConfigError
from genzoo.nn import latent
from genzoo.plugins.diffusion import (SCHEDULES, DDIMSampler, DDPMSampler, DiffusionConfig,
                                      DiffusionModel, diffusion_schedule, level_sequence,
                                      reverse_diffusion, sinusoidal_embedding)

def small(**kw) -> DiffusionModel:
    """A seeded two-width U-Net on 8x8 images (training runs use the `tiny` fixture)."""
    torch.manual_seed(0)
    cfg = {"image_size": 8, "widths": (8, 16), "block_depth": 1, "embedding_dim": 8, **kw}
    return DiffusionModel(DiffusionConfig(**cfg)).eval()


class Oracle(torch.nn.Module):
    """A 'network' that knows the clean images and answers the true noise in x_t."""

    def __init__(self, model: DiffusionModel, x0: torch.Tensor):
        super().__init__()
        self.model, self.x0 = model, x0

    def forward(self, noisy, noise_variances):
        noise_rates = noise_variances.sqrt().view(-1, 1, 1, 1)
        signal_rates = (1 - noise_variances).sqrt().view(-1, 1, 1, 1)
        return (noisy - signal_rates * self.x0) / noise_rates


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_keeps_unit_variance_and_is_monotone(name):
    t = torch.linspace(0, 1, 1001)
    noise, signal = diffusion_schedule(name, t)
    assert torch.allclose(signal ** 2 + noise ** 2, torch.ones_like(t, dtype=torch.float64), atol=1e-12)
    assert (signal[1:] <= signal[:-1]).all() and (signal[1:] < signal[:-1]).sum() > 900
    assert (noise[1:] >= noise[:-1]).all()
    assert 0 <= float(signal.min()) and float(signal.max()) <= 1
    model = small(noise_schedule=name)  # the model's table is the same schedule
    i = torch.arange(model.schedule_length + 1)
    n, s = model.rates(i)
    assert torch.allclose(s.flatten(), signal.float(), atol=1e-6)


def test_offset_cosine_ends_at_the_books_rates():
    noise, signal = diffusion_schedule("offset_cosine", torch.tensor([0.0, 1.0]))
    assert torch.allclose(signal, torch.tensor([0.95, 0.02], dtype=torch.float64))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ddim_with_the_true_noise_reconstructs_x0_exactly(schedule):
    model = small(noise_schedule=schedule).double()
    x0 = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    model.network = Oracle(model, x0)
    start = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for steps in (1, 7, 20, model.schedule_length):
        out, _ = reverse_diffusion(model, start, steps)
        assert torch.allclose(out, x0, atol=1e-9), steps
    # stochastic samplers stay on x0 too: every step's x0 prediction is exact
    out, _ = reverse_diffusion(model, start, 10, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-9)


def test_ddpm_step_is_ddim_with_eta_one():
    model = small().double()
    start = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a, _ = reverse_diffusion(model, start, 6, eta=1.0, generator=torch.Generator().manual_seed(5))
    b, _ = reverse_diffusion(model, start, 6, ancestral=True, generator=torch.Generator().manual_seed(5))
    c, _ = reverse_diffusion(model, start, 6, eta=0.0)
    assert torch.allclose(a, b, atol=1e-9)
    assert not torch.allclose(a, c)
    for stochastic in ({"eta": 1.0}, {"ancestral": True}):  # fresh noise only from a generator
        with pytest.raises(ValueError, match="needs a generator"):
            reverse_diffusion(model, start, 6, **stochastic)


def test_level_sequence_runs_from_T_to_0_without_repeats():
    assert level_sequence(1000, 4) == [1000, 750, 500, 250, 0]
    for steps in (1, 3, 999, 1000):
        levels = level_sequence(1000, steps)
        assert levels[0] == 1000 and levels[-1] == 0 and len(set(levels)) == steps + 1


def test_sinusoidal_embedding_is_the_books():
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.25]), 32)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb[0, :16], torch.zeros(16)) and torch.allclose(emb[0, 16:], torch.ones(16))
    assert math.isclose(float(emb[1, 0]), math.sin(2 * math.pi * 0.25), abs_tol=1e-6)


def test_unet_shapes_zero_start_and_book_parameter_count():
    model = small()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x, torch.rand(2)), torch.zeros(2, 3, 8, 8))  # zero-initialised head
    assert genzoo.create_model("ddm", preset="book").num_params() == 1_948_579


@pytest.mark.parametrize("sampler", [DDIMSampler, DDPMSampler])
def test_same_seed_same_images(sampler):
    model = small()
    torch.nn.init.normal_(model.network.head.weight, std=0.1)
    draw = lambda seed: sampler(steps=5).sample(model, 3, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert isinstance(a, ImageSample) and a.images.shape == (3, 3, 8, 8)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert 0 <= float(a.images.min()) and float(a.images.max()) <= 1


def test_show_process_is_a_grid_of_frames_per_sample():
    model = small()
    out = DDIMSampler(steps=6, frames=4).sample(model, 10, torch.Generator().manual_seed(0),
                                                show=("process",))
    proc = out.extras["process"]
    assert proc.nrow == 4 and proc.images.shape == (8 * 4, 3, 8, 8)  # at most 8 rows
    assert torch.equal(proc.images.view(8, 4, 3, 8, 8)[:, -1], out.images[:8])  # last = result


def _images(n=40, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    return ImageData(x)


def test_setup_computes_per_channel_statistics():
    data = _images()
    model = small()
    model.setup(data)
    x = data.images()
    assert torch.allclose(model.data_mean.flatten(), x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.data_std.flatten(), x.std((0, 2, 3), unbiased=False), atol=1e-5)


def _train(tmp_path, tiny, **over):
    return api.train("ddm", "quick", tiny("ddm", steps=4, **over), out=tmp_path / "run",
                     progress=False)


def test_run_stores_statistics_and_samples_from_ema_weights(tmp_path, tiny):
    run = _train(tmp_path, tiny, **{"train.ema_decay": 0.5})
    loaded = api.load_run(run.path)
    raw = api.load_run(run.path, ema=False)
    data = loaded.data("train")
    x = data.images()
    # the statistics come back with the run (they are artifacts, not weights)
    assert (run.path / "artifacts.safetensors").exists()
    assert torch.allclose(loaded.model.data_mean.flatten(), x.mean((0, 2, 3)), atol=1e-4)
    for m in (loaded.model, raw.model):  # both loads, against the data (not the 0.5 defaults)
        assert torch.allclose(m.data_std.flatten(), x.std((0, 2, 3), unbiased=False), atol=1e-4)
    # the EMA weights are the ones loaded and sampled, and they differ from the raw ones
    from safetensors.torch import load_file
    ema = load_file(str(run.path / "model_ema.safetensors"))
    key = "network.head.weight"
    assert ema[key].abs().max() > 0  # trained off its zero init: the equality below is a load
    assert torch.equal(loaded.model.state_dict()[key], ema[key])
    assert not torch.equal(raw.model.state_dict()[key], ema[key])
    weights = load_file(str(run.path / "model.safetensors"))
    assert weights[key].abs().max() > 0
    assert torch.equal(raw.model.state_dict()[key], weights[key])
    a = loaded.sample(2, seed=0, steps=3)
    assert torch.equal(a.images, loaded.sample(2, seed=0, steps=3).images)
    assert not torch.equal(a.images, raw.sample(2, seed=0, steps=3).images)


def test_latent_protocol_interpolates_noise_maps(tmp_path):
    model = small()
    assert latent.is_latent_model(model) and not latent.has_encoder(model)
    assert model.latent_dim == 3 * 8 * 8
    z0, z1 = latent.endpoints(model, 2, torch.Generator().manual_seed(0))
    grid = latent.interpolation_grid(model, z0, z1, steps=5, methods=("spherical",))
    assert grid.shape == (2 * 5, 3, 8, 8)
    # decode is deterministic DDIM: the ends are the DDIM samples of those noise maps
    ddim = DDIMSampler(steps=model.config.sample_steps).sample(model, 4, torch.Generator().manual_seed(0))
    assert torch.allclose(grid[0], ddim.images[0], atol=1e-5)


def test_cli_sample_interpolate_and_bad_input(tmp_path, tiny):
    run = _train(tmp_path, tiny)
    r = CliRunner()
    ok = r.invoke(cli, ["sample", str(run.path), "--n", "2", "--set", "steps=3", "--show-process",
                        "--out", str(tmp_path / "s")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "s.png").exists() and (tmp_path / "s-process.png").exists()
    ok = r.invoke(cli, ["interpolate", str(run.path), "--method", "spherical", "--pairs", "1",
                        "--steps", "3", "--out", str(tmp_path / "i.png")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "i.png").exists()
    bad = {
        ("sample", str(run.path), "--set", "steps=0"): "steps must be >= 1",
        ("sample", str(run.path), "--set", "steps=1001"): "more than the schedule's length",
        ("sample", str(run.path), "--set", "eta=-1"): "eta must be a number >= 0",
        ("sample", str(run.path), "--sampler", "ddpm", "--set", "eta=1"): "unknown sampler ddpm option",
        ("train", "ddm", "--steps", "1", "--set", "noise_schedule=quadratic"): "expected one of",
    }
    for args, message in bad.items():
        res = r.invoke(cli, list(args))
        assert res.exit_code != 0, args
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_bad_configs_are_one_line():
    with pytest.raises(ConfigError, match="divisible by"):
        genzoo.create_model("ddm", image_size=36)
    with pytest.raises(ConfigError, match="unknown schedule|expected one of"):
        genzoo.create_model("ddm", noise_schedule="quadratic")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        DDPMSampler.Options(steps=0)
    with pytest.raises(ConfigError, match="schedule's length"):
        model = small(timesteps=10)
        from genzoo.core.sampler import draw
        draw(model, DDIMSampler(steps=11), 1, torch.Generator())


def test_ddim_default_steps_follow_the_models_sample_steps():
    """A preset carries its sampler setting: DDIM without steps= runs the model's sample_steps,
    an explicit steps= still wins, and too many steps for the schedule is one clear error."""
    model = small(sample_steps=3, timesteps=50)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    default = DDIMSampler().sample(model, 2, g()).images
    assert torch.equal(default, DDIMSampler(steps=3).sample(model, 2, g()).images)
    assert DDIMSampler().steps(model) == 3 and DDIMSampler(steps=4).steps(model) == 4
    with pytest.raises(ConfigError, match="steps=60 is more than the schedule's length"):
        DDIMSampler().check(small(sample_steps=60, timesteps=50), {})
    with pytest.raises(ValueError, match="sample_steps must be >= 1"):
        DiffusionConfig(sample_steps=0)


def test_ddim_default_eta_follows_the_models_sample_eta_and_decode_stays_deterministic():
    """A preset can make its DDIM stochastic (sample_eta): DDIM without eta= uses it, seeded,
    an explicit eta= still wins, and ``decode`` (a noise map names an image) ignores it."""
    model = small(sample_steps=4, sample_eta=1.0)
    g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731
    default = DDIMSampler().sample(model, 2, g()).images
    assert torch.equal(default, DDIMSampler(eta=1.0).sample(model, 2, g()).images)
    assert torch.equal(default, DDIMSampler().sample(model, 2, g()).images)  # the seed names it
    assert not torch.equal(default, DDIMSampler(eta=0.0).sample(model, 2, g()).images)
    assert not torch.equal(default, DDIMSampler().sample(model, 2, g(1)).images)
    deterministic = small(sample_steps=4)  # the same weights (seeded), the book's eta 0
    z = deterministic.sample_latent(2, g())
    assert torch.equal(model.decode(z), deterministic.decode(z))
    assert torch.equal(DDIMSampler().sample(deterministic, 2, g()).images,
                       DDIMSampler(eta=0.0).sample(model, 2, g()).images)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="sample_eta must be a number >= 0"):
            DiffusionConfig(sample_eta=bad)
