"""genzoo.nn.latent on its own: slerp's endpoints and norms, interpolate's shapes, and that
batched encode / decode give what one big batch gives (batch norm in eval mode, mode restored).
tests/test_latent.py covers the grids, attribute vectors and plots built on them."""
import math

import pytest
import torch

from genzoo.errors import DataError
from genzoo.nn import latent
from genzoo.plugins.vae import VAE, VAEConfig


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


# -- slerp and interpolate ----------------------------------------------------------------------

def test_slerp_starts_and_ends_at_its_endpoints():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g) * 3
    assert torch.allclose(latent.slerp(z0, z1, torch.tensor(0.0)), z0, atol=1e-5)
    assert torch.allclose(latent.slerp(z0, z1, torch.tensor(1.0)), z1, atol=1e-5)


def test_slerp_between_unit_vectors_stays_on_the_unit_sphere():
    g = torch.Generator().manual_seed(1)
    z0, z1 = unit(torch.randn(32, 10, generator=g)), unit(torch.randn(32, 10, generator=g))
    t = torch.linspace(0, 1, 11).view(1, 11, 1)
    path = latent.slerp(z0[:, None], z1[:, None], t)
    assert torch.allclose(path.norm(dim=-1), torch.ones(32, 11), atol=1e-5)
    # the straight line cuts inside: its midpoint has norm cos(omega / 2) < 1
    omega = torch.arccos((z0 * z1).sum(-1))
    mid = latent.lerp(z0, z1, torch.tensor(0.5)).norm(dim=-1)
    assert torch.allclose(mid, torch.cos(omega / 2), atol=1e-5) and (mid < 1).all()


def test_slerp_moves_at_a_constant_angle_per_step():
    z0, z1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # a quarter circle
    path = latent.interpolate(z0, z1, 5, "spherical")[0]
    angles = torch.atan2(path[:, 1], path[:, 0])
    assert torch.allclose(angles, torch.linspace(0, math.pi / 2, 5), atol=1e-6)
    assert torch.allclose(path[2], torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-6)


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolate_shapes(method):
    d, steps = 6, 4
    assert latent.interpolate(torch.zeros(d), torch.ones(d), steps, method).shape == (1, steps, d)
    z0, z1 = torch.randn(3, d), torch.randn(3, d)
    path = latent.interpolate(z0, z1, steps, method)
    assert path.shape == (3, steps, d)
    assert torch.allclose(path[:, 0], z0, atol=1e-5) and torch.allclose(path[:, -1], z1, atol=1e-5)
    # one start, many ends: the single row broadcasts
    assert latent.interpolate(z0[:1], z1, steps, method).shape == (3, steps, d)


# -- encode / decode ----------------------------------------------------------------------------

@pytest.fixture
def vae() -> VAE:
    """A VAE with batch norm whose running statistics are not the defaults, in training mode:
    encode / decode must switch to eval (running statistics) and back."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=8, filters=(4, 8), latent_dim=5, batch_norm=True))
    with torch.no_grad():  # a training-mode pass moves the running statistics off 0 / 1
        model.train().loss({"x": torch.rand(16, 1, 8, 8) * 0.5 + 0.3})
    return model


def test_batched_encode_equals_one_big_batch(vae):
    x = torch.rand(23, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    whole = latent.encode(vae, x, batch_size=64)
    for batch_size in (1, 4, 10):
        assert torch.allclose(latent.encode(vae, x, batch_size=batch_size), whole, atol=1e-6)
    assert whole.shape == (23, 5) and whole.device.type == "cpu"
    assert vae.training  # the mode it came in with
    vae.eval()
    assert torch.allclose(vae.encode(x), whole, atol=1e-6)  # eval mode: running statistics
    # uint8 images are read as x / 255
    x8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(latent.encode(vae, x8), latent.encode(vae, x8.float() / 255), atol=1e-6)
    assert latent.encode(vae, x[:0]).shape == (0, 5)


def test_batched_decode_equals_one_big_batch(vae):
    z = torch.randn(19, 5, generator=torch.Generator().manual_seed(3)) * 2
    whole = latent.decode(vae, z, batch_size=64)
    for batch_size in (1, 7):
        assert torch.allclose(latent.decode(vae, z, batch_size=batch_size), whole, atol=1e-6)
    assert whole.shape == (19, 1, 8, 8) and 0 <= float(whole.min()) and float(whole.max()) <= 1
    assert vae.training and not whole.requires_grad
    recon = latent.reconstruct(vae, torch.rand(3, 1, 8, 8))
    assert recon.shape == (3, 1, 8, 8)


def test_decode_refuses_latents_of_the_wrong_shape(vae):
    for bad in (torch.zeros(2, 4), torch.zeros(5), torch.zeros(0, 5)):
        with pytest.raises(DataError, match=r"expected latents of shape \(n >= 1, 5\)"):
            latent.decode(vae, bad)


def test_prior_sampler_is_seeded_and_temperature_shrinks_about_the_centre(vae):
    draw = lambda seed, **o: latent.PriorSampler(**o).sample(  # noqa: E731
        vae, 4, torch.Generator().manual_seed(seed))
    a, b, c = draw(3), draw(3), draw(4)
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    z = latent.sample_latent(vae, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, latent.decode(vae, z))  # the sampler decodes its prior draws
    cold = latent.sample_latent(vae, 4, torch.Generator().manual_seed(3), temperature=0.25)
    assert torch.allclose(cold, 0.25 * z)  # a VAE's prior is centred at 0
