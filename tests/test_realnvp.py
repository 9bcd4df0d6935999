"""RealNVP: an exact, invertible flow whose log-determinant, density and training behave."""
import json

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.errors import ConfigError
from genzoo.plugins.realnvp import DensityMap, InverseSampler, PointMap, RealNVP, RealNVPConfig


def small(**kw) -> RealNVP:
    """A seeded flow in float64, for exact-maths checks (training runs use the `tiny` fixture)."""
    torch.manual_seed(0)
    return RealNVP(RealNVPConfig(**{"couplings": 3, "hidden": 16, "layers": 2, **kw})).double().eval()


def test_inverse_undoes_forward():
    model = small()
    x = torch.randn(64, 2, dtype=torch.double) * 2
    z, _ = model(x)
    assert not torch.allclose(z, x)
    assert torch.allclose(model.inverse(z), x, atol=1e-12)
    assert torch.allclose(model(model.inverse(z))[0], z, atol=1e-12)


def test_log_det_equals_the_jacobians():
    model = small(couplings=4)
    x = torch.randn(6, 2, dtype=torch.double)
    _, log_det = model(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0][0], x[i])
        assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, log_det[i], atol=1e-10)


def test_density_integrates_to_one():
    model = small()
    axis, logp = model.density_grid(grid=401, extent=10.0)
    # trapezoid over x then y, in double: a density integrates to 1 over a box holding its mass
    mass = DensityMap(axis.double(), logp.double()).mass()
    assert abs(mass - 1) < 5e-3, mass


def test_book_preset_has_the_books_parameter_count():
    # 2 couplings x (s, t) x [Dense(2->256) + 3 x Dense(256->256) + Dense(256->2)]
    assert genzoo.create_model("realnvp", preset="book").num_params() == 794_632
    assert genzoo.create_model("realnvp-deep", preset="book").num_params() == 3 * 794_632


def test_bad_config_fails_in_one_line():
    with pytest.raises(ValueError, match="couplings must be >= 1"):
        RealNVPConfig(couplings=0)
    with pytest.raises(ConfigError, match="temperature must be"):
        InverseSampler(temperature=0)


def test_sampling_is_reproducible_and_temperature_narrows_it():
    model = small().float()
    sampler = InverseSampler()
    a = sampler.sample(model, 500, torch.Generator().manual_seed(3))
    b = sampler.sample(model, 500, torch.Generator().manual_seed(3))
    c = sampler.sample(model, 500, torch.Generator().manual_seed(4))
    assert torch.equal(a.points, b.points) and not torch.equal(a.points, c.points)
    cold = InverseSampler(temperature=0.3).sample(model, 500, torch.Generator().manual_seed(3))
    za, zc = model(a.points)[0], model(cold.points)[0]
    assert torch.allclose(zc, za * 0.3, atol=1e-4)  # same noise, scaled in latent space


def test_loss_falls_on_two_moons_and_resume_is_bit_exact(tmp_path, tiny):
    cfg = tiny("realnvp", steps=60, **{"train.lr": 3e-3, "train.schedule": "cosine",
                                       "train.log_every": 10})
    full = api.train("realnvp", "quick", cfg, out=tmp_path / "full", progress=False)
    losses = [m["loss"] for m in full.metrics() if "split" not in m]
    # a trend over the whole run, not one lucky batch: nearly every logged step is lower than
    # the one before, and the last steps sit well below the first ones
    assert len(losses) >= 5, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= len(losses) - 2, losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.3, losses
    half = api.train("realnvp", "quick", cfg, out=tmp_path / "half", progress=False, stop_after=25)
    assert json.loads((half.path / "trainer.json").read_text())["step"] == 25
    api.resume(half.path, progress=False)
    a, b = ckpt.load_tensors(full.path / "model.safetensors"), ckpt.load_tensors(half.path / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the training points kept for the latent view travel with the run
    loaded = api.load_run(half.path)
    assert loaded.model.reference is not None and loaded.model.reference.shape[1] == 2
    out = loaded.sample(300, seed=0, inputs={"show": ("latent", "mapping", "density")}, grid=40)
    assert isinstance(out.extras["latent"], PointMap) and isinstance(out.extras["density"], DensityMap)
    paths = loaded.write(out, tmp_path / "views" / "s")
    assert sorted(p.name for p in paths) == ["s-density.png", "s-latent.png", "s-mapping.png", "s.png"]


def test_cli_samples_views_and_refuses_what_points_do_not_take(tmp_path):
    r = CliRunner()
    out = tmp_path / "run"
    res = r.invoke(cli, ["train", "realnvp", "--steps", "3", "--out", str(out), "--no-progress",
                         "--set", "hidden=8", "--set", "couplings=2", "--batch-size", "32"])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["sample", str(out), "--n", "100", "--show", "density", "--set", "grid=20",
                         "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.png").exists() and (tmp_path / "s-density.png").exists()
    res = r.invoke(cli, ["eval", str(out)])
    assert res.exit_code == 0 and "nats_per_point" in res.output

    def fails(args, *needles):
        res = r.invoke(cli, args)
        assert res.exit_code != 0, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1, res.output
        assert all(n in lines[0] for n in needles), res.output

    fails(["sample", str(out), "--label", "1"], "'label'", "inverse")
    fails(["sample", str(out), "--show-chain"], "chain")
    fails(["sample", str(out), "--set", "size=16"], "size")
    fails(["sample", str(out), "--set", "temperature=-1"], "temperature")
    fails(["train", "realnvp", "--set", "size=32", "--out", str(tmp_path / "x")], "'size'", "points")
    fails(["train", "realnvp", "--set", "channels=1", "--out", str(tmp_path / "x")], "'channels'")
    fails(["train", "realnvp", "--data", "fashion-mnist-1k", "--out", str(tmp_path / "x")], "two-moons")
    assert not (tmp_path / "x").exists()
