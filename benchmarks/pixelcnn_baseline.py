"""PixelCNN: genzoo vs a bare PyTorch loop on the identical book architecture, in one process.

    python benchmarks/pixelcnn_baseline.py --device cpu --batch-size 64 --repeats 5
Prints images/s (median of repeats after warm-up) for: a plain nn.Sequential-style model with a
plain Adam loop, genzoo's Model.training_step, and genzoo's full Trainer loop; plus naive
(full forward per pixel) vs cached sampling for 16 images. Ratios are what to compare."""
from __future__ import annotations

import argparse
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
from genzoo.plugins.pixelcnn import CachedSampler, NaiveSampler


class BareMaskedConv(nn.Conv2d):
    def __init__(self, kind, cin, cout, k):
        super().__init__(cin, cout, k, padding=k // 2)
        m = torch.ones(k, k)
        m[k // 2, k // 2 + (kind == "B"):] = 0
        m[k // 2 + 1:] = 0
        self.register_buffer("m", m)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.m, self.bias, padding=self.padding)


class BareBlock(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(f, f // 2, 1), BareMaskedConv("B", f // 2, f // 2, 3), nn.Conv2d(f // 2, f, 1)

    def forward(self, x):
        return x + F.relu(self.c(F.relu(self.b(F.relu(self.a(x))))))


def bare_model(f=128, blocks=5, levels=4):
    layers = [BareMaskedConv("A", 1, f, 7), nn.ReLU()] + [BareBlock(f) for _ in range(blocks)]
    layers += [BareMaskedConv("B", f, f, 1), nn.ReLU(), BareMaskedConv("B", f, f, 1), nn.ReLU(), nn.Conv2d(f, levels, 1)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    data = load(DataConfig(name="fashion-mnist-1k", size=16))
    x = data.x[: a.batch_size].to(dev)
    results = {}

    torch.manual_seed(0)
    bare = bare_model().to(dev)
    opt = torch.optim.Adam(bare.parameters(), lr=5e-4)
    target = (x * 4).long().clamp(0, 3)

    def bare_steps():
        for _ in range(a.steps):
            loss = F.cross_entropy(bare(target.float() / 4), target[:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()

    results["bare_pytorch_train"] = [a.steps * a.batch_size / t for t in timeit(bare_steps, a.repeats, 1, dev)]

    model = genzoo.create_model("pixelcnn", preset="book").to(dev)
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=5e-4, grad_clip=None, amp="none",
                      device=a.device, sample_every=0, checkpoint_every=10**9, log_every=a.steps)
    opts = model.configure_optimizers(cfg)
    ctx = StepContext(dev, "none", None)

    def genzoo_steps():
        for _ in range(a.steps):
            model.training_step({"x": x}, opts, ctx)

    results["genzoo_training_step"] = [a.steps * a.batch_size / t for t in timeit(genzoo_steps, a.repeats, 1, dev)]

    def genzoo_loop():
        with tempfile.TemporaryDirectory() as d:
            Trainer(model, data, cfg, Run.create("bench", d + "/r"), None, progress=False).fit()

    results["genzoo_trainer_loop"] = [a.steps * a.batch_size / t for t in timeit(genzoo_loop, a.repeats, 1, dev)]

    model.eval()
    for sampler in (NaiveSampler(), CachedSampler()):
        with torch.no_grad():
            times = timeit(lambda: sampler.sample(model, 16, torch.Generator().manual_seed(0)),
                           max(2, a.repeats // 2), 1, dev)
        results[f"sample16_{sampler.name}_s"] = times

    summary = {k: statistics.median(v) for k, v in results.items()}
    summary["ratio_loop_vs_bare"] = summary["genzoo_trainer_loop"] / summary["bare_pytorch_train"]
    summary["ratio_naive_vs_cached"] = summary["sample16_naive_s"] / summary["sample16_cached_s"]
    summary["device"] = device_label(dev)
    summary["torch"] = torch.__version__
    dump_report(summary, results, vars(a), a.json)


if __name__ == "__main__":
    main()
