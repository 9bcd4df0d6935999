"""What the GAN families share (DCGAN, WGAN-GP, CGAN, MuseGAN): the gradient penalty and the DCGAN
weight init.

The penalty is computed in float32 even inside an autocast region: it is a norm of a gradient,
differentiated once more, and a bf16 critic pass rounds both to 8 bits of mantissa (MuseGAN once
had to train in fp32 because of it); the penalty is a small part of a step's cost.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["gradient_penalty", "init_weights"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al.'s E[(||grad_x C(x)||_2 - 1)^2] at random points on the lines between
    real and fake examples (any (B, ...) tensors: images, MuseGAN's 5-d piano rolls), a float32
    scalar whose graph reaches the critic's parameters (``create_graph``).

    The interpolation, the critic's forward pass and the gradient run with autocast disabled, in
    float32, whatever autocast region the caller is in. The book draws alpha from N(0, 1); the
    paper's U(0, 1) keeps the points between the two distributions, where the 1-Lipschitz
    constraint matters. alpha comes from the global RNG (checkpointed: a resumed run draws the
    same points)."""
    with torch.autocast(real.device.type, enabled=False):
        real, fake = real.float(), fake.float()
        alpha = torch.rand(real.shape[0], *[1] * (real.ndim - 1), device=real.device,
                           dtype=real.dtype)
        x_hat = (real + alpha * (fake - real)).detach().requires_grad_(True)
        # view_as: the critic sees a non-leaf, which torch's FlopCounterMode (zoo bench) needs
        score = critic(x_hat.view_as(x_hat)).float()
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
        # eps inside the root: the norm's gradient is 0/0 where a (tiny, freshly initialised)
        # critic is flat, which turned the first steps into nan
        norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()
        return ((norm - 1) ** 2).mean()


def init_weights(model: nn.Module, std: float = 0.02, batchnorm: bool = True) -> nn.Module:
    """Radford et al.'s DCGAN init, on every submodule of `model` in order: convolution,
    transposed convolution and linear weights N(0, std), their biases 0; with `batchnorm`, batch
    norm scales N(1, std) and shifts 0 (the book's MuseGAN keeps batch norm's default 1 and 0:
    ``batchnorm=False``). With torch's default init the quick presets learn slower. Returns
    `model`."""
    def init(m: nn.Module) -> None:
        if isinstance(m, _CONVS):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif batchnorm and isinstance(m, _NORMS) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return model.apply(init)
