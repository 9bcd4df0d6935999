"""Autoencoder and VAE families: the book's shapes, the ELBO's pieces, honest likelihoods,
reproducible samples, the latent commands and their one-line errors."""
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo.cli import cli
from genzoo.nn import latent
from genzoo.core.data import DataConfig, load
from genzoo.errors import ConfigError
from genzoo.plugins.vae import (Autoencoder, AutoencoderConfig, VAE, VAEConfig,
                                discretised_gaussian_log_prob)
from cli_checks import one_line_error

def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def tiny_vae(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(image_size=16, filters=(4, 8), latent_dim=3, **kw)).eval()


# -- architecture -----------------------------------------------------------------------------

def test_book_autoencoder_has_the_books_encoder_and_decoder_sizes():
    model = genzoo.create_model("autoencoder", preset="book")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(model.encoder), count(model.decoder)) == (96_770, 246_273)  # Keras summary
    vae = genzoo.create_model("vae-fashion", preset="book")
    assert count(vae.encoder) == 96_770 + 4_098  # one more Dense(2) for z_log_var


def test_faces_vae_is_the_books_32px_network():
    model = genzoo.create_model("vae-faces", preset="book")
    c = model.config
    assert (c.image_size, c.channels, c.latent_dim, c.filters, c.beta) == (32, 3, 200, (128,) * 4, 2000)
    assert c.batch_norm and c.recon == "mse"
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert model.encode(x).shape == (2, 200)
    out = model.decode(torch.randn(2, 200))
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_image_size_must_divide_by_the_strides():
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*len\\(filters\\) = 8"):
        genzoo.create_model("autoencoder", **{"data.size": 28})


# -- the ELBO and the likelihood --------------------------------------------------------------

def test_loss_is_beta_weighted_reconstruction_plus_kl():
    model = tiny_vae(beta=7.0).train()
    torch.manual_seed(1)
    out = model.loss({"x": torch.rand(4, 1, 16, 16)})
    assert {"loss", "recon", "kl", "elbo", "mse"} <= set(out)
    expected = 7.0 * float(out["recon"]) + float(out["kl"])
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mean,var,kl", [
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 0.0),  # the posterior is the prior
    # per dim 0.5 (mu^2 + var - 1 - ln var): 0.5 (4 - ln 4) + 2 + 0.5 (-0.75 + ln 4) = 3.625
    ([1.0, 2.0, 0.0], [4.0, 1.0, 0.25], 3.625),
])
def test_kl_is_the_closed_form_on_a_known_posterior(monkeypatch, mean, var, kl):
    model = tiny_vae().train()
    z_mean = torch.tensor([mean, mean])
    z_log_var = torch.tensor([var, var]).log()
    monkeypatch.setattr(model, "encode_dist", lambda x: (z_mean, z_log_var))
    out = model.loss({"x": torch.rand(2, 1, 16, 16)})
    assert float(out["kl"]) == pytest.approx(kl, abs=1e-6)


def test_kl_matches_torch_distributions():
    model = tiny_vae()
    x = torch.rand(3, 1, 16, 16)
    mu, log_var = model.encode_dist(x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean().detach()
    torch.manual_seed(0)
    assert float(model.train().loss({"x": x})["kl"]) == pytest.approx(float(expected), rel=1e-5)


def test_discretised_gaussian_is_a_distribution_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1) / 255
    for mean, sigma in [(0.3, 0.05), (0.0, 0.9), (1.0, 0.01), (0.5, 3.0)]:
        lp = discretised_gaussian_log_prob(levels, torch.full_like(levels, mean), sigma).double()
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("recon", ["bce", "mse"])
def test_log_prob_is_a_repeatable_bound_tighter_than_the_elbo(recon):
    model = tiny_vae(recon=recon, beta=200.0)
    x = torch.rand(6, 1, 16, 16)
    iw = model.log_prob({"x": x}, k=32)
    assert iw.shape == (6,) and torch.equal(iw, model.log_prob({"x": x}, k=32))  # fixed noise
    assert (iw < 0).all()  # log of a probability of a discrete image
    log_w = model.log_weights(x, 32)
    assert torch.allclose(iw, torch.logsumexp(log_w, 0) - math.log(32))
    assert (iw >= log_w.mean(0)).all()  # Jensen: never looser than the 32-sample ELBO
    assert torch.equal(model.log_prob({"x": x}, k=1), log_w[0])
    assert not model.training


def test_bernoulli_likelihood_is_on_binarised_pixels():
    model = tiny_vae(recon="bce")
    x = torch.rand(2, 1, 16, 16)
    logits = torch.randn(2, 1, 16, 16)
    b = (x > 0.5).float()
    p = torch.sigmoid(logits)
    expected = (b * p.log() + (1 - b) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(model.log_px(x, logits), expected, atol=1e-4)


def test_default_sigma_makes_the_loss_the_negative_elbo():
    model = tiny_vae(recon="mse", beta=2000.0)
    assert model.sigma == pytest.approx(math.sqrt(256 / 4000))
    assert tiny_vae(recon="mse", sigma=0.1).sigma == 0.1


# -- training ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Brief training of each family, shared by the tests below (the real quick presets are the
    slow test at the end of this file)."""
    from tiny import tiny as make  # tests/tiny.py, as the `tiny` fixture (function-scoped) gives it
    runs = {}

    def get(name):
        if name not in runs:
            out = tmp_path_factory.mktemp("runs") / name
            runs[name] = genzoo.train(name, out=str(out), **make(name, steps=60))
        return runs[name]
    return get


@pytest.mark.parametrize("name", ["autoencoder", "vae-fashion"])
def test_reconstructions_beat_the_mean_image_after_brief_training(tiny_run, name):
    run = tiny_run(name)
    loaded = genzoo.load_run(str(run.path))
    train = load(DataConfig(**loaded.config["data"]), "train")
    err = latent.reconstruction_error(loaded.model, train.x)
    assert err["ratio"] > 1.3, err  # decode(encode(x)) is clearly closer than the mean image
    tests = [m for m in run.metrics() if m.get("split") == "test"]
    assert tests and math.isfinite(tests[-1]["loss"])


def test_autoencoder_prior_is_fitted_to_its_embeddings(tiny_run):
    model = genzoo.load_run(str(tiny_run("autoencoder").path)).model
    assert float(model.embed_updates) == 60
    z = latent.encode(model, load(DataConfig(name="fashion-mnist-1k", size=32), "train").x)
    spread = float(z.std(0).max())
    assert torch.allclose(model.prior_mean, z.mean(0), atol=0.5 * spread)
    draws = model.sample_latent(4000, torch.Generator().manual_seed(0))
    assert torch.allclose(draws.mean(0), model.prior_mean, atol=0.1 * spread)


def test_vae_fitted_sampler_draws_around_the_posterior_means(tiny_run):
    loaded = genzoo.load_run(str(tiny_run("vae-fashion").path))
    model = loaded.model
    z = latent.encode(model, load(DataConfig(name="fashion-mnist-1k", size=32), "train").x)
    assert torch.allclose(model.embed_mean, z.mean(0), atol=0.5 * float(z.std(0).max()))
    a = loaded.sample(4, seed=1, sampler="fitted").images
    assert torch.equal(a, loaded.sample(4, seed=1, sampler="fitted").images)
    assert not torch.equal(a, loaded.sample(4, seed=1).images)  # the prior sampler: N(0, I)


def test_samples_are_reproducible_with_a_seed(tiny_run, tmp_path):
    run = tiny_run("vae-fashion")
    loaded = genzoo.load_run(str(run.path))
    a, b, c = loaded.sample(6, seed=3).images, loaded.sample(6, seed=3).images, loaded.sample(6, seed=4).images
    assert a.shape == (6, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    cool = loaded.sample(6, seed=3, temperature=0.1).images
    assert float(cool.std(0).mean()) < float(a.std(0).mean())  # near the prior mean: less varied
    outs = [tmp_path / f"s{i}.png" for i in range(2)]
    for out in outs:
        assert invoke("sample", run.path, "--n", 4, "--seed", 11, "--out", out).exit_code == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_eval_reports_nats_for_the_vae(tiny_run):
    from genzoo.core.metrics import evaluate
    result = evaluate(str(tiny_run("vae-fashion").path))
    assert result["nll_nats"] > 0 and 0 < result["bits_per_dim"] < 1  # binary pixels: <= 1 bit
    assert result["nll_nats"] <= -result["loss/elbo"] + 5  # the k=16 bound is no looser than the ELBO


# -- the latent commands on a CelebA-style folder ---------------------------------------------

ATTRS = ["Smiling", "Eyeglasses"]


def write_faces(folder: Path, n: int = 40) -> Path:
    """Tiny 'faces' and a list_attr_celeba.csv in CelebA's format (image_id, then -1/1)."""
    from PIL import Image, ImageDraw
    folder.mkdir(parents=True)
    rows = ["image_id," + ",".join(ATTRS)]
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        smiling, glasses = i % 2 == 0, i % 3 == 0
        background = tuple(int(v) for v in torch.randint(150, 255, (3,), generator=g))
        im = Image.new("RGB", (20, 20), background)
        d = ImageDraw.Draw(im)
        d.ellipse((3, 3, 16, 16), fill=(240, 200, 60))
        d.line((6, 13, 13, 13) if not smiling else (6, 11, 9, 14, 13, 11), fill=(90, 30, 0), width=2)
        if glasses:
            d.rectangle((5, 6, 14, 8), fill=(0, 0, 0))
        name = f"{i + 1:06d}.jpg"
        im.save(folder / name, quality=95)
        rows.append(f"{name},{1 if smiling else -1},{1 if glasses else -1}")
    (folder / "list_attr_celeba.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    folder = write_faces(root / "faces")
    res = invoke("train", "vae-faces", "--data", f"folder:{folder}", "--steps", 15, "--batch-size", 16,
                 "--set", "data.size=16", "--set", "filters=[8,8,8,8]", "--set", "latent_dim=8",
                 "--set", "sample_every=0", "--data-root", root / "cache", "--out", root / "run",
                 "--no-progress")
    assert res.exit_code == 0, res.output
    return root / "run"


def test_latent_commands_write_pngs(faces_run, tmp_path):
    runs = {
        "reconstruct": ["--n", 6],
        "interpolate": ["--pairs", 2, "--steps", 4],
        "latent-plot": ["--color-by", "Smiling"],
        "attribute": ["--attribute", "Smiling", "--scales", "-2,0,2", "--n", 3],
    }
    for command, args in runs.items():
        out = tmp_path / f"{command}.png"
        res = invoke(command, faces_run, *args, "--out", out)
        assert res.exit_code == 0, (command, res.output)
        assert out.read_bytes()[:4] == b"\x89PNG", command
    from PIL import Image
    from genzoo.core.sample import grid_padding, upscale_factor

    def grid(cols, rows, side=16):  # cells upscaled (nearest) so the grid is >= 512 px wide
        f = upscale_factor(side, cols)
        pad = grid_padding(f)
        return cols * (side * f + pad) + pad, rows * (side * f + pad) + pad
    # attribute grid: 3 rows of (input + 3 scales)
    assert Image.open(tmp_path / "attribute.png").size == grid(4, 3)
    # interpolate with an encoder: inputs at both ends, one row per pair and method
    assert Image.open(tmp_path / "interpolate.png").size == grid(6, 4)
    assert grid(6, 4)[0] >= 512 and grid(4, 3)[0] >= 512
    res = invoke("attribute", faces_run, "--attribute", "Smiling", "--out", tmp_path / "a.png")
    assert "Smiling: " in res.output and " with, " in res.output


def test_interpolate_between_prior_draws_is_reproducible(faces_run, tmp_path):
    outs = [tmp_path / f"i{i}.png" for i in range(2)]
    for out in outs:
        res = invoke("interpolate", faces_run, "--prior", "--seed", 5, "--method", "spherical",
                     "--out", out)
        assert res.exit_code == 0 and "prior pair" in res.output, res.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.mark.parametrize("args,needles", [
    (["attribute", "{run}", "--attribute", "Smilng"],
     ["unknown attribute 'Smilng' (did you mean 'Smiling'?); available: Smiling, Eyeglasses"]),
    (["attribute", "{run}", "--attribute", "Smiling", "--scales", "1,x"], ["bad scales '1,x'"]),
    (["reconstruct", "{run}", "--set", "size=32"],
     ["trained on 3x16x16 images (CxHxW), got 3x32x32", "data.size=16"]),
    (["latent-plot", "{run}", "--set", "sise=32"], ["unknown data key 'sise'"]),
    (["reconstruct", "/no/such/run"], ["no run at /no/such/run"]),
])
def test_latent_command_mistakes_are_one_line(faces_run, args, needles):
    one_line_error(invoke(*[str(a).format(run=faces_run) for a in args]), *needles)


def test_reconstruct_on_a_model_without_encoder_is_one_line(tmp_path):
    """A generator-only family (a GAN's shape) registered on the fly, and a run folder for it."""
    from genzoo.core import checkpoint as ckpt
    from genzoo.core.registry import FamilyEntry, registry
    from test_latent import fake_gan
    registry().families["fake-gan"] = FamilyEntry(
        "fake-gan", "test_latent:FakeGAN", {"prior": latent.PriorSampler}, "prior")
    run = ckpt.Run.create("fake-gan", tmp_path / "gan")
    run.write_config({"name": "fake-gan", "family": "fake-gan", "model": {}, "sampler": "prior",
                      "data": {"name": "fashion-mnist-1k", "size": 8}})
    ckpt.save_weights(fake_gan(), run.weights_path)
    one_line_error(invoke("reconstruct", run.path),
                   "`zoo reconstruct` on fake-gan", "needs an encoder, and FakeGAN has none")
    one_line_error(invoke("attribute", run.path, "--attribute", "Coat"), "needs an encoder")
    res = invoke("interpolate", run.path, "--pairs", 1, "--steps", 3, "--out", tmp_path / "i.png")
    assert res.exit_code == 0 and "prior pair" in res.output, res.output
    assert invoke("sample", run.path, "--n", 2, "--out", tmp_path / "s.png").exit_code == 0


def test_bench_records_training_and_decode_latency(tmp_path):
    out = tmp_path / "b.json"
    res = invoke("bench", "vae-fashion", "--preset", "quick", "--repeats", 1, "--n", 2,
                 "--batch-size", 8, "--steps", 1, "--json", out)
    assert res.exit_code == 0, res.output
    metrics = {(r["metric"], r["setting"].split()[0]) for r in json.loads(out.read_text())}
    assert ("sample_latency", "sampler=prior") in metrics


# -- the quick presets, as `zoo run` users get them (minutes: -m slow) ------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["autoencoder", "vae-fashion", "vae-faces"])
def test_quick_preset_reconstructs_far_better_than_the_mean_image(tmp_path, name):
    run = genzoo.train(name, out=str(tmp_path / name))
    loaded = genzoo.load_run(str(run.path))
    train = load(DataConfig(**loaded.config["data"]), "train")
    err = latent.reconstruction_error(loaded.model, train.x)
    assert err["ratio"] > 2.0, err
