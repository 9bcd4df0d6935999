"""genzoo's text-conditioned latent U-Net (genzoo.plugins.text2image.CondUNet) next to diffusers'
``UNet2DConditionModel``, at matched widths AND at matched parameters, in one process (the two
interleaved repeat by repeat, so the ratios share the machine's state).

    .venv/bin/pip install diffusers            # for this benchmark only; not a genzoo dependency
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/ldm_diffusers.py --json benchmarks/results/ldm_diffusers.json

What is timed (median of --repeats):
  * training latents/s: batch --batch of 4x8x8 latents (ldm-mnist's), prompt states (B, 7, 64),
    noise at random levels, predict the noise, MSE, backward, AdamW step;
  * DDIM, 20 steps with classifier-free guidance (conditional and unconditional in one batch of
    2n), seconds per image for --n images.
Both networks get the same inputs. Ratios are genzoo / diffusers for throughput (> 1: genzoo
faster); FLOPs per latent (torch.utils.flop_counter, forward + backward for training) let the
throughput be read per FLOP as well.

diffusers' network: ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` at every level and
``UNetMidBlock2DCrossAttn`` (the Stable Diffusion layout), ``layers_per_block=1``, 4 heads,
``cross_attention_dim=64``, GroupNorm groups 8 (the default 32 does not divide 32-wide blocks);
"matched widths" uses genzoo's (32, 64), "matched parameters" the width pair whose count is
closest to genzoo's.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

WIDTHS = (32, 64)
CONTEXT_LEN, CONTEXT_DIM = 7, 64


def genzoo_net(widths=WIDTHS):
    from genzoo.plugins.text2image import LatentUNet, UNetConfig
    torch.manual_seed(0)
    return LatentUNet(UNetConfig(latent_channels=4, latent_size=8, context_dim=CONTEXT_DIM,
                                 widths=widths, heads=4, block_depth=1))


def diffusers_net(widths):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=widths, down_block_types=("CrossAttnDownBlock2D",) * len(widths),
        up_block_types=("CrossAttnUpBlock2D",) * len(widths), cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=4, norm_num_groups=8)


def params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def matched_width_pair(target: int) -> tuple[int, int]:
    best = None
    for a in range(8, 129, 8):
        w = (a, 2 * a)
        n = params(diffusers_net(w))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (w, n)
    return best[0]


class Pair:
    """One network behind one call signature: predict noise from (x, t, context, mask)."""

    def __init__(self, name, net, genzoo: bool):
        self.name, self.net, self.genzoo = name, net, genzoo

    def __call__(self, x, noise_rates, context, mask):
        if self.genzoo:
            return self.net(x, noise_rates, context, mask)
        t = (noise_rates.flatten() * 999).round()  # diffusers takes an integer timestep
        return self.net(x, t, encoder_hidden_states=context,
                        encoder_attention_mask=mask.float()).sample


def inputs(b, g):
    x = torch.randn(b, 4, 8, 8, generator=g)
    ctx = torch.randn(b, CONTEXT_LEN, CONTEXT_DIM, generator=g)
    mask = torch.ones(b, CONTEXT_LEN, dtype=torch.bool)
    n = torch.rand(b, generator=g).clamp(0.05, 0.95)
    return x, n, ctx, mask


def train_step(pair, opt, batch):
    x, n, ctx, mask = batch
    noise = torch.randn_like(x)
    s = (1 - n ** 2).sqrt().view(-1, 1, 1, 1)
    pred = pair(s * x + n.view(-1, 1, 1, 1) * noise, n, ctx, mask)
    loss = F.mse_loss(pred, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@torch.no_grad()
def ddim(pair, n_img, g, steps=20, w=3.0):
    x = torch.randn(n_img, 4, 8, 8, generator=g)
    ctx = torch.randn(2 * n_img, CONTEXT_LEN, CONTEXT_DIM, generator=g)
    mask = torch.ones(2 * n_img, CONTEXT_LEN, dtype=torch.bool)
    for k in range(steps):
        n = torch.full((n_img,), 0.95 * (1 - k / steps) + 0.03)
        s = (1 - n ** 2).sqrt().view(-1, 1, 1, 1)
        eps_c, eps_u = pair(torch.cat([x, x]), torch.cat([n, n]), ctx, mask).chunk(2)
        eps = eps_u + w * (eps_c - eps_u)
        x0 = (x - n.view(-1, 1, 1, 1) * eps) / s
        n2 = torch.full((n_img,), 0.95 * (1 - (k + 1) / steps) + 0.03).view(-1, 1, 1, 1)
        x = (1 - n2 ** 2).sqrt() * x0 + n2 * eps
    return x


def flops_train(pair, batch):
    from torch.utils.flop_counter import FlopCounterMode
    x, n, ctx, mask = batch
    with FlopCounterMode(display=False) as c:
        pair(x, n, ctx, mask).pow(2).mean().backward()
    pair.net.zero_grad(set_to_none=True)
    return c.get_total_flops() / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="training steps per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    ours = Pair("genzoo", genzoo_net(), True)
    target = params(ours.net)
    pairs = [ours, Pair(f"diffusers {WIDTHS} (matched widths)", diffusers_net(WIDTHS), False)]
    matched = matched_width_pair(target)
    pairs.append(Pair(f"diffusers {matched} (matched params)", diffusers_net(matched), False))
    g = torch.Generator().manual_seed(0)
    batch = inputs(args.batch, g)
    rows = {p.name: {"params": params(p.net), "train_flops_per_latent": flops_train(p, batch)}
            for p in pairs}
    opts = {p.name: torch.optim.AdamW(p.net.parameters(), 1e-3, weight_decay=1e-4) for p in pairs}
    train_t = {p.name: [] for p in pairs}
    ddim_t = {p.name: [] for p in pairs}
    for p in pairs:  # warm-up
        train_step(p, opts[p.name], batch)
        ddim(p, 4, torch.Generator().manual_seed(1), steps=2)
    for _ in range(args.repeats):
        for p in pairs:
            p.net.train()
            t0 = time.process_time()
            for _ in range(args.steps):
                train_step(p, opts[p.name], batch)
            train_t[p.name].append(args.steps * args.batch / (time.process_time() - t0))
            p.net.eval()
            t0 = time.process_time()
            ddim(p, args.n, torch.Generator().manual_seed(2))
            ddim_t[p.name].append((time.process_time() - t0) / args.n)
    base = pairs[0].name
    for p in pairs:
        r = rows[p.name]
        r["train_latents_per_cpu_s"] = statistics.median(train_t[p.name])
        r["ddim20_cfg_cpu_s_per_image"] = statistics.median(ddim_t[p.name])
        r["train_gflop_per_cpu_s"] = r["train_latents_per_cpu_s"] * r["train_flops_per_latent"] / 1e9
    for p in pairs[1:]:
        r = rows[p.name]
        r["genzoo_train_speedup"] = rows[base]["train_latents_per_cpu_s"] / r["train_latents_per_cpu_s"]
        r["genzoo_ddim_speedup"] = r["ddim20_cfg_cpu_s_per_image"] / rows[base]["ddim20_cfg_cpu_s_per_image"]
        r["genzoo_per_flop"] = rows[base]["train_gflop_per_cpu_s"] / r["train_gflop_per_cpu_s"]
    import diffusers
    out = {"rows": rows, "batch": args.batch, "n": args.n, "torch": torch.__version__,
           "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "clock": "process CPU time"}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
