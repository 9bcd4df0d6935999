"""PixelCNN with a discretised mixture of logistics (Salimans et al. 2017, "PixelCNN++";
Foster ch. 5, "PixelCNN using mixture distributions").

Two changes from the book's first PixelCNN (genzoo/plugins/pixelcnn.py):
- the output is not a softmax over a few levels but, per pixel, a mixture of `mixtures` logistic
  distributions, discretised onto the 256 intensity levels. Neighbouring values share
  probability mass, so 256 levels cost no more parameters than 4, and the loss is a true
  bits/dim over 256 levels (comparable with published PixelCNN++ figures);
- masked convolutions are replaced by two stacks of *shifted* convolutions (van den Oord et al.
  2016b): a "down" stack that sees every pixel in the rows above, and a "down-right" stack that
  sees the pixels to the left in the current row plus (through a 1x1 link) the down stack. A
  masked 3x3 kernel has a blind spot to the upper right; these two stacks have none.

The blocks are PixelCNN++'s gated residual blocks (concat_elu, shifted conv, concat_elu, shifted
conv to 2F channels, gate a * sigmoid(b)). By default this is PixelCNN++ at one resolution, so
the cached sampler can walk the image row by row; to see whole garments without the hierarchy,
the blocks' shifted convolutions are dilated (1, 2, 4, 8, ... cycled): a block of dilation d
widens the view by 2d rows/columns. `resolutions: R` > 1 adds the paper's hierarchy: R - 1
strided shifted convolutions down, as many transposed ones back up, and skip connections from
every down-pass block to the up pass (the paper's fig. 2); most of its blocks run at a quarter
or a sixteenth of the pixels, so the whole past reaches each pixel for little more training
compute. Sampling it walks naively (a pass per pixel over the rows so far), which on a CPU costs
far more than the cached walk: quick pixelcnn-md-mnist at 2-3 resolutions of 1 block each gains
2.88 -> 2.77-2.79 test bits/dim at the same steps, but its confident digits (0.31-0.37 against
0.30-0.34) stay within two trainings' spread, while its 200 samples take minutes instead of a
second, so the quick preset keeps one resolution (benchmarks/quick_presets.md). The paper's weight
normalisation is also left out (Adam trains this size without it).

Colour: with channels=3 the mixture is the paper's: one component choice per pixel, and the
green mean depends linearly on red, blue on red and green (coefficients from the network).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.family import ConfigError, Model, Sampler, uniforms, window_index
from genzoo.nn.autoregressive import raster_sample, raster_steps


@dataclass
class PixelCNNMDConfig:
    image_size: int = 32
    channels: int = 1  # 1 grayscale (the book); 3 RGB with the paper's channel conditioning
    filters: int = 64
    blocks: int = 5  # gated residual blocks per stack (the paper's nr_resnet at one resolution)
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # cycled over the blocks
    mixtures: int = 5  # logistic components per pixel (book: 5)
    dropout: float = 0.0  # inside the gated blocks (paper: 0.5 on CIFAR; book: 0.3)
    sample_temperature: float = 1.0  # the samplers' temperature when they are not given one
    # PixelCNN++'s hierarchy: 1 keeps one resolution (the cached sampler's walk); R > 1 halves
    # the resolution R - 1 times on the way down and doubles it back on the way up, with
    # `blocks` gated blocks per resolution and the paper's skip connections (sampled naively)
    resolutions: int = 1
    # in training only: Gaussian noise of this standard deviation (on the network's [-1, 1]
    # scale) added to the pixels the network conditions on, the targets kept clean. Teacher
    # forcing shows the network only perfect pasts; when it samples, it conditions on its own
    # slightly wrong pixels, and a small network's mistakes compound into strokes that wander.
    # Trained on a blurred past, it learns to continue a stroke from roughly where it is. The
    # likelihood of clean images gets worse (the price: test bits/dim 2.88 -> 3.3 at 0.3 on quick
    # MNIST), the samples' digits surer (benchmarks/quick_presets.md). 0: the paper's training.
    input_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.mixtures < 1:
            raise ValueError(f"mixtures must be >= 1, got {self.mixtures}")
        if self.filters < 1 or self.blocks < 0:
            raise ValueError("filters must be >= 1 and blocks >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be a non-empty list of integers >= 1, got {self.dilations}")
        if self.image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {self.image_size}")
        if not self.sample_temperature > 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature}")
        if self.resolutions < 1:
            raise ValueError(f"resolutions must be >= 1, got {self.resolutions}")
        if not 0 <= self.input_noise <= 10:
            raise ValueError(f"input_noise must be in [0, 10] (a standard deviation on the "
                             f"[-1, 1] scale), got {self.input_noise}")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} must be divisible by "
                             f"2**(resolutions - 1) = {self.stride} (set data.size, e.g. "
                             f"{self.nearest_size(self.image_size)})")

    @property
    def stride(self) -> int:
        """How much the hierarchy shrinks the image (1 at one resolution): a size must be a
        multiple of it, and the naive walk reads rows to the next multiple."""
        return 2 ** (self.resolutions - 1)

    def nearest_size(self, size: int) -> int:
        """The multiple of ``stride`` nearest `size` (the suggestion in a size error)."""
        return self.stride * max(1, round(size / self.stride))


# -- shifted convolutions --------------------------------------------------------------------

class DownShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i-(kh-1)d..i and columns j-(kw//2)d..j+(kw//2)d (every
    d-th, d the dilation): nothing below."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 3), dilation: int = 1,
                 stride: int = 1):
        super().__init__(cin, cout, kernel, dilation=dilation, stride=stride)
        kh, kw = kernel
        self.pad = ((kw // 2) * dilation, (kw // 2) * dilation, (kh - 1) * dilation, 0)  # l, r, t, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i-(kh-1)d..i and columns j-(kw-1)d..j: nothing below or
    right."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 2), dilation: int = 1,
                 stride: int = 1):
        super().__init__(cin, cout, kernel, dilation=dilation, stride=stride)
        kh, kw = kernel
        self.pad = ((kw - 1) * dilation, 0, (kh - 1) * dilation, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class DownShiftedDeconv2d(nn.ConvTranspose2d):
    """Doubles the resolution: output rows 2i, 2i + 1 come from input rows <= i, so a down-stack
    input (already shifted down) stays causal (the paper's down_shifted_deconv2d)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 3)):
        super().__init__(cin, cout, kernel, stride=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        return y[:, :, :y.shape[2] - kh + 1, (kw - 1) // 2:y.shape[3] - (kw - 1) // 2]


class DownRightShiftedDeconv2d(nn.ConvTranspose2d):
    """Doubles the resolution, looking up and left only (down_right_shifted_deconv2d)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 2)):
        super().__init__(cin, cout, kernel, stride=2, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        return y[:, :, :y.shape[2] - kh + 1, :y.shape[3] - kw + 1]


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of x and -x side by side: keeps both signs' information (PixelCNN++)."""
    return F.elu(torch.cat([x, -x], dim=1))


class GatedResidual(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(concat_elu(conv(concat_elu(x)) + nin(concat_elu(aux))))."""

    def __init__(self, filters: int, conv: type, aux: bool | int, dropout: float, dilation: int = 1):
        super().__init__()
        self.conv_in = conv(2 * filters, filters, dilation=dilation)
        # aux: True is one stream of `filters` channels; an int, that many (the up pass's
        # down-right blocks take the down stack and a skip side by side)
        aux_channels = filters if aux is True else int(aux)
        self.nin_aux = nn.Conv2d(2 * aux_channels, filters, 1) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * filters, 2 * filters, dilation=dilation)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(concat_elu(x))
        if self.nin_aux is not None:
            h = h + self.nin_aux(concat_elu(aux))
        h = self.conv_out(self.dropout(concat_elu(h)))
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


# -- the discretised mixture of logistics ----------------------------------------------------

def params_per_pixel(channels: int, mixtures: int) -> int:
    """Mixture logits + (mean, log-scale) per channel + the RGB coupling coefficients."""
    return mixtures * (1 + 2 * channels + (3 if channels == 3 else 0))


def split_params(p: torch.Tensor, channels: int, mixtures: int):
    """(N, P, *spatial) -> logits (N, K, ...), means and log_scales (N, C, K, ...), coeffs
    (N, 3, K, ...) or None. Channel-first slices: no permute, so the loss stays as fast as a
    hand-written one."""
    K, C = mixtures, channels
    logits = p[:, :K]
    rest = p[:, K:].unflatten(1, (-1, K))  # (N, 2C [+3], K, ...)
    means, log_scales = rest[:, :C], rest[:, C:2 * C].clamp(min=-7.0)
    coeffs = torch.tanh(rest[:, 2 * C:]) if C == 3 else None
    return logits, means, log_scales, coeffs


def coupled_means(means: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The paper's channel conditioning: mu_g += c0 * r, mu_b += c1 * r + c2 * g (x in [-1, 1],
    (N, C, ...) broadcast over the K components)."""
    if coeffs is None:
        return means
    r, g = x[:, 0:1], x[:, 1:2]
    return torch.stack([means[:, 0], means[:, 1] + coeffs[:, 0] * r,
                        means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g], dim=1)


def discretised_logistic_log_prob(x: torch.Tensor, means: torch.Tensor,
                                  log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of a logistic discretised onto 256 bins of width 2/255 on [-1, 1]; the two edge
    bins take the tails (-inf, -1 + 1/255] and [1 - 1/255, inf), so the 256 masses sum to 1.
    x broadcasts against means (..., K)."""
    centred = x - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centred + 1.0 / 255)
    min_in = inv_s * (centred - 1.0 / 255)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid: the left edge bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid): the right edge bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centred
    # where the bin mass underflows, the density times the bin width (the paper's fallback)
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) - math.log(127.5)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def mixture_log_prob(params: torch.Tensor, x: torch.Tensor, channels: int, mixtures: int) -> torch.Tensor:
    """params (B, P, H, W), x (B, C, H, W) in [-1, 1] on the 256-level grid -> log P per pixel
    (B, H, W), summed over channels, mixed over components."""
    dtype = torch.promote_types(params.dtype, torch.float32)  # fp32 at least (under autocast)
    logits, means, log_scales, coeffs = split_params(params.to(dtype), channels, mixtures)
    x = x.to(dtype)
    means = coupled_means(means, coeffs, x)
    lp = discretised_logistic_log_prob(x[:, :, None], means, log_scales).sum(1)  # (B, K, H, W)
    return torch.logsumexp(lp + F.log_softmax(logits, dim=1), dim=1)


def sample_mixture(params: torch.Tensor, channels: int, mixtures: int, generator: torch.Generator,
                   temperature: float = 1.0) -> torch.Tensor:
    """params (n, P) -> integer levels (n, C) in 0..255. One component per pixel (shared by the
    channels), then channel by channel a logistic draw, quantised to the 256-level grid; the next
    channel's mean is conditioned on the quantised value, as in training. All uniforms are drawn
    on the CPU from `generator`, so a seed gives the same images on every device."""
    u = uniforms(generator, (params.shape[0], 1 + channels), params.device)
    return mixture_from_uniform(params, channels, mixtures, u, temperature)


def mixture_from_uniform(params: torch.Tensor, channels: int, mixtures: int, u: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """``sample_mixture`` with its uniforms (n, 1 + C) given: the cached sampler draws a whole
    image's up front, so its per-pixel step never touches the host."""
    n = params.shape[0]
    params = params.to(torch.promote_types(params.dtype, torch.float32))
    logits, means, log_scales, coeffs = split_params(params, channels, mixtures)
    u = u.clamp(1e-5, 1 - 1e-5)
    cdf = torch.softmax(logits, dim=-1).cumsum(-1)
    k = (cdf < u[:, :1]).sum(-1, keepdim=True).clamp_max(mixtures - 1)  # (n, 1)
    pick = lambda t: t.gather(1, k).squeeze(1)  # noqa: E731  (n, K) -> (n,)
    values = params.new_zeros(n, channels)
    for c in range(channels):
        mu = pick(coupled_means(means, coeffs, values)[:, c])
        s = torch.exp(pick(log_scales[:, c])) * temperature
        v = mu + s * (torch.log(u[:, 1 + c]) - torch.log1p(-u[:, 1 + c]))
        level = ((v.clamp(-1, 1) + 1) * 127.5).round()
        values[:, c] = level / 127.5 - 1
    return ((values + 1) * 127.5).round().long()


# -- the model -------------------------------------------------------------------------------

class PixelCNNMD(Model):
    Config = PixelCNNMDConfig
    modality = "image"
    likelihood_unit = "dim"

    def __init__(self, config: PixelCNNMDConfig):
        super().__init__(config)
        c, F_ = config, config.filters
        cin = c.channels + 1  # + a channel of ones, so zero padding differs from black pixels
        self.u_init = DownShiftedConv2d(cin, F_, (2, 3))  # then shifted down: rows above only
        self.ul_init_up = DownShiftedConv2d(cin, F_, (1, 3))  # the row above, shifted down
        self.ul_init_left = DownRightShiftedConv2d(cin, F_, (2, 1))  # left column, shifted right
        d = [c.dilations[k % len(c.dilations)] for k in range(c.blocks)]
        self.u_blocks = nn.ModuleList(GatedResidual(F_, DownShiftedConv2d, False, c.dropout, d[k])
                                      for k in range(c.blocks))
        self.ul_blocks = nn.ModuleList(GatedResidual(F_, DownRightShiftedConv2d, True, c.dropout, d[k])
                                       for k in range(c.blocks))
        self.output = nn.Conv2d(F_, params_per_pixel(c.channels, c.mixtures), 1)
        if c.resolutions > 1:  # the first resolution's down-pass blocks are u_blocks/ul_blocks
            R = c.resolutions
            gated = lambda conv, aux: nn.ModuleList(  # noqa: E731
                GatedResidual(F_, conv, aux, c.dropout, d[k % len(d)]) for k in range(c.blocks))
            self.down_u = nn.ModuleList(gated(DownShiftedConv2d, False) for _ in range(R - 1))
            self.down_ul = nn.ModuleList(gated(DownRightShiftedConv2d, True) for _ in range(R - 1))
            self.u_stride = nn.ModuleList(DownShiftedConv2d(F_, F_, (2, 3), stride=2) for _ in range(R - 1))
            self.ul_stride = nn.ModuleList(DownRightShiftedConv2d(F_, F_, (2, 2), stride=2)
                                           for _ in range(R - 1))
            # the up pass, lowest resolution first: `blocks` there, `blocks` + 1 above it (the
            # extra one takes the strided convolution's output as its skip); each block takes
            # the matching down-pass output (u: as aux; ul: with the up pass's u beside it)
            depth = [c.blocks] + [c.blocks + 1] * (R - 1)
            self.up_u = nn.ModuleList(nn.ModuleList(
                GatedResidual(F_, DownShiftedConv2d, True, c.dropout) for _ in range(n)) for n in depth)
            self.up_ul = nn.ModuleList(nn.ModuleList(
                GatedResidual(F_, DownRightShiftedConv2d, 2 * F_, c.dropout) for _ in range(n))
                for n in depth)
            self.u_up = nn.ModuleList(DownShiftedDeconv2d(F_, F_) for _ in range(R - 1))
            self.ul_up = nn.ModuleList(DownRightShiftedDeconv2d(F_, F_) for _ in range(R - 1))

    @classmethod
    def config_from_data(cls, data: object) -> dict:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    # -- data <-> network input ----------------------------------------------------------------
    @staticmethod
    def to_levels(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] floats (uint8 / 255) -> integer levels 0..255."""
        return (x * 255).round().clamp(0, 255).long()

    def network_input(self, levels: torch.Tensor) -> torch.Tensor:
        x = levels.to(self.output.weight.dtype) / 127.5 - 1
        if self.training and self.config.input_noise > 0:  # the conditioning, not the targets
            x = x + self.config.input_noise * torch.randn_like(x)  # the global RNG: checkpointed
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)

    # -- network ---------------------------------------------------------------------------------
    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels (B, C, H, W) -> mixture parameters (B, P, H, W); the parameters at
        (i, j) depend only on pixels above, or left in the same row."""
        return self.net(self.network_input(levels))

    def net(self, x: torch.Tensor) -> torch.Tensor:
        """The network on its float input (image in [-1, 1] + a ones channel)."""
        u = down_shift(self.u_init(x))
        ul = down_shift(self.ul_init_up(x)) + right_shift(self.ul_init_left(x))
        if self.config.resolutions > 1:
            return self.output(F.elu(self._hierarchy(u, ul)))
        for ub, ulb in zip(self.u_blocks, self.ul_blocks):
            u = ub(u)
            ul = ulb(ul, u)
        return self.output(F.elu(ul))

    def _hierarchy(self, u: torch.Tensor, ul: torch.Tensor) -> torch.Tensor:
        """PixelCNN++'s down and up passes (Salimans et al. 2017, fig. 2): every down-pass
        output is kept and handed, last first, to the up pass's blocks as skip connections."""
        us, uls = [u], [ul]
        downs = [(self.u_blocks, self.ul_blocks)] + list(zip(self.down_u, self.down_ul))
        for r, (u_blocks, ul_blocks) in enumerate(downs):
            if r > 0:
                us.append(self.u_stride[r - 1](us[-1]))
                uls.append(self.ul_stride[r - 1](uls[-1]))
            for ub, ulb in zip(u_blocks, ul_blocks):
                us.append(ub(us[-1]))
                uls.append(ulb(uls[-1], us[-1]))
        u, ul = us.pop(), uls.pop()
        for r, (u_blocks, ul_blocks) in enumerate(zip(self.up_u, self.up_ul)):
            if r > 0:
                u, ul = self.u_up[r - 1](u), self.ul_up[r - 1](ul)
            for ub, ulb in zip(u_blocks, ul_blocks):
                u = ub(u, us.pop())
                ul = ulb(ul, torch.cat([u, uls.pop()], dim=1))
        return ul

    def log_prob_levels(self, levels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) levels -> log P per image in nats (B,)."""
        c = self.config
        params = self(levels)
        x = levels.to(params.dtype) / 127.5 - 1
        return mixture_log_prob(params, x, c.channels, c.mixtures).flatten(1).sum(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = self.to_levels(batch["x"])
        dims = levels[0].numel()
        nll = -self.log_prob_levels(levels).mean()  # nats per image
        per_dim = nll / dims
        return {"loss": per_dim, "nll": nll, "bits_per_dim": per_dim / math.log(2)}

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exact log-likelihood of the 8-bit image in nats (discrete: bits/dim over 256 levels)."""
        return self.log_prob_levels(self.to_levels(batch["x"]))

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size


# -- samplers --------------------------------------------------------------------------------

@dataclass
class MDSamplerOptions:
    # scales every logistic's scale (< 1: smoother, surer images); None: the model's
    # sample_temperature (1.0 unless its preset says otherwise)
    temperature: float | None = None
    size: int | None = None  # generate at another size than trained (fully convolutional)

    def __post_init__(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@dataclass
class MDCachedOptions(MDSamplerOptions):
    cuda_graph: bool = True  # on GPUs, replay the row and pixel steps as CUDA graphs


def check_size(options: MDSamplerOptions, model: PixelCNNMD) -> None:
    """A hierarchy's strides must divide the size it samples at: one line, not a shape error."""
    c = model.config
    if options.size is not None and options.size % c.stride:
        raise ConfigError(f"size={options.size}: this model halves the resolution "
                          f"{c.resolutions - 1} times, so the size must be a multiple "
                          f"of {c.stride} (e.g. {c.nearest_size(options.size)})")


class NaiveSampler(Sampler):
    """One full forward pass per pixel, H*W passes per image: the reference for ``cached``."""

    name = "naive"
    Options = MDSamplerOptions

    def check(self, model: PixelCNNMD, inputs: dict) -> None:
        check_size(self.options, model)

    @torch.no_grad()
    def sample(self, model: PixelCNNMD, n: int, generator: torch.Generator, **_: object) -> torch.Tensor:
        o, c = self.options, model.config
        h = w = o.size or c.image_size
        levels = torch.zeros(n, c.channels, h, w, dtype=torch.long, device=model.device)

        def draw(params: torch.Tensor) -> torch.Tensor:  # (n, P) -> (n, C)
            return sample_mixture(params, c.channels, c.mixtures, generator,
                                  o.temperature or c.sample_temperature)
        # shifted convolutions never read below: only the rows so far (to the strides' multiple)
        return raster_sample(levels, model, draw, c.stride).float() / 255


class _Cache:
    """The zero-padded input of one shifted convolution, filled as sampling walks the image, so
    the convolution's output at a row or a position is one small matmul over a window. Rows
    and positions are (1,) counters on the device, so the steps that use it are static."""

    def __init__(self, conv: nn.Conv2d, n: int, h: int, w: int):
        left, right, top, _ = conv.pad
        self.conv, self.top = conv, top
        (kh, kw), (dh, dw) = conv.kernel_size, conv.dilation
        self.rows = torch.arange(kh) * dh  # the input rows of output row 0, padded coordinates
        width = w + left + right
        self.buf = conv.weight.new_zeros(n, conv.in_channels, h + top, width)
        self.flat = self.buf.view(n, conv.in_channels, -1)
        self.weight = conv.weight.flatten(1).t()  # (Cin*kh*kw, Cout)
        self.windows = window_index(h, w, kh, kw, (dh, dw), width)  # (h*w, taps) into flat
        # where position p's input sits in flat (in padded coordinates: row + top, col + left)
        i, j = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
        self.cells = ((i + top) * width + j + left)[:, None]
        dev = conv.weight.device
        self.rows, self.windows, self.cells = self.rows.to(dev), self.windows.to(dev), self.cells.to(dev)
        self.row_view = self.buf.narrow(3, left, w)  # the unpadded columns, for whole rows

    def put_row(self, i: torch.Tensor, row: torch.Tensor) -> None:  # row (n, Cin, W)
        self.row_view.index_copy_(2, i + self.top, row[:, :, None])

    def put(self, p: torch.Tensor, value: torch.Tensor) -> None:  # value (n, Cin)
        self.flat.index_copy_(2, self.cells.index_select(0, p)[0], value[:, :, None])

    def row(self, i: torch.Tensor) -> torch.Tensor:  # output row i: (n, Cout, W)
        # only the kh rows the kernel reads are gathered, so no dilation across them
        return F.conv2d(self.buf.index_select(2, self.rows + i), self.conv.weight, self.conv.bias,
                        dilation=(1, self.conv.dilation[1]))[:, :, 0]

    def at(self, p: torch.Tensor, windows: torch.Tensor | None = None) -> torch.Tensor:
        """Output at position p: (n, Cout)."""
        window = (self.windows if windows is None else windows).index_select(0, p)[0]
        return torch.addmm(self.conv.bias, self.flat.index_select(2, window).flatten(1), self.weight)


class CachedSampler(Sampler):
    """Raster-order sampling that computes every activation once.

    The down stack at row i depends only on rows above i, so at the start of each row it is
    computed for the whole row (a 2-row convolution per layer, from cached inputs). The
    down-right stack at (i, j) depends on its own inputs at (i-1..i, j-1..j) and on the down
    stack at (i, j), so it is computed per position from the per-layer caches. In total about one
    forward pass per image instead of H*W of them; same draws, same images as ``naive``.

    Both steps, a row's and a pixel's, are static (``genzoo.nn.autoregressive``): on a GPU each is captured
    once as a CUDA graph and replayed (``cuda_graph=false`` runs them kernel by kernel).
    """

    name = "cached"
    Options = MDCachedOptions

    def check(self, model: PixelCNNMD, inputs: dict) -> None:
        check_size(self.options, model)

    @torch.no_grad()
    def sample(self, model: PixelCNNMD, n: int, generator: torch.Generator, **_: object) -> torch.Tensor:
        o, c = self.options, model.config
        if c.resolutions > 1:  # the walk caches one resolution's rows: the reference draws
            return NaiveSampler(temperature=o.temperature, size=o.size).sample(model, n, generator)
        h = w = o.size or c.image_size
        walk = RowWalk(model, n, h, w, o.temperature or c.sample_temperature,
                       uniforms(generator, (h * w, n, 1 + c.channels), model.device))
        raster_steps(walk.pixel_step, h, w, model.device, o.cuda_graph, row_step=walk.row_step)
        return walk.levels.view(n, c.channels, h, w).float() / 255


class RowWalk:
    """The cached sampler's state: per-layer input caches, the current row's down-stack
    outputs, and the row and position counters on the device."""

    def __init__(self, model: PixelCNNMD, n: int, h: int, w: int, temperature: float, u: torch.Tensor):
        c, dev = model.config, model.device
        self.model, self.temperature, self.u = model, temperature, u
        # caches of the network input (image + ones channel) for the three first convolutions
        self.x_u, self.x_up, self.x_left = (_Cache(conv, n, h, w) for conv in
                                            (model.u_init, model.ul_init_up, model.ul_init_left))
        self.u_caches = [(_Cache(b.conv_in, n, h, w), _Cache(b.conv_out, n, h, w)) for b in model.u_blocks]
        self.ul_caches = [(_Cache(b.conv_in, n, h, w), _Cache(b.conv_out, n, h, w)) for b in model.ul_blocks]
        # the left input of position p is the first convolution's output at p - 1 (zero at j = 0)
        cols = torch.arange(h * w) % w
        self.left_windows = self.x_left.windows.roll(1, 0)
        self.has_left = (cols > 0).to(self.x_u.buf.dtype)[:, None].to(dev)
        self.cols = cols.to(dev)
        F_ = c.filters
        self.ul_up = self.x_u.buf.new_zeros(n, F_, w)  # the row above's part of ul, this row
        self.u_rows = [self.x_u.buf.new_zeros(n, 2 * F_, w) for _ in model.u_blocks]
        self.w_out = model.output.weight[:, :, 0, 0]
        self.levels = torch.zeros(n, c.channels, h * w, dtype=torch.long, device=dev)
        self.ones = self.x_u.buf.new_ones(n, 1)
        self.row = torch.zeros(1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)

    def row_step(self) -> None:
        """The down stack for row i, and the "row above" part of the down-right stack's input
        (both are the first convolutions' outputs at row i - 1, zero for the first row)."""
        i = self.row
        above, first = (i - 1).clamp(min=0), (i > 0).to(self.ul_up.dtype)
        u = self.x_u.row(above) * first
        self.ul_up.copy_(self.x_up.row(above) * first)
        for k, (cin, cout) in enumerate(self.u_caches):
            cin.put_row(i, concat_elu(u))
            cout.put_row(i, concat_elu(cin.row(i)))
            a, b = cout.row(i).chunk(2, dim=1)
            u = u + a * torch.sigmoid(b)
            self.u_rows[k].copy_(concat_elu(u))  # the down-right blocks' auxiliary input
        i.add_(1)

    def pixel_step(self) -> None:
        m, c, p = self.model, self.model.config, self.pos
        j = self.cols.index_select(0, p)
        ul = self.ul_up.index_select(2, j)[:, :, 0]
        ul = ul + self.x_left.at(p, self.left_windows) * self.has_left.index_select(0, p)
        for blk, (cin, cout), u_row in zip(m.ul_blocks, self.ul_caches, self.u_rows):
            cin.put(p, concat_elu(ul))
            hid = cin.at(p) + F.linear(u_row.index_select(2, j)[:, :, 0], blk.nin_aux.weight[:, :, 0, 0],
                                       blk.nin_aux.bias)
            cout.put(p, concat_elu(hid))
            a, b = cout.at(p).chunk(2, dim=1)
            ul = ul + a * torch.sigmoid(b)
        params = F.linear(F.elu(ul), self.w_out, m.output.bias)
        value = mixture_from_uniform(params, c.channels, c.mixtures, self.u.index_select(0, p)[0],
                                     self.temperature)
        self.levels.index_copy_(2, p, value[:, :, None])
        x = torch.cat([value.to(self.ones.dtype) / 127.5 - 1, self.ones], dim=1)
        for cache in (self.x_u, self.x_up, self.x_left):
            cache.put(p, x)
        p.add_(1)
