"""genzoo's trainer vs a bare-PyTorch loop over the *same* network, in one process.

    python benchmarks/peers/bare_loop.py pixelcnn --preset book --batch-size 64 --threads 1
    python benchmarks/peers/bare_loop.py dcgan --preset book --batch-size 16 --threads 1

The bare loop is what a tutorial writes: the family's network and loss, batches already on the
device as floats, ``zero_grad / backward / step`` with plain ``torch.optim.Adam`` (the preset's
lr and betas), no clipping, fp32, and one ``torch.save`` of model + optimizer at the end (as
pytorch/examples do). genzoo runs ``Trainer.fit`` for the same steps: its batch order, uint8 ->
float conversion, lr schedule, NaN watch, logging and its final safetensors checkpoint, in fp32
too (``amp=none``), so the ratio measures the loop, not the precision. Variants show where time
goes: the trainer with the preset's clipping, without gradient clipping, with the for-loop or
the fused Adam; and last the trainer as configured with its default precision (``amp=auto``:
bf16 autocast on CPUs with AMX), which a bare fp32 loop does not get.

Interleaved repeat by repeat (machine noise hits every variant alike); the figure is the median
over repeats of genzoo samples/s / bare samples/s (> 1: genzoo faster).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genzoo.core.bench import bench_data
from genzoo.core.checkpoint import Run
from genzoo.core.data import StepBatches
from genzoo.core.factory import build_model, plan
from genzoo.core.trainer import StepContext, TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", default="pixelcnn")
    ap.add_argument("--preset", default="book")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    p = plan(a.name, a.preset, {"train.device": "cpu", "train.batch_size": a.batch_size})
    data = bench_data(p, a.batch_size)
    torch.manual_seed(0)
    model = build_model(p, data)
    model.setup(data)
    train = p.train
    batches = StepBatches(data, a.batch_size, 0)
    on_device = [data.to_device(batches(i), dev) for i in range(a.steps)]

    # -- the bare loop: the same network and loss, plain Adam, nothing around it -------------
    bare_model = build_model(p, data)
    bare_model.setup(data)
    bare_model.load_state_dict(model.state_dict())
    ctx = StepContext(dev, "none", None)  # fp32, no clipping
    bare_opts = {k: torch.optim.Adam(o.param_groups[0]["params"] if len(o.param_groups) == 1 else
                                     [q for g in o.param_groups for q in g["params"]],
                                     lr=train.lr, betas=tuple(train.betas))
                 for k, o in bare_model.configure_optimizers(train).items()}

    def bare() -> None:
        for batch in on_device:
            bare_model.training_step(batch, bare_opts, ctx)
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": bare_model.state_dict(),
                        **{k: o.state_dict() for k, o in bare_opts.items()}}, Path(d) / "ckpt.pt")

    # -- genzoo's trainer, fp32, as configured and in variants --------------------------------
    def trainer(clip: float | None, fused: bool, amp: str = "none") -> None:
        cfg = TrainConfig(**{**vars(train), "steps": a.steps, "amp": amp, "grad_clip": clip,
                             "sample_every": 0, "checkpoint_every": 10**9})
        original = model.configure_optimizers

        def configure(t: TrainConfig) -> dict:
            opts = original(t)
            if not fused:  # the for-loop Adam (torch's CPU default without fused=True)
                opts = {k: type(o)(o.param_groups, **{**o.defaults, "fused": None, "foreach": False})
                        for k, o in opts.items()}
            return opts
        model.configure_optimizers = configure
        try:
            with tempfile.TemporaryDirectory() as d:
                Trainer(model, data, cfg, Run.create(a.name, Path(d) / "run"), None,
                        progress=False).fit()
        finally:
            del model.configure_optimizers

    fused_default = any(o.defaults.get("fused") for o in model.configure_optimizers(train).values())
    variants = {
        "bare": bare,
        f"genzoo (preset: grad_clip={train.grad_clip}, fused Adam={fused_default})":
            lambda: trainer(train.grad_clip, fused_default),
        "genzoo, grad_clip=None, for-loop Adam": lambda: trainer(None, False),
        "genzoo, grad_clip=None, fused Adam": lambda: trainer(None, True),
        f"genzoo as configured, its default precision (amp={train.amp})":
            lambda: trainer(train.grad_clip, fused_default, train.amp),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(a.repeats + 1):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            if rep:  # round 0 warms up
                times[k].append(time.perf_counter() - t)
    rate = {k: [a.steps * a.batch_size / t for t in v] for k, v in times.items()}
    out = {"model": a.name, "preset": a.preset, "batch": a.batch_size, "steps": a.steps,
           "params": model.num_params(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "samples_per_s": {k: statistics.median(v) for k, v in rate.items()},
           "ratio_vs_bare": {k: statistics.median(g / b for g, b in zip(v, rate["bare"]))
                             for k, v in rate.items() if k != "bare"}}
    print(f"{a.name} {a.preset} ({out['params']:,} params), batch {a.batch_size}, {a.steps} steps "
          f"per repeat, {a.repeats} repeats, {out['threads']} threads, fp32")
    for k, v in out["samples_per_s"].items():
        r = out["ratio_vs_bare"].get(k)
        print(f"  {k:58s} {v:8.1f} samples/s" + (f"   {r:.3f}x bare" if r else ""))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
