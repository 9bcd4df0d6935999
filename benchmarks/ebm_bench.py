"""EBM: training throughput (each step includes 60 Langevin steps on the batch), Langevin
sampling latency (per image and per Langevin step), params; and, for a trained run, the energy
gap the UvA tutorial 8 reports (its model scores random noise about -17.9 against about 0 for
training images; genzoo reports energies = -scores, so the same gap reads +17.9 vs 0).

    python benchmarks/ebm_bench.py --batch-size 128 --repeats 3 --json out.json [--run RUN]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

import genzoo
from genzoo.core.bench import device_label, dump_report, timeit
from genzoo.core.checkpoint import Run
from genzoo.core.data import DataConfig, load
from genzoo.core.sampler import draw
from genzoo.core.trainer import StepContext, TrainConfig, Trainer
from genzoo.plugins.ebm import LangevinSampler


def energy_gap(run_path: str, n: int = 1000) -> dict:
    loaded = genzoo.load_run(run_path)
    model = loaded.model
    train = loaded.data("train").images()[:n] * 2 - 1
    test = loaded.data("test").images()[:n] * 2 - 1
    noise = torch.rand(len(train), *train.shape[1:], generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        e = {k: float(model.energy(v).mean()) for k, v in
             (("train", train), ("test", test), ("noise", noise))}
    s = draw(model, LangevinSampler(), 256, torch.Generator().manual_seed(0)).images * 2 - 1
    with torch.no_grad():
        e["langevin60_from_noise"] = float(model.energy(s).mean())
    return {"energy_" + k: v for k, v in e.items()} | {
        "score_noise_minus_score_train": e["train"] - e["noise"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="training steps per timed repeat")
    ap.add_argument("--n", type=int, default=16, help="images per sampling call")
    ap.add_argument("--run", help="a trained ebm run: also report its energy gap")
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    data = load(DataConfig(name="mnist-5k", pad=2))
    x = data.images(torch.arange(a.batch_size)).to(dev)
    torch.manual_seed(0)
    model = genzoo.create_model("ebm", preset="book").to(dev)
    model.setup(data)
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=1e-4, grad_clip=None, amp="none",
                      device=a.device, sample_every=0, checkpoint_every=10**9, log_every=a.steps)
    opts = model.configure_optimizers(cfg)
    ctx = StepContext(dev, "none", None)
    results = {}

    def steps():
        for _ in range(a.steps):
            model.training_step({"x": x}, opts, ctx)

    def loop():
        with tempfile.TemporaryDirectory() as d:
            Trainer(model, data, cfg, Run.create("bench", d + "/r"), None, progress=False).fit()

    steps()
    loop()
    for _ in range(a.repeats):
        results.setdefault("train_step_samples_per_s", []).append(
            a.steps * a.batch_size / timeit(steps, 1, 0, dev)[0])
        results.setdefault("trainer_loop_samples_per_s", []).append(
            a.steps * a.batch_size / timeit(loop, 1, 0, dev)[0])
    L = model.config.langevin_steps
    sampler = LangevinSampler(steps=L)
    times = timeit(lambda: draw(model, sampler, a.n, torch.Generator().manual_seed(0)), a.repeats, 1, dev)
    results["sample_s_per_image"] = [t / a.n for t in times]
    results["sample_s_per_langevin_step_batch"] = [t / L for t in times]
    results["sample_s_per_langevin_step_per_image"] = [t / L / a.n for t in times]
    summary = {k: statistics.median(v) for k, v in results.items()}
    summary.update(params=model.num_params(), langevin_steps=L, batch_size=a.batch_size, n=a.n,
                   device=device_label(dev), torch=torch.__version__)
    if a.run:
        summary["run"] = a.run
        summary.update(energy_gap(a.run))
    dump_report(summary, results, vars(a), a.json)


if __name__ == "__main__":
    main()
