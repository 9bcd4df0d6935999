"""genzoo.nn.gan and genzoo.nn.utils: the gradient penalty (by hand, and in fp32 under autocast),
the DCGAN init, frozen and eval_mode."""
import pytest
import torch
from torch import nn

from genzoo.nn.gan import gradient_penalty, init_weights
from genzoo.nn.utils import eval_mode, frozen


def test_penalty_of_a_linear_critic_and_its_gradient_by_hand():
    # C(x) = Wx + b has gradient W at every point: the penalty is (||W|| - 1)^2, and its
    # gradient with respect to W (through the double backward) is 2 (||W|| - 1) W / ||W||
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, -1.0, 2.0]]))  # ||W|| = 3
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    gp = gradient_penalty(critic, real, fake)
    assert gp.dtype == torch.float32 and gp.item() == pytest.approx(4.0)
    gp.backward()
    w = critic.weight.detach()
    assert torch.allclose(critic.weight.grad, 2 * (3 - 1) * w / 3)
    assert critic.bias.grad is None or torch.equal(critic.bias.grad, torch.zeros(1))


def test_penalty_is_taken_between_real_and_fake_with_alpha_from_the_global_rng():
    # C(x) = ||x||^2 / 2 has gradient x: the penalty is E[(||x_hat|| - 1)^2] at
    # x_hat = real + alpha (fake - real), alpha ~ U(0, 1) per example
    real, fake = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    torch.manual_seed(7)
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).flatten(1).sum(1), real, fake)
    torch.manual_seed(7)
    alpha = torch.rand(4, 1, 1)
    x_hat = real + alpha * (fake - real)
    want = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(gp, want)


def small_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 1))


def test_under_bf16_autocast_the_penalty_is_the_fp32_one():
    critic = small_critic()
    real, fake = torch.randn(6, 2, 8, 8), torch.randn(6, 2, 8, 8).bfloat16()  # a bf16 fake
    torch.manual_seed(1)
    plain = gradient_penalty(critic, real, fake.float())
    (plain_grad,) = torch.autograd.grad(plain, critic[0].weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert critic(real).dtype == torch.bfloat16  # autocast is on around the penalty
        torch.manual_seed(1)
        gp = gradient_penalty(critic, real, fake)
    assert gp.dtype == torch.float32 and torch.isfinite(gp)
    (grad,) = torch.autograd.grad(gp, critic[0].weight)
    # computed in fp32 inside autocast: bit for bit the penalty, and the gradient, without it
    assert torch.equal(gp, plain) and torch.equal(grad, plain_grad)


def test_penalty_of_a_flat_critic_is_one_and_finite_gradients():
    # a critic whose input gradient is 0: the norm's gradient would be 0/0 without the eps
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.zero_()
    gp = gradient_penalty(critic, torch.randn(3, 4), torch.randn(3, 4))
    gp.backward()
    assert gp.item() == pytest.approx(1.0, abs=1e-5) and torch.isfinite(critic.weight.grad).all()


def test_init_weights_is_dcgan_normal():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 64, 4), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 32, 4),
                        nn.Conv3d(8, 16, 3), nn.Linear(256, 128))
    assert init_weights(net) is net
    for layer in (net[0], net[2], net[3], net[4]):
        w = layer.weight.detach()
        assert abs(float(w.mean())) < 0.002 and float(w.std()) == pytest.approx(0.02, rel=0.05)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    bn = net[1].requires_grad_(False)
    assert float(bn.weight.mean()) == pytest.approx(1.0, abs=0.01)
    assert 0.01 < float(bn.weight.std()) < 0.03 and torch.equal(bn.bias, torch.zeros(64))
    # MuseGAN's variant leaves batch norm at its defaults, and draws the same conv weights
    torch.manual_seed(0)
    other = nn.Sequential(nn.Conv2d(64, 64, 4), nn.BatchNorm2d(64))
    init_weights(other, batchnorm=False)
    assert torch.equal(other[1].weight, torch.ones(64))
    assert torch.equal(other[1].bias, torch.zeros(64))


def test_frozen_leaves_no_grad_and_restores_requires_grad():
    gen, critic = nn.Linear(3, 3), nn.Linear(3, 1)
    critic.bias.requires_grad_(False)  # frozen before: stays frozen after
    with frozen(critic):
        assert not any(p.requires_grad for p in critic.parameters())
        critic(gen(torch.randn(4, 3))).sum().backward()
    assert critic.weight.grad is None and critic.bias.grad is None
    assert gen.weight.grad is not None and gen.bias.grad is not None
    assert critic.weight.requires_grad and not critic.bias.requires_grad
    with pytest.raises(RuntimeError, match="inside"):
        with frozen(critic):
            raise RuntimeError("inside")
    assert critic.weight.requires_grad  # restored on an error too


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode(training):
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(training)
    with eval_mode(net):
        assert not net.training and not net[1].training
    assert net.training == training and net[1].training == training
