import math

import pytest
import torch

import genzoo
from genzoo.plugins.pixelcnn import CachedSampler, MaskedConv2d, NaiveSampler, PixelCNN, PixelCNNConfig


def small(**kw):
    """An untrained 8x8 PixelCNN."""
    torch.manual_seed(0)
    return PixelCNN(PixelCNNConfig(image_size=8, filters=16, blocks=2, **kw)).eval()


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_ignores_future_pixels(mask_type):
    conv = MaskedConv2d(mask_type, 1, 4, 5)
    x = torch.randn(1, 1, 6, 6, requires_grad=True)
    i, j = 3, 2
    conv(x)[0, :, i, j].sum().backward()
    g = x.grad[0, 0]
    future = torch.zeros(6, 6, dtype=torch.bool)
    future[i, j + 1:] = True
    future[i + 1:] = True
    assert g[future].abs().sum() == 0
    assert (g[i, j] != 0) == (mask_type == "B")  # type A hides the centre itself
    assert g[~future].abs().sum() > 0


def test_network_output_at_a_pixel_depends_only_on_earlier_pixels():
    model = small()
    x = torch.randint(0, 4, (1, 1, 8, 8))
    base = model(x)
    for (i, j) in [(0, 0), (3, 4), (7, 7)]:
        changed = x.clone()
        changed[0, 0, i, j:] = (changed[0, 0, i, j:] + 1) % 4
        changed[0, 0, i + 1:] = (changed[0, 0, i + 1:] + 2) % 4
        out = model(changed)
        before = torch.zeros(8, 8, dtype=torch.bool)
        before[:i] = True
        before[i, :j + 1] = True  # position (i, j) itself may not see pixel (i, j)
        assert torch.allclose(out[0, :, before], base[0, :, before], atol=1e-6)


def test_book_preset_has_the_books_parameter_count():
    model = genzoo.create_model("pixelcnn", preset="book")
    assert model.num_params() == 307_460  # 7x7 type A, 5 residual blocks of 128 filters


def test_cached_and_naive_samplers_draw_identical_images():
    model = small().double()
    a = NaiveSampler().sample(model, 3, torch.Generator().manual_seed(7))
    b = CachedSampler().sample(model, 3, torch.Generator().manual_seed(7))
    c = CachedSampler().sample(model, 3, torch.Generator().manual_seed(8))
    assert a.shape == (3, 1, 8, 8)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)
    assert set((a * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_sampler_options_temperature_top_k_and_size():
    model = small()
    x = CachedSampler(top_k=1, size=5).sample(model, 2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 5, 5)
    # top_k=1 is greedy: no randomness left
    y = CachedSampler(top_k=1, size=5).sample(model, 2, torch.Generator().manual_seed(1))
    assert torch.equal(x, y)


def test_log_prob_matches_loss_in_nats_and_bits():
    model = small()
    x = torch.rand(4, 1, 8, 8)
    lp = model.log_prob({"x": x})
    with torch.no_grad():
        out = model.loss({"x": x})
    assert lp.shape == (4,)
    assert math.isclose(float(-lp.mean() / 64), float(out["loss"]), rel_tol=1e-5)
    assert math.isclose(float(out["bits_per_dim"]), float(out["loss"]) / math.log(2), rel_tol=1e-6)


def test_loss_falls_on_real_data(tmp_path, tiny):
    run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **tiny("pixelcnn", steps=80, **{
        "train.lr": 5e-3, "model.filters": 16, "train.log_every": 10,
        "train.checkpoint_every": 40}))
    losses = [m["loss"] for m in run.metrics() if "split" not in m]
    # uniform over 4 levels is ln 4 = 1.386 nats/pixel; every one of the last logs is lower
    assert max(losses[-4:]) < losses[0] - 0.3, losses
    assert sum(losses[-4:]) / 4 < 0.9, losses
    test = [m for m in run.metrics() if m.get("split") == "test"][0]
    assert test["bits_per_dim"] < 1.4
