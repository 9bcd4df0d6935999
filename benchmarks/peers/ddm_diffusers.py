"""genzoo's ddm U-Net + DDIM sampler next to diffusers' ``UNet2DModel`` + ``DDIMScheduler`` with
the same widths, in one process so the ratios share the machine's state.

    .venv/bin/pip install -e ".[bench]"          # diffusers
    .venv/bin/python benchmarks/peers/ddm_diffusers.py --json benchmarks/results/ddm_diffusers.json

What is timed (median of --repeats, the two libraries interleaved repeat by repeat):
  * training images/s at 64x64, batch 16: noise an image batch at random levels, predict the noise,
    MSE, backward, AdamW(1e-3, wd 1e-4) step; the same random batch for both;
  * DDIM sampling, 20 steps, eta 0, seconds per image at 32x32 and 64x64 (--n images per call).
Ratios are genzoo / diffusers for throughput and diffusers / genzoo for latency: > 1 = genzoo
faster. Parameter counts and FLOPs per image (torch.utils.flop_counter) are reported for both.

The diffusers network: ``UNet2DModel(block_out_channels=(32, 64, 96, 128), layers_per_block=2)``
with plain ``DownBlock2D`` / ``UpBlock2D`` blocks and a mid block without attention, since the
book's U-Net has none; everything else (GroupNorm 32, time-embedding MLP, conv down/upsampling,
layers_per_block + 1 resnets per up block) is diffusers' default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

WIDTHS = (32, 64, 96, 128)


def genzoo_model(size: int, device: torch.device, channels_last: bool = True):
    from genzoo.plugins.diffusion import DiffusionConfig, DiffusionModel
    torch.manual_seed(0)
    m = DiffusionModel(DiffusionConfig(image_size=size, widths=WIDTHS, block_depth=2,
                                       embedding_dim=32, loss="mse", channels_last=channels_last))
    return m.to(device)


def diffusers_model(size: int, device: torch.device, channels_last: bool = False):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=WIDTHS,
                    layers_per_block=2, down_block_types=("DownBlock2D",) * 4,
                    up_block_types=("UpBlock2D",) * 4, add_attention=False).to(device)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as c:
        fn()
    return int(c.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- one training step each ---------------------------------------------------------------------

def genzoo_step(model, opt, x: torch.Tensor, autocast) -> None:
    with autocast():
        loss = model.loss({"x": x})["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def diffusers_step(unet, sched, opt, x: torch.Tensor, autocast, channels_last: bool) -> None:
    x0 = x * 2 - 1  # diffusers' convention: images in [-1, 1]
    noise = torch.randn_like(x0)
    t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    noisy = sched.add_noise(x0, noise, t)
    if channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with autocast():
        pred = unet(noisy, t).sample
    loss = F.mse_loss(pred.float(), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# -- DDIM-20 sampling each ----------------------------------------------------------------------

def genzoo_sample(model, n: int, steps: int, autocast) -> torch.Tensor:
    from genzoo.core.sampler import draw
    from genzoo.plugins.diffusion import DDIMSampler
    with autocast():
        return draw(model, DDIMSampler(steps=steps), n, torch.Generator().manual_seed(0)).images


@torch.no_grad()
def diffusers_sample(unet, sched, n: int, steps: int, size: int, autocast) -> torch.Tensor:
    unet.eval()
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(unet.device)
    sched.set_timesteps(steps)
    with autocast():
        for t in sched.timesteps:
            eps = unet(x, t).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    return ((x.float() + 1) / 2).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=2, help="optimizer steps per timed repeat")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n", type=int, default=8, help="images per sampling call")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps")
    ap.add_argument("--sizes", default="32,64", help="sampling sizes")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--diffusers-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile both networks")
    ap.add_argument("--json", help="write the records here")
    a = ap.parse_args()
    from diffusers import DDIMScheduler, DDPMScheduler
    import diffusers
    dev = torch.device(a.device)
    import contextlib

    def autocast():
        if a.amp == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    env = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "amp": a.amp, "compile": a.compile,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    print(json.dumps(env))
    out = {"env": env, "train": {}, "sample": {}, "models": {}}

    # -- training at 64x64 --------------------------------------------------------------------
    size = 64
    g = genzoo_model(size, dev)
    d = diffusers_model(size, dev, a.diffusers_channels_last)
    sched = DDPMScheduler(num_train_timesteps=1000)
    if a.compile:
        g.network = torch.compile(g.network)
        d = torch.compile(d)
    opt_g = torch.optim.AdamW(g.parameters(), lr=1e-3, weight_decay=1e-4)
    opt_d = torch.optim.AdamW(d.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.rand(a.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    g.train(), d.train()
    xg = torch.rand(1, 3, size, size).to(dev)
    out["models"] = {
        "genzoo": {"params": params(g),
                   "train_flops_per_image": flops(lambda: genzoo_step(g, opt_g, x, autocast)) / a.batch,
                   "forward_flops_per_image": flops(lambda: g(xg, torch.rand(1, device=dev)))},
        "diffusers": {"params": params(d),
                      "train_flops_per_image": flops(lambda: diffusers_step(
                          d, sched, opt_d, x, autocast, a.diffusers_channels_last)) / a.batch,
                      "forward_flops_per_image": flops(lambda: d(xg, torch.tensor([10], device=dev)))},
    }
    print(json.dumps(out["models"]))
    times = {"genzoo": [], "diffusers": []}
    runs = {"genzoo": lambda: genzoo_step(g, opt_g, x, autocast),
            "diffusers": lambda: diffusers_step(d, sched, opt_d, x, autocast, a.diffusers_channels_last)}
    for fn in runs.values():  # warm-up (and compilation)
        fn()
    for r in range(a.repeats):
        for name, fn in runs.items():
            sync(dev)
            t = time.perf_counter()
            for _ in range(a.train_steps):
                fn()
            sync(dev)
            times[name].append(a.train_steps * a.batch / (time.perf_counter() - t))
        print(f"train repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f} img/s" for k, v in times.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out["train"] = {"size": size, "batch": a.batch, "images_per_s": med, "all": times,
                    "ratio_genzoo_over_diffusers": med["genzoo"] / med["diffusers"]}
    print(json.dumps(out["train"]))
    del g, d, opt_g, opt_d

    # -- DDIM sampling ------------------------------------------------------------------------
    for size in [int(s) for s in a.sizes.split(",")]:
        g = genzoo_model(size, dev).eval()
        d = diffusers_model(size, dev, a.diffusers_channels_last).eval()
        ddim = DDIMScheduler(num_train_timesteps=1000)
        if a.compile:
            g.network = torch.compile(g.network)
            d = torch.compile(d)
        runs = {"genzoo": lambda: genzoo_sample(g, a.n, a.steps, autocast),
                "diffusers": lambda: diffusers_sample(d, ddim, a.n, a.steps, size, autocast)}
        for fn in runs.values():
            fn()
        times = {"genzoo": [], "diffusers": []}
        reps = max(3, a.repeats - 2)
        for r in range(reps):
            for name, fn in runs.items():
                sync(dev)
                t = time.perf_counter()
                fn()
                sync(dev)
                times[name].append((time.perf_counter() - t) / a.n)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["sample"][str(size)] = {"steps": a.steps, "n": a.n, "seconds_per_image": med, "all": times,
                                    "ratio_diffusers_over_genzoo": med["diffusers"] / med["genzoo"]}
        print(json.dumps({size: out["sample"][str(size)]}), flush=True)
        del g, d

    print("\nsummary")
    m = out["models"]
    for k in ("genzoo", "diffusers"):
        print(f"  {k:9s} params {m[k]['params']:>9,}  train GFLOP/img {m[k]['train_flops_per_image'] / 1e9:6.2f}"
              f"  fwd GFLOP/img(64) {m[k]['forward_flops_per_image'] / 1e9:5.2f}")
    tr = out["train"]
    print(f"  train 64x64 b{a.batch}: genzoo {tr['images_per_s']['genzoo']:.2f} img/s, diffusers "
          f"{tr['images_per_s']['diffusers']:.2f} img/s -> {tr['ratio_genzoo_over_diffusers']:.2f}x")
    for size, s in out["sample"].items():
        print(f"  DDIM-{a.steps} {size}x{size}: genzoo {s['seconds_per_image']['genzoo']:.3f} s/img, diffusers "
              f"{s['seconds_per_image']['diffusers']:.3f} s/img -> {s['ratio_diffusers_over_genzoo']:.2f}x")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
