"""genzoo.nn.latent: interpolation, attribute vectors, PCA, grids, and the latent protocol on a
model without an encoder (as a GAN's generator is)."""
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from genzoo.nn import latent
from genzoo.core.data import ImageData
from genzoo.core.model import Model
from genzoo.errors import ConfigError, DataError


@dataclass
class FakeGANConfig:
    latent_dim: int = 6
    image_size: int = 8


class FakeGAN(Model):
    """The smallest model with the latent protocol and no encoder."""

    Config = FakeGANConfig

    def __init__(self, config: FakeGANConfig):
        super().__init__(config)
        self.net = nn.Linear(config.latent_dim, config.image_size ** 2)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def sample_latent(self, n, generator):
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def decode(self, z):
        s = self.config.image_size
        return torch.sigmoid(self.net(z)).view(-1, 1, s, s)

    def image_shape(self):
        return 1, self.config.image_size, self.config.image_size


def fake_gan() -> FakeGAN:
    torch.manual_seed(0)
    return FakeGAN(FakeGANConfig())


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolation_paths_start_and_end_at_the_endpoints(method):
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    path = latent.interpolate(z0, z1, 7, method)
    assert path.shape == (3, 7, 5)
    assert torch.allclose(path[:, 0], z0, atol=1e-5) and torch.allclose(path[:, -1], z1, atol=1e-5)


def test_slerp_keeps_prior_draws_on_their_shell_where_lerp_cuts_inside():
    g = torch.Generator().manual_seed(1)
    d = 512
    z0, z1 = torch.randn(64, d, generator=g), torch.randn(64, d, generator=g)
    mid_lin = latent.interpolate(z0, z1, 3, "linear")[:, 1].norm(dim=1)
    mid_sph = latent.interpolate(z0, z1, 3, "spherical")[:, 1].norm(dim=1)
    shell = math.sqrt(d)
    assert abs(float(mid_sph.mean()) / shell - 1) < 0.02
    assert abs(float(mid_lin.mean()) / shell - 1 / math.sqrt(2)) < 0.03


def test_slerp_norm_moves_linearly_and_survives_parallel_and_opposite_points():
    z0 = torch.tensor([[2.0, 0.0]])
    z1 = torch.tensor([[0.0, 4.0]])
    path = latent.interpolate(z0, z1, 5, "spherical")[0]
    assert torch.allclose(path.norm(dim=1), torch.linspace(2, 4, 5), atol=1e-5)
    assert torch.allclose(path[2] / path[2].norm(), torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-5)
    # (anti)parallel: the circle is undefined; we fall back to the straight line, never NaN
    for other in ([[3.0, 0.0]], [[-2.0, 0.0]], [[0.0, 0.0]]):
        p = latent.interpolate(z0, torch.tensor(other), 5, "spherical")
        assert torch.isfinite(p).all()
        assert torch.allclose(p, latent.interpolate(z0, torch.tensor(other), 5, "linear"))


def test_interpolate_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="steps must be >= 2"):
        latent.interpolate(torch.zeros(2), torch.ones(2), 1)
    with pytest.raises(ConfigError, match="valid: linear, spherical"):
        latent.interpolate(torch.zeros(2), torch.ones(2), 3, "cubic")


def test_attribute_vector_is_the_difference_of_class_means():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0], [0.0, 2.0]])
    has = torch.tensor([True, True, False, False])
    v = latent.attribute_vector(z, has)
    assert torch.allclose(v, torch.tensor([2.0, 0.0]))
    assert torch.allclose(latent.attribute_vector(z, has, unit=True), torch.tensor([1.0, 0.0]))
    with pytest.raises(DataError, match="none of the 4 images have 'Smiling'"):
        latent.attribute_vector(z, torch.zeros(4, dtype=torch.bool), "Smiling")
    with pytest.raises(DataError, match="all of the 4"):
        latent.attribute_vector(z, torch.ones(4, dtype=torch.bool))


def test_attribute_lookup_lists_the_available_ones():
    data = ImageData(torch.zeros(3, 1, 4, 4), attributes=torch.tensor([[1, 0], [0, 1], [1, 1]]).bool(),
                     attribute_names=["Smiling", "Eyeglasses"], name="faces")
    assert latent.attribute_mask(data, "Smiling").tolist() == [True, False, True]
    assert latent.attribute_mask(data, "eyeglasses").tolist() == [False, True, True]
    with pytest.raises(DataError) as e:
        latent.attribute_mask(data, "Smilng")
    assert str(e.value) == ("unknown attribute 'Smilng' (did you mean 'Smiling'?); "
                            "available: Smiling, Eyeglasses")
    with pytest.raises(DataError, match="faces has no attributes"):
        latent.attribute_mask(ImageData(torch.zeros(2, 1, 4, 4), name="faces"), "Smiling")


def test_pca_projection_matches_sklearn():
    from sklearn.decomposition import PCA
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    xy, explained = latent.project_2d(z)
    ref = PCA(2).fit(z.numpy())
    proj = torch.from_numpy(ref.transform(z.numpy())).float()
    assert torch.allclose(xy.abs(), proj.abs(), atol=1e-3)  # same axes up to sign
    assert explained == pytest.approx(list(ref.explained_variance_ratio_), abs=1e-5)
    two = torch.randn(10, 2, generator=g)
    assert torch.equal(latent.project_2d(two)[0], two)  # 2-d latents are plotted as they are


def test_latent_scatter_writes_a_png(tmp_path):
    z = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    path = latent.latent_scatter(z, tmp_path / "s.png", torch.arange(40) % 3, ["a", "b", "c"])
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_reconstruction_grid_pairs_rows_and_pads():
    x, x_hat = torch.zeros(5, 1, 2, 2), torch.full((5, 1, 2, 2), 0.5)
    grid = latent.reconstruction_grid(x, x_hat, per_row=3)
    assert grid.shape == (12, 1, 2, 2)  # rows: 3 inputs, 3 recons, 2 inputs + pad, 2 recons + pad
    assert (grid[:3] == 0).all() and (grid[3:6] == 0.5).all() and (grid[8] == 1).all()


def test_parse_scales():
    assert latent.parse_scales("-3,-1,0,1,3") == [-3, -1, 0, 1, 3]
    for bad in ("", "a,b", "1,,nan"):
        with pytest.raises(ConfigError, match="bad scales"):
            latent.parse_scales(bad)


def test_model_without_encoder_samples_and_interpolates_but_cannot_encode():
    model = fake_gan()
    a = latent.PriorSampler().sample(model, 4, torch.Generator().manual_seed(3))
    b = latent.PriorSampler().sample(model, 4, torch.Generator().manual_seed(3))
    c = latent.PriorSampler().sample(model, 4, torch.Generator().manual_seed(4))
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    z0, z1 = latent.endpoints(model, 2, torch.Generator().manual_seed(0))
    grid = latent.interpolation_grid(model, z0, z1, steps=5)
    assert grid.shape == (2 * 2 * 5, 1, 8, 8) and 0 <= grid.min() and grid.max() <= 1
    assert latent.has_encoder(model) is False
    with pytest.raises(ConfigError, match="needs an encoder, and FakeGAN has none"):
        latent.encode(model, torch.zeros(2, 1, 8, 8))


def test_temperature_scales_about_the_prior_centre():
    model = fake_gan()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    z = latent.sample_latent(model, 5, g())
    assert torch.allclose(latent.sample_latent(model, 5, g(), temperature=0.5), 0.5 * z)
    model.prior_mean = torch.full((model.latent_dim,), 2.0)
    assert torch.allclose(latent.sample_latent(model, 5, g(), temperature=0.5), 2 + 0.5 * (z - 2))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        latent.sample_latent(model, 5, g(), temperature=0)


def test_wrong_image_size_is_one_clear_line():
    with pytest.raises(DataError) as e:
        latent.check_images(fake_gan(), torch.zeros(2, 1, 16, 16))
    assert "trained on 1x8x8 images (CxHxW), got 1x16x16" in str(e.value)
    assert "\n" not in str(e.value)


def test_commands_module_imports_no_torch():
    import subprocess
    import sys
    code = "import sys, genzoo.cli, genzoo.commands.latent; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
