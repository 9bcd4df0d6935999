"""RealNVP: genzoo vs normflows on the identical architecture, in one process.

    pip install -e ".[bench]"      # normflows
    python benchmarks/peers/realnvp_normflows.py --threads 1 --repeats 9

normflows gets the book's coupling as its ``MaskedAffineFlow(b, t, s)`` (f(z) = b*z + (1-b) *
(z * exp(s(b*z)) + t(b*z))) with two ``nets.MLP([2, 256, 256, 256, 256, 2])`` per coupling (s
ending in tanh, as in the book), the same alternating masks [0, 1], [1, 0], a fixed standard
normal base, and ``torch.optim.Adam``: how a normflows user writes the book's model. genzoo's
weights are copied into it and both log-densities are compared, so the two compute the same
function, not just the same parameter count.

Timed, interleaved repeat by repeat so machine noise hits both alike (ratio per repeat, median):
- training steps/s at batch 256 on two moons: genzoo's ``Model.training_step`` (what the trainer
  calls; fused Adam, s and t as one batched matmul) vs normflows' ``forward_kld`` + backward + Adam;
  optionally genzoo with ``torch.compile`` (``--compile``; the trainer's ``compile: true``);
- sampling 10,000 points: genzoo's ``inverse`` sampler vs ``NormalizingFlow.sample``.
Ratios > 1 mean genzoo is faster. Writes benchmarks/results/realnvp-normflows.json and
benchmarks/realnvp_normflows.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import genzoo
from genzoo.core.data import DataConfig, load
from genzoo.core.trainer import StepContext, TrainConfig
from genzoo.plugins.realnvp import InverseSampler

HERE = Path(__file__).resolve().parents[1]


def normflows_model(couplings: int, hidden: int, layers: int):
    import normflows as nf
    flows = []
    for k in range(couplings):
        mask = ((torch.arange(2) + k) % 2).float()  # genzoo's (and the book's) mask of coupling k
        sizes = [2] + [hidden] * layers + [2]
        s = nf.nets.MLP(sizes, output_fn="tanh")
        t = nf.nets.MLP(sizes)
        flows.append(nf.flows.MaskedAffineFlow(mask, t=t, s=s))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def copy_weights(gz, nfm) -> None:
    """genzoo's stacked (s, t) layers -> normflows' two MLPs per coupling."""
    with torch.no_grad():
        for coupling, flow in zip(gz.couplings, nfm.flows):
            for which, mlp in ((0, flow.s), (1, flow.t)):
                linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
                for twin, lin in zip(coupling.net, linears):
                    lin.weight.copy_(twin.weight[which].t())
                    lin.bias.copy_(twin.bias[which, 0])


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--couplings", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed repeat")
    ap.add_argument("--sample-n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="also time genzoo with torch.compile")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--json", default=str(HERE / "results" / "realnvp-normflows.json"))
    ap.add_argument("--markdown", default=str(HERE / "realnvp_normflows.md"))
    a = ap.parse_args()
    import normflows as nf
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device("cpu")

    gz = genzoo.create_model("realnvp", preset="book", couplings=a.couplings, hidden=a.hidden,
                             layers=a.layers)
    nfm = normflows_model(a.couplings, a.hidden, a.layers)
    copy_weights(gz, nfm)
    data = load(DataConfig(name="two-moons"), "train")
    g = torch.Generator().manual_seed(0)
    batches = [data.x[torch.randint(len(data), (a.batch_size,), generator=g)] for _ in range(a.steps)]
    with torch.no_grad():
        x = data.x[:1000]
        gap = float((gz.log_prob({"x": x}) - nfm.log_prob(x)).abs().max())
    n_gz, n_nf = gz.num_params(), sum(p.numel() for p in nfm.parameters())
    print(f"params: genzoo {n_gz:,}  normflows {n_nf:,};  max |log p difference| {gap:.2e}")
    assert n_gz == n_nf and gap < 1e-4, "the two models differ"

    # -- training ---------------------------------------------------------------------------
    train_cfg = TrainConfig(lr=a.lr, grad_clip=None, amp="none")
    gz_opt = gz.configure_optimizers(train_cfg)
    ctx = StepContext(dev, "none", None)
    nf_opt = torch.optim.Adam(nfm.parameters(), lr=a.lr)
    it = {"i": 0}

    def batch():
        it["i"] = (it["i"] + 1) % len(batches)
        return batches[it["i"]]

    def gz_step():
        gz.training_step({"x": batch()}, gz_opt, ctx)

    def nf_step():
        loss = nfm.forward_kld(batch())
        nf_opt.zero_grad(set_to_none=True)
        loss.backward()
        nf_opt.step()

    contenders = {"genzoo": gz_step, "normflows": nf_step}
    if a.compile:
        gzc = genzoo.create_model("realnvp", preset="book", couplings=a.couplings, hidden=a.hidden,
                                  layers=a.layers)
        gzc.load_state_dict(gz.state_dict())
        gzc.loss = torch.compile(gzc.loss)  # what the trainer does with compile: true
        gzc_opt = gzc.configure_optimizers(train_cfg)

        def gzc_step():
            gzc.training_step({"x": batch()}, gzc_opt, ctx)
        contenders["genzoo+compile"] = gzc_step
    gz.train(), nfm.train()
    for fn in contenders.values():  # warm-up (and compilation)
        timed(fn, 5)
    times = {k: [] for k in contenders}
    for _ in range(a.repeats):
        for k, fn in contenders.items():
            times[k].append(timed(fn, a.steps) / a.steps)
    train = {k: {"steps_per_s": 1 / statistics.median(v), "ms_per_step": 1e3 * statistics.median(v)}
             for k, v in times.items()}
    for k in contenders:
        if k != "normflows":
            train[k]["ratio_vs_normflows"] = statistics.median(
                n / t for n, t in zip(times["normflows"], times[k]))

    # -- sampling ---------------------------------------------------------------------------
    gz.eval(), nfm.eval()
    sampler = InverseSampler()

    def gz_sample():
        with torch.no_grad():
            sampler.sample(gz, a.sample_n, torch.Generator().manual_seed(1))

    def nf_sample():
        with torch.no_grad():
            nfm.sample(a.sample_n)

    for fn in (gz_sample, nf_sample):
        timed(fn, 2)
    st = {"genzoo": [], "normflows": []}
    for _ in range(a.repeats):
        st["genzoo"].append(timed(gz_sample, 1))
        st["normflows"].append(timed(nf_sample, 1))
    sample = {k: {"seconds": statistics.median(v), "points_per_s": a.sample_n / statistics.median(v)}
              for k, v in st.items()}
    sample["genzoo"]["ratio_vs_normflows"] = statistics.median(
        n / t for n, t in zip(st["normflows"], st["genzoo"]))

    result = {
        "architecture": {"couplings": a.couplings, "hidden": a.hidden, "layers": a.layers,
                         "params_genzoo": n_gz, "params_normflows": n_nf,
                         "max_log_prob_difference": gap},
        "batch_size": a.batch_size, "steps_per_repeat": a.steps, "repeats": a.repeats,
        "sample_n": a.sample_n, "train": train, "sample": sample,
        "machine": {"device": "cpu", "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "normflows": getattr(nf, "__version__", "?"), "python": platform.python_version()},
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| training steps/s, batch {a.batch_size} | {train['genzoo']['steps_per_s']:.1f} | "
            f"{train['normflows']['steps_per_s']:.1f} | **{train['genzoo']['ratio_vs_normflows']:.2f}x** |"]
    if "genzoo+compile" in train:
        rows.append(f"| training steps/s, genzoo with torch.compile | {train['genzoo+compile']['steps_per_s']:.1f} | "
                    f"{train['normflows']['steps_per_s']:.1f} | **{train['genzoo+compile']['ratio_vs_normflows']:.2f}x** |")
    rows.append(f"| sampling {a.sample_n:,} points, s | {sample['genzoo']['seconds']:.3f} | "
                f"{sample['normflows']['seconds']:.3f} | **{sample['genzoo']['ratio_vs_normflows']:.2f}x** |")
    md = "\n".join([
        "# RealNVP: genzoo vs normflows (identical architecture)", "",
        f"{a.couplings} couplings, s and t MLPs of {a.layers} x {a.hidden} (ReLU; s ends in tanh), masks "
        f"[0, 1] / [1, 0], N(0, I) base: **{n_gz:,} parameters in both** (genzoo's weights copied "
        f"into normflows; max |log p| difference {gap:.1e}). CPU, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}, normflows {result['machine']['normflows']}. "
        f"Median of {a.repeats} interleaved repeats ({a.steps} steps each); the ratio is the median "
        "of per-repeat ratios (> 1: genzoo faster). The machine was shared with other jobs, so "
        "absolute figures are noisy; the ratios were measured side by side in one process.", "",
        "| | genzoo | normflows | ratio |", "| --- | --- | --- | --- |", *rows, "",
        "Command:", "", "```bash",
        "python benchmarks/peers/realnvp_normflows.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("threads", a.threads), ("repeats", a.repeats),
                                                        ("steps", a.steps)) if v) +
        (" --compile" if a.compile else ""), "```", ""])
    Path(a.markdown).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
