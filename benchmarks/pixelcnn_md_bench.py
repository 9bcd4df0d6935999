"""PixelCNN-MD: genzoo vs a bare PyTorch loop of the identical network, in one process; naive
vs cached sampling; params.

    python benchmarks/pixelcnn_md_bench.py --preset quick --batch-size 16 --repeats 5 --json out.json

The bare network below is written from scratch in plain PyTorch (same layers, same parameter
count, checked), trained by a plain Adam loop on the same batch; genzoo is timed through
``Model.training_step`` and through the full ``Trainer`` loop. Ratios are what to compare
(shared machines drift between runs)."""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.core.bench import device_label, dump_report, timeit
from genzoo.core.checkpoint import Run
from genzoo.core.data import DataConfig, load
from genzoo.core.trainer import StepContext, TrainConfig, Trainer
from genzoo.plugins.pixelcnn_md import CachedSampler, NaiveSampler


# -- the bare network: PixelCNN++ at one resolution, grayscale, in plain PyTorch ----------------
class Shifted(nn.Conv2d):
    def __init__(self, cin, cout, k, right=False, d=1):
        super().__init__(cin, cout, k, dilation=d)
        self.p = ((k[1] - 1) * d, 0, (k[0] - 1) * d, 0) if right else \
            ((k[1] // 2) * d, (k[1] // 2) * d, (k[0] - 1) * d, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.p))


def celu(x):
    return F.elu(torch.cat([x, -x], 1))


class Gated(nn.Module):
    def __init__(self, f, right, aux, d):
        super().__init__()
        k = (2, 2) if right else (2, 3)
        self.c1, self.c2 = Shifted(2 * f, f, k, right, d), Shifted(2 * f, 2 * f, k, right, d)
        self.aux = nn.Conv2d(2 * f, f, 1) if aux else None

    def forward(self, x, a=None):
        h = self.c1(celu(x))
        if self.aux is not None:
            h = h + self.aux(celu(a))
        a_, b_ = self.c2(celu(h)).chunk(2, 1)
        return x + a_ * torch.sigmoid(b_)


class Bare(nn.Module):
    def __init__(self, f, blocks, k=5, dilations=(1, 2, 4, 8)):
        super().__init__()
        self.u0, self.ul0a, self.ul0b = Shifted(2, f, (2, 3)), Shifted(2, f, (1, 3)), Shifted(2, f, (2, 1), True)
        d = [dilations[i % len(dilations)] for i in range(blocks)]
        self.u = nn.ModuleList(Gated(f, False, False, d[i]) for i in range(blocks))
        self.ul = nn.ModuleList(Gated(f, True, True, d[i]) for i in range(blocks))
        self.out = nn.Conv2d(f, 3 * k, 1)
        self.k = k

    def forward(self, x):  # x in [-1, 1], (B, 1, H, W)
        x = torch.cat([x, torch.ones_like(x)], 1)
        u = F.pad(self.u0(x), (0, 0, 1, 0))[:, :, :-1]
        ul = F.pad(self.ul0a(x), (0, 0, 1, 0))[:, :, :-1] + F.pad(self.ul0b(x), (1, 0, 0, 0))[:, :, :, :-1]
        for bu, bul in zip(self.u, self.ul):
            u = bu(u)
            ul = bul(ul, u)
        return self.out(F.elu(ul))

    def nll(self, x):  # discretised mixture of logistics, nats per dim
        p = self(x)
        k = self.k
        logit, mu, ls = p[:, :k], p[:, k:2 * k], p[:, 2 * k:].clamp(min=-7)
        c, inv = x - mu, torch.exp(-ls)
        plus, minus = inv * (c + 1 / 255), inv * (c - 1 / 255)
        mid = inv * c
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)),
                            mid - ls - 2 * F.softplus(mid) - math.log(127.5))
        lp = torch.where(x < -0.999, plus - F.softplus(plus), torch.where(x > 0.999, -F.softplus(minus), inner))
        return -torch.logsumexp(lp + F.log_softmax(logit, 1), 1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    ap.add_argument("--n", type=int, default=4, help="images per sampling call")
    ap.add_argument("--naive-repeats", type=int, default=1)
    ap.add_argument("--size", type=int, default=None,
                    help="image side for the naive-vs-cached comparison (default: trained size)")
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    data = load(DataConfig(name="fashion-mnist-1k", pad=2))
    x01 = data.images(torch.arange(a.batch_size)).to(dev)
    results, info = {}, {}

    model = genzoo.create_model("pixelcnn-md", preset=a.preset).to(dev)
    c = model.config
    torch.manual_seed(0)
    bare = Bare(c.filters, c.blocks, c.mixtures, c.dilations).to(dev)
    info["params"] = model.num_params()
    info["params_quick"] = genzoo.create_model("pixelcnn-md", preset="quick").num_params()
    info["params_book"] = genzoo.create_model("pixelcnn-md", preset="book").num_params()
    assert sum(p.numel() for p in bare.parameters()) == info["params"], "bare net differs"
    xb = (x01 * 255).round() / 127.5 - 1
    opt = torch.optim.Adam(bare.parameters(), lr=1e-3)

    def bare_steps():
        for _ in range(a.steps):
            loss = bare.nll(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=1e-3, grad_clip=None, amp="none",
                      device=a.device, sample_every=0, checkpoint_every=10**9, log_every=a.steps)
    opts = model.configure_optimizers(cfg)
    ctx = StepContext(dev, "none", None)

    def genzoo_steps():
        for _ in range(a.steps):
            model.training_step({"x": x01}, opts, ctx)

    def genzoo_loop():
        with tempfile.TemporaryDirectory() as d:
            Trainer(model, data, cfg, Run.create("bench", d + "/r"), None, progress=False).fit()

    # interleaved repeats, so drift on a shared machine hits all three alike
    for fn in (bare_steps, genzoo_steps, genzoo_loop):
        fn()  # warm-up
    for _ in range(a.repeats):
        for key, fn in (("bare_pytorch_train", bare_steps), ("genzoo_training_step", genzoo_steps),
                        ("genzoo_trainer_loop", genzoo_loop)):
            t = timeit(fn, 1, 0, dev)[0]
            results.setdefault(key, []).append(a.steps * a.batch_size / t)

    model.eval()
    with torch.no_grad():  # the trained size, cached (what `zoo sample` does)
        times = timeit(lambda: CachedSampler().sample(model, a.n, torch.Generator().manual_seed(0)),
                       a.repeats, 1, dev)
    results[f"sample_cached_{c.image_size}px_s_per_image"] = [t / a.n for t in times]
    for sampler, reps in ((CachedSampler(size=a.size), a.repeats), (NaiveSampler(size=a.size), a.naive_repeats)):
        with torch.no_grad():
            times = timeit(lambda: sampler.sample(model, a.n, torch.Generator().manual_seed(0)),
                           reps, 0 if sampler.name == "naive" else 1, dev)
        results[f"sample_{sampler.name}_s_per_image"] = [t / a.n for t in times]
    info["comparison_size"] = a.size or c.image_size
    with torch.no_grad():
        model.double()
        same = torch.equal(CachedSampler(size=a.size).sample(model, 2, torch.Generator().manual_seed(0)),
                           NaiveSampler(size=a.size).sample(model, 2, torch.Generator().manual_seed(0)))
    summary = {k: statistics.median(v) for k, v in results.items()}
    summary["ratio_training_step_vs_bare"] = summary["genzoo_training_step"] / summary["bare_pytorch_train"]
    summary["ratio_loop_vs_bare"] = summary["genzoo_trainer_loop"] / summary["bare_pytorch_train"]
    summary["speedup_cached_vs_naive"] = (summary["sample_naive_s_per_image"]
                                          / summary["sample_cached_s_per_image"])
    summary["cached_equals_naive_float64"] = same
    summary.update(info)
    summary["device"] = device_label(dev)
    summary["torch"] = torch.__version__
    dump_report(summary, results, vars(a), a.json)


if __name__ == "__main__":
    main()
