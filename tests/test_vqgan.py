"""VQ-GAN (genzoo/plugins/vqgan.py): the quantiser, its losses and restarts, the GAN terms, the
prior's causality, the pipeline's wiring and the samplers. Tiny sizes: seconds each."""
import math

import pytest
import torch

from genzoo.core.data import DataConfig, load
from genzoo.core.datasets import ImageData
from genzoo.core.sampler import draw
from genzoo.errors import ConfigError
from genzoo.family import StepContext, TrainConfig
from genzoo.plugins.vqgan import (VQGAN, CodeData, CodePrior, CodeSampleOptions, CodesSampler,
                                  CompleteSampler, PatchDiscriminator, PriorSampler,
                                  ReconstructSampler, VectorQuantizer, VQAutoencoder,
                                  adaptive_weight, hinge_d_loss, perplexity)

TINY_AE = dict(image_size=16, channels=3, ch=8, ch_mult=(1, 2), res_blocks=1, attention=True,
               codebook_size=16, embed_dim=4, disc_ch=8, disc_layers=2, restart_after=5,
               disc_start=2)
TINY_PRIOR = dict(layers=1, heads=2, embed_dim=16, ff_dim=32, dropout=0.0)


def tiny_pipeline(images: int = 6) -> VQGAN:
    torch.manual_seed(0)
    ae = VQAutoencoder.from_config(TINY_AE)
    ae.setup(ImageData(torch.rand(images, 3, 16, 16)))
    prior = CodePrior.from_config({**TINY_PRIOR, **VQGAN.component_config(
        "prior", None, {"autoencoder": ae})})
    return VQGAN({"autoencoder": ae, "prior": prior})


def ctx_at(step: int) -> StepContext:
    ctx = StepContext(torch.device("cpu"), "none", None)
    ctx.step = step
    return ctx


# -- the quantiser --------------------------------------------------------------------------------

@pytest.mark.parametrize("l2", [False, True])
def test_quantiser_outputs_codebook_entries_and_passes_gradients_straight_through(l2):
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, l2)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    rows = out["z_q"].permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(rows, vq.codebook()[out["codes"].flatten()], atol=1e-6)
    # each row's code is its nearest entry
    zf = vq.flat(z.detach())
    assert torch.equal(out["codes"].flatten(), torch.cdist(zf, vq.codebook()).argmin(1))
    out["z_q"].sum().backward()
    if not l2:  # straight through: d z_q / d z_e is the identity
        assert torch.allclose(z.grad, torch.ones_like(z))
    assert z.grad.abs().sum() > 0
    assert vq.embedding.weight.grad is None  # the output's gradient never reaches the codebook


def test_straight_through_gradients_reach_the_encoder():
    torch.manual_seed(0)
    ae = VQAutoencoder.from_config(TINY_AE)
    out = ae(torch.rand(2, 3, 16, 16))
    out["x_rec"].pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.encoder.parameters())


def test_codebook_and_commitment_terms():
    vq = VectorQuantizer(2, 2, l2=False)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    z = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).requires_grad_(True)
    out = vq(z)
    assert int(out["codes"]) == 0
    # both are ||z_e - e||^2 / D = (1 + 4) / 2 in value; they differ in where gradients go
    assert out["codebook"].item() == pytest.approx(2.5)
    assert out["commitment"].item() == pytest.approx(2.5)
    out["codebook"].backward(retain_graph=True)
    assert z.grad is None  # sg[z_e]: the codebook term moves only the codebook
    assert torch.allclose(vq.embedding.weight.grad[0], torch.tensor([-1.0, -2.0]))
    vq.embedding.weight.grad = None
    out["commitment"].backward()
    assert vq.embedding.weight.grad is None  # sg[e]: the commitment term moves only the encoder
    assert torch.allclose(z.grad.flatten(), torch.tensor([1.0, 2.0]))


def test_dead_codes_restart_at_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, l2=False)
    before = vq.embedding.weight.detach().clone()
    z_flat = torch.randn(20, 4)
    codes = torch.zeros(20, dtype=torch.long)  # only code 0 is ever used
    for _ in range(2):
        assert not vq.restart_dead(codes, z_flat, after=3).any()
    assert vq.idle.tolist() == [0] + [2] * 7
    dead = vq.restart_dead(codes, z_flat, after=3)
    assert dead.tolist() == [False] + [True] * 7
    assert torch.equal(vq.embedding.weight[0], before[0])
    for k in range(1, 8):  # every restarted code is one of this batch's encoder outputs
        assert (vq.embedding.weight[k] == z_flat).all(1).any()
    assert vq.idle.tolist() == [0] * 8
    assert "quantizer.idle" in VQAutoencoder.from_config(TINY_AE).state_dict()  # resumed exactly


def test_restarts_revive_unused_codes_in_training():
    torch.manual_seed(0)
    ae = VQAutoencoder.from_config({**TINY_AE, "disc_start": 10**6, "restart_after": 2,
                                    "feature_weight": 0.0})
    opts = ae.configure_optimizers(TrainConfig(lr=1e-3))
    x = torch.rand(1, 3, 16, 16)  # 64 positions, 16 codes: most lie idle in any one step
    restarted = 0
    for step in range(4):
        out = ae.training_step({"x": x}, opts, ctx_at(step))
        restarted += int(out["restarted"])
    assert restarted > 0 and int(ae.quantizer.idle.max()) < 2
    state = opts["main"].state[ae.quantizer.embedding.weight]
    assert torch.isfinite(state["exp_avg"]).all()
    assert perplexity(torch.arange(16), 16).item() == pytest.approx(16, rel=1e-4)
    assert perplexity(torch.zeros(9, dtype=torch.long), 16).item() == pytest.approx(1.0)


# -- the GAN side ---------------------------------------------------------------------------------

def test_hinge_loss_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1.5]
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.75))
    assert hinge_d_loss(torch.full((3,), 5.0), torch.full((3,), -5.0)).item() == 0.0


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.randn(3, 3, requires_grad=True)
    rec, gan = (w ** 2).sum(), (3 * w).sum()
    lam = adaptive_weight(rec, gan, w)
    want = (2 * w).norm() / ((torch.full((3, 3), 3.0)).norm() + 1e-4)
    assert math.isfinite(lam.item()) and lam.item() > 0
    assert lam.item() == pytest.approx(want.item(), rel=1e-5)
    assert not lam.requires_grad
    # a GAN loss that never saw the layer: autograd cannot take the gradient -> the fallback
    assert adaptive_weight(rec, torch.randn(2, requires_grad=True).sum(), w, 0.5).item() == 0.5


def test_adaptive_weight_in_a_training_step_is_finite_and_positive():
    torch.manual_seed(0)
    ae = VQAutoencoder.from_config(TINY_AE)
    opts = ae.configure_optimizers(TrainConfig(lr=1e-3))
    x = torch.rand(4, 3, 16, 16)
    out = ae.training_step({"x": x}, opts, ctx_at(0))  # before disc_start: no GAN
    assert out["d_weight"].item() == 0 and out["d_loss"].item() == 0
    assert not opts["disc"].state  # the discriminator has not moved
    out = ae.training_step({"x": x}, opts, ctx_at(2))
    assert math.isfinite(out["d_weight"].item()) and out["d_weight"].item() > 0
    assert out["d_loss"].item() > 0 and opts["disc"].state


@pytest.mark.parametrize("size,layers,side", [(64, 3, 6), (32, 2, 6), (16, 2, 2)])
def test_patchgan_output_shape(size, layers, side):
    d = PatchDiscriminator(3, 8, layers)
    assert d(torch.rand(2, 3, size, size)).shape == (2, 1, side, side)


# -- learning -------------------------------------------------------------------------------------

def test_reconstruction_loss_falls_on_twemoji():
    torch.manual_seed(0)
    data = load(DataConfig(name="twemoji", size=16), "train")
    ae = VQAutoencoder.from_config({**TINY_AE, "disc_start": 40, "codebook_size": 32,
                                    "attention": False})
    opts = ae.configure_optimizers(TrainConfig(lr=3e-3, betas=(0.5, 0.9)))
    g = torch.Generator().manual_seed(0)
    rec = []
    for step in range(50):
        idx = torch.randint(0, len(data), (8,), generator=g)
        out = ae.training_step(data.to_device(data.batch(idx), "cpu"), opts, ctx_at(step))
        rec.append(out["rec"].item())
    first, last = sum(rec[:5]) / 5, sum(rec[-5:]) / 5
    assert last < 0.7 * first, (first, last)


# -- the prior ------------------------------------------------------------------------------------

def test_prior_is_causal_in_raster_order():
    torch.manual_seed(0)
    prior = CodePrior.from_config({**TINY_PRIOR, "vocab": 10, "positions": 12})
    prior.eval()
    codes = torch.randint(0, 10, (2, 12))
    t = 5
    changed = codes.clone()
    changed[:, t] = (codes[:, t] + 1) % 10
    a, b = prior(prior.inputs(codes)), prior(prior.inputs(changed))
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])  # the logits of codes 0..t never see code t
    assert not torch.allclose(a[:, t + 1], b[:, t + 1])
    lp = prior.log_prob({"x": codes})
    assert lp.shape == (2,) and (lp < 0).all()
    assert prior.likelihood_units({"x": codes}) == 24


def test_cached_sampling_draws_what_full_forward_passes_draw():
    from genzoo.nn.autoregressive import generate
    torch.manual_seed(0)
    prior = CodePrior.from_config({**TINY_PRIOR, "vocab": 10, "positions": 12}).eval()
    prefix = torch.randint(0, 10, (3, 4))
    fast = prior.sample_codes(prefix, torch.Generator().manual_seed(1), 0.9, 5)
    seq = torch.cat([torch.full((3, 1), prior.start_token), prefix], 1)
    with torch.no_grad():
        ref = generate(seq, lambda s: prior(s)[:, -1], torch.Generator().manual_seed(1), 8, 0.9, 5)
    assert torch.equal(fast, ref[:, 1:])


# -- the pipeline ---------------------------------------------------------------------------------

def test_pipeline_wiring_stage_data_and_figures():
    pipe = tiny_pipeline()
    ae, prior = pipe.autoencoder, pipe.prior
    assert prior.config.vocab == 16 and prior.config.positions == 64  # 16 px / 2 = 8 x 8 codes
    assert VQGAN.component_config("autoencoder", ImageData(torch.rand(2, 1, 32, 32)), {}) == \
        {"image_size": 32, "channels": 1}
    data = ImageData(torch.rand(5, 3, 16, 16))
    codes = VQGAN.stage_data("prior", data, {"autoencoder": ae})
    assert isinstance(codes, CodeData) and codes.x.shape == (5, 64) and codes.x.dtype == torch.long
    assert VQGAN.stage_data("autoencoder", data, {}) is data
    prior.setup(codes)
    assert prior.loss(codes.batch(torch.arange(2)))["loss"].item() > 0
    figs = pipe.figures(data)
    assert 0 < figs["recon_mse"] < 1 and figs["psnr_db"] > 0
    assert 1 <= figs["codebook_perplexity"] <= 16 and 0 < figs["codes_used_test"] <= 1
    assert figs["prior_bits_per_code"] == pytest.approx(math.log2(16), rel=0.2)  # untrained


def test_examples_round_trip_as_an_artifact():
    pipe = tiny_pipeline()
    art = pipe.autoencoder.artifacts()
    assert art["examples"].dtype == torch.uint8 and art["examples"].shape == (6, 3, 16, 16)
    fresh = VQAutoencoder.from_config(TINY_AE)
    assert fresh.artifacts() == {"examples": None}
    fresh.load_artifacts(art)
    assert torch.equal(fresh.examples, art["examples"])


# -- samplers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,shape", [(PriorSampler(), (5, 3, 16, 16)),
                                           (ReconstructSampler(), (5, 3, 16, 32)),
                                           (CodesSampler(top_k=4), (5, 3, 16, 32)),
                                           (CompleteSampler(temperature=0.8), (5, 3, 16, 48))])
def test_sampler_shapes_and_ranges(sampler, shape):
    pipe = tiny_pipeline()
    out = draw(pipe, sampler, 5, torch.Generator().manual_seed(0), family="vqgan")
    assert out.images.shape == shape
    assert out.images.min() >= 0 and out.images.max() <= 1


def test_reconstruct_works_on_the_autoencoder_alone():
    pipe = tiny_pipeline()
    out = draw(pipe.autoencoder, ReconstructSampler(), 3, torch.Generator().manual_seed(0))
    assert out.images.shape == (3, 3, 16, 32)
    with pytest.raises(ConfigError, match="needs the trained prior"):
        draw(pipe.autoencoder, PriorSampler(), 3, torch.Generator().manual_seed(0))


def test_complete_keeps_the_given_codes():
    pipe = tiny_pipeline()
    ae = pipe.autoencoder
    x = ae.examples[:4].float() / 255
    for rows in (None, 3):
        s = CompleteSampler(rows=rows)
        with torch.no_grad():
            codes = s.complete_codes(pipe, x, torch.Generator().manual_seed(0))
            real = ae.encode_codes(x)
        keep = 4 if rows is None else rows
        assert torch.equal(codes[:, :keep], real[:, :keep])
        assert codes.shape == real.shape


def test_bad_options_are_one_line():
    pipe = tiny_pipeline()
    g = torch.Generator().manual_seed(0)
    for bad in ({"temperature": 0}, {"temperature": float("nan")}, {"top_k": 0}):
        with pytest.raises(ConfigError) as e:
            PriorSampler(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="larger than the codebook"):
        draw(pipe, PriorSampler(top_k=17), 1, g)
    with pytest.raises(ConfigError, match="more than the code grid"):
        draw(pipe, CompleteSampler(rows=9), 1, g)
    with pytest.raises(ConfigError):
        CompleteSampler(rows=-1)
    with pytest.raises(ConfigError, match="keeps no example images"):
        draw(VQAutoencoder.from_config(TINY_AE), ReconstructSampler(), 1, g)
    with pytest.raises(ConfigError):
        VQAutoencoder.from_config({**TINY_AE, "image_size": 15})
    assert CodeSampleOptions().temperature == 1.0
