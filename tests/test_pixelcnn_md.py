import math

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo.cli import cli
from genzoo.core.sampler import draw
from genzoo.errors import ConfigError
from genzoo.nn.autoregressive import raster_sample
from genzoo.plugins.pixelcnn_md import (CachedSampler, NaiveSampler, PixelCNNMD, PixelCNNMDConfig,
                                        discretised_logistic_log_prob, mixture_log_prob,
                                        params_per_pixel, sample_mixture)


def small(channels=1, size=6, **kw):
    """An untrained PixelCNN++ of 8 filters."""
    torch.manual_seed(0)
    return PixelCNNMD(PixelCNNMDConfig(image_size=size, channels=channels, filters=8, blocks=2,
                                       **kw)).eval()


ALL_LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (-1.0, -5.0), (1.0, -5.0), (0.3, 0.5),
                                            (-0.999, -7.0), (2.0, -1.0), (0.5, -7.0)])
def test_discretised_logistic_sums_to_one_edge_bins_included(mean, log_scale):
    lp = discretised_logistic_log_prob(ALL_LEVELS[:, None], torch.tensor([[mean]], dtype=torch.float64),
                                       torch.tensor([[log_scale]], dtype=torch.float64))
    assert torch.isfinite(lp).all()
    assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=1e-4)


def test_mixture_per_pixel_sums_to_one_over_the_256_values():
    torch.manual_seed(1)
    K = 5
    params = torch.randn(1, params_per_pixel(1, K), 1, 1, dtype=torch.float64).expand(256, -1, -1, -1)
    lp = mixture_log_prob(params, ALL_LEVELS.view(256, 1, 1, 1), 1, K)
    assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=1e-4)


def test_rgb_channel_conditioning_is_the_papers():
    """K=1: P(r, g, b) = P(r) P(g | r) P(b | r, g) with mu_g + c0 r, mu_b + c1 r + c2 g, so
    the joint sums to 1 over the 256^3 values because each factor does (test above)."""
    torch.manual_seed(2)
    p = torch.randn(params_per_pixel(3, 1), dtype=torch.float64)
    # layout: [logit | means r g b | log-scales r g b | coefficients]
    mu, ls, c = p[1:4], p[4:7].clamp(min=-7), torch.tanh(p[7:10])
    x = torch.tensor([0.2, -0.6, 0.9], dtype=torch.float64)
    want = (discretised_logistic_log_prob(x[0], mu[0], ls[0])
            + discretised_logistic_log_prob(x[1], mu[1] + c[0] * x[0], ls[1])
            + discretised_logistic_log_prob(x[2], mu[2] + c[1] * x[0] + c[2] * x[1], ls[2]))
    got = mixture_log_prob(p.view(1, -1, 1, 1), x.view(1, 3, 1, 1), 3, 1)
    assert torch.allclose(got.flatten(), want.view(1))


@pytest.mark.parametrize("channels", [1, 3])
def test_network_never_sees_the_current_or_future_pixels(channels):
    model = small(channels, size=7, dilations=[1, 2]).double()
    levels = torch.randint(0, 256, (1, channels, 7, 7))
    for (i, j) in [(0, 0), (3, 3), (6, 6), (2, 0)]:
        x = model.network_input(levels).detach().requires_grad_(True)
        model.net(x)[0, :, i, j].sum().backward()
        g = x.grad[0, :channels].abs().sum(0)  # the image channels (the ones channel is constant)
        future = torch.zeros(7, 7, dtype=torch.bool)
        future[i, j:] = True  # the pixel itself and everything after it in raster order
        future[i + 1:] = True
        assert g[future].sum() == 0, (i, j)
        if (i, j) == (3, 3):  # no blind spot: above-right and left pixels are seen
            assert g[2, 5] > 0 and g[3, 1] > 0 and g[1, 3] > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_the_hierarchy_never_sees_the_current_or_future_pixels_and_sees_the_past(channels):
    """resolutions=3: 8x8 -> 4x4 -> 2x2 and back, with strided and transposed shifted
    convolutions; every output pixel, checked by its gradient."""
    model = small(channels, size=8, resolutions=3, dilations=[1]).double()
    levels = torch.randint(0, 256, (1, channels, 8, 8)).expand(64, -1, -1, -1)
    # one copy of the image per output pixel, in one backward pass (no batch statistics)
    x = model.network_input(levels).detach().requires_grad_(True)
    out = model.net(x)
    k = torch.arange(64)
    out[k, :, k // 8, k % 8].sum().backward()
    for i in range(8):
        for j in range(8):
            g = x.grad[8 * i + j, :channels].abs().sum(0)
            future = torch.zeros(8, 8, dtype=torch.bool)
            future[i, j:] = True
            future[i + 1:] = True
            assert g[future].sum() == 0, (i, j)
            if i > 0 and j > 0:  # the whole causal past reaches it (no blind spot)
                assert (g[~future] > 0).all(), (i, j)


def test_the_hierarchy_samples_through_either_sampler_and_checks_its_size():
    model = small(size=4, resolutions=2)
    a = NaiveSampler().sample(model, 2, torch.Generator().manual_seed(7))
    b = CachedSampler().sample(model, 2, torch.Generator().manual_seed(7))  # walks naively
    assert a.shape == (2, 1, 4, 4) and torch.equal(a, b)
    # the walk reads only the rows so far (to the stride's multiple): the same draws as whole
    # images would give
    g = torch.Generator().manual_seed(7)
    whole = raster_sample(torch.zeros(2, 1, 4, 4, dtype=torch.long), model,
                          lambda p: sample_mixture(p, 1, model.config.mixtures, g))
    assert torch.equal(whole.float() / 255, a)
    with pytest.raises(ConfigError, match="size=5: .* a multiple of 2"):
        draw(model, NaiveSampler(size=5), 1, torch.Generator())
    with pytest.raises(ValueError, match="divisible by 2\\*\\*\\(resolutions - 1\\) = 4"):
        PixelCNNMDConfig(image_size=6, resolutions=3)
    with pytest.raises(ValueError, match="resolutions must be >= 1"):
        PixelCNNMDConfig(resolutions=0)


def test_cached_and_naive_samplers_draw_identical_images():
    for channels in (1, 3):
        model = small(channels, dilations=[1, 2]).double()
        a = NaiveSampler().sample(model, 3, torch.Generator().manual_seed(7))
        b = CachedSampler().sample(model, 3, torch.Generator().manual_seed(7))
        c = CachedSampler().sample(model, 3, torch.Generator().manual_seed(8))
        assert a.shape == (3, channels, 6, 6)
        assert torch.equal(a, b)
        assert not torch.equal(b, c)
        assert torch.equal((a * 255).round(), a * 255)  # on the 256-level grid


def test_sampling_is_reproducible_for_a_seed_and_options_apply():
    model = small()
    a = draw(model, CachedSampler(), 2, torch.Generator().manual_seed(3)).images
    b = draw(model, CachedSampler(), 2, torch.Generator().manual_seed(3)).images
    assert torch.equal(a, b)
    assert CachedSampler(size=4).sample(model, 2, torch.Generator().manual_seed(0)).shape == (2, 1, 4, 4)
    with pytest.raises(Exception, match="temperature"):
        CachedSampler(temperature=0)


def test_log_prob_matches_loss_in_nats_and_bits():
    model = small(size=8)
    x = torch.randint(0, 256, (4, 1, 8, 8)).float() / 255
    lp = model.log_prob({"x": x})
    with torch.no_grad():
        out = model.loss({"x": x})
    assert lp.shape == (4,)
    assert math.isclose(float(-lp.mean()), float(out["nll"]), rel_tol=1e-5)
    assert math.isclose(float(out["loss"]), float(out["nll"]) / 64, rel_tol=1e-6)
    assert math.isclose(float(out["bits_per_dim"]), float(out["loss"]) / math.log(2), rel_tol=1e-6)


def test_input_noise_blurs_only_the_past_and_only_in_training():
    """input_noise: in training the network conditions on noisy pixels (two passes differ), the
    targets stay clean (in eval mode the loss is exactly the noiseless model's), and the noise
    never lets a pixel's parameters see that pixel or a later one."""
    noisy, clean = small(size=6, input_noise=0.3), small(size=6)
    assert all(torch.equal(a, b) for a, b in zip(noisy.state_dict().values(),
                                                  clean.state_dict().values()))
    x = torch.randint(0, 256, (3, 1, 6, 6)).float() / 255
    with torch.no_grad():
        assert torch.equal(noisy.loss({"x": x})["loss"], clean.loss({"x": x})["loss"])  # eval
        noisy.train()
        a, b = noisy.loss({"x": x})["loss"], noisy.loss({"x": x})["loss"]
        assert not torch.equal(a, b)
    levels = noisy.to_levels(x)
    for p in (0, 14, 35):  # a pixel's parameters: unchanged by anything at or after it
        later = levels.clone().view(3, -1)
        later[:, p:] = 255 - later[:, p:]
        torch.manual_seed(1)
        base = noisy(levels)
        torch.manual_seed(1)
        moved = noisy(later.view_as(levels))
        i, j = divmod(p, 6)
        assert torch.equal(base[..., i, j], moved[..., i, j])
    with pytest.raises(ValueError, match="input_noise must be in"):
        PixelCNNMDConfig(input_noise=-0.1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tiny import tiny  # tests/tiny.py, as the `tiny` fixture (function-scoped) gives it
    out = tmp_path_factory.mktemp("md") / "run"
    return genzoo.train("pixelcnn-md", out=str(out), progress=False, **tiny(
        "pixelcnn-md", steps=60, **{"train.lr": 5e-3}))


def test_loss_falls_on_real_data(run):
    losses = [m["bits_per_dim"] for m in run.metrics() if "split" not in m]
    # from ~8 bits/dim (uniform over 256 levels) down: every one of the last logs is lower
    assert max(losses[-5:]) < losses[0] - 1.0, losses
    test = [m for m in run.metrics() if m.get("split") == "test"][0]
    assert test["bits_per_dim"] < 6.0


def test_cli_bad_sampler_options_and_show_chain_give_one_line(run):
    for args, words in ([["--set", "temperature=-1"], "temperature"],
                        [["--show-chain"], "chain"],
                        [["--set", "steps=3"], "steps"]):
        result = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "2", *args])
        assert result.exit_code != 0
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert words in lines[0]


def test_cli_sample_writes_a_grid(run, tmp_path):
    result = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "4", "--out",
                                      str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").stat().st_size > 0
    # a dot inside the name is the name's, not an extension to drop
    result = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "4", "--out",
                                      str(tmp_path / "t0.8-grid")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t0.8-grid.png").stat().st_size > 0 and not (tmp_path / "t0.png").exists()
