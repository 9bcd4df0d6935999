"""bf16 autocast vs fp32 on this CPU: training_step throughput of registry models, both
precisions interleaved in one process (ratios survive a shared machine's drift).

    .venv/bin/python benchmarks/amp_cpu.py pixelcnn dcgan cnn-fashion gpt --preset quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from genzoo.core.bench import bench_data
from genzoo.core.data import StepBatches
from genzoo.core.factory import build_model, plan
from genzoo.core.trainer import StepContext, cpu_bf16_matmul


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="+")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    print(f"CPU bf16 matrix units (amx_bf16): {cpu_bf16_matmul()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    out = []
    for name in a.names:
        p = plan(name, a.preset, {"train.device": "cpu"})
        data = bench_data(p, p.train.batch_size)
        torch.manual_seed(0)
        model = build_model(p, data)
        model.setup(data)
        batches = StepBatches(data, p.train.batch_size, 0)
        batch = data.to_device(batches(0), torch.device("cpu"))
        opts = model.configure_optimizers(p.train)
        ctxs = {"fp32": StepContext(torch.device("cpu"), "none", p.train.grad_clip),
                "bf16": StepContext(torch.device("cpu"), "bf16", p.train.grad_clip)}
        times: dict[str, list[float]] = {k: [] for k in ctxs}
        for rep in range(a.repeats + 1):
            for k, ctx in ctxs.items():
                t = time.perf_counter()
                for _ in range(a.steps):
                    model.training_step(batch, opts, ctx)
                if rep:  # the first round warms up
                    times[k].append((time.perf_counter() - t) / a.steps)
        fp32, bf16 = (statistics.median(times[k]) for k in ("fp32", "bf16"))
        row = {"model": name, "preset": a.preset, "params": model.num_params(),
               "batch": p.train.batch_size, "fp32_samples_s": p.train.batch_size / fp32,
               "bf16_samples_s": p.train.batch_size / bf16, "bf16_speedup": fp32 / bf16}
        out.append(row)
        print(f"{name:14s} {row['params']:>9,d} params batch {row['batch']:4d}: fp32 "
              f"{row['fp32_samples_s']:8.1f} /s, bf16 {row['bf16_samples_s']:8.1f} /s, "
              f"bf16 = {row['bf16_speedup']:.2f}x fp32", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
