"""Fast samplers against their naive references, with and without CUDA graphs.

For each family with a fast autoregressive sampler, times in one process, alternating, median
of `--repeats` after a warm-up, and checks that every variant drew the same output:
- ``naive``: the reference (a full forward pass per pixel / per token; for pixelcnn-md, whose
  32x32 naive pass takes minutes on a CPU, only with ``--md-naive``);
- ``fast, eager``: the cached / stateful sampler kernel by kernel (``cuda_graph=false``);
- ``fast, graph``: the same static step captured once and replayed (CUDA only; on a CPU it is
  the eager sampler again, so it is skipped there).

Networks are the presets' architectures, freshly initialised (sampling cost does not depend on
the weights); the end-of-text stop is off so every call draws the same number of tokens.

    python benchmarks/fast_samplers.py --device cuda --json benchmarks/results/fast-samplers-cuda.json
    python benchmarks/fast_samplers.py --device cpu --threads 1 --quick
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import genzoo
from genzoo.core.bench import device_label, dump_report


def pixelcnn(preset: str, dev: torch.device, n: int) -> tuple[dict[str, Callable[[], Any]], str]:
    from genzoo.plugins.pixelcnn import CachedSampler, NaiveSampler
    model = genzoo.create_model("pixelcnn", preset=preset).to(dev).eval()
    c = model.config

    def run(sampler: Any) -> Callable[[], Any]:
        return lambda: sampler.sample(model, n, torch.Generator().manual_seed(0))
    return ({"naive": run(NaiveSampler()), "eager": run(CachedSampler(cuda_graph=False)),
             "graph": run(CachedSampler())},
            f"pixelcnn {preset}: {model.num_params():,} params, {c.image_size}x{c.image_size}, n={n}")


def pixelcnn_md(preset: str, dev: torch.device, n: int, naive: bool) -> tuple[dict[str, Callable[[], Any]], str]:
    from genzoo.plugins.pixelcnn_md import CachedSampler, NaiveSampler
    model = genzoo.create_model("pixelcnn-md", preset=preset).to(dev).eval()
    c = model.config

    def run(sampler: Any) -> Callable[[], Any]:
        return lambda: sampler.sample(model, n, torch.Generator().manual_seed(0))
    fns = {"naive": run(NaiveSampler()), "eager": run(CachedSampler(cuda_graph=False)),
           "graph": run(CachedSampler())}
    if not naive:
        del fns["naive"]
    return fns, f"pixelcnn-md {preset}: {model.num_params():,} params, {c.image_size}x{c.image_size}, n={n}"


def lstm(preset: str, dev: torch.device, n: int, tokens: int) -> tuple[dict[str, Callable[[], Any]], str]:
    from genzoo.core.text import Tokenizer
    from genzoo.plugins.lstm import LSTMLanguageModel, NaiveSampler, StatefulSampler
    vocab = 2000
    model = genzoo.create_model("lstm", preset=preset, **{"model.vocab_size": vocab}, pad_id=None)
    assert isinstance(model, LSTMLanguageModel)
    model.tokenizer = Tokenizer("word", ["", "[UNK]"] + [f"w{i}" for i in range(vocab - 2)])
    model.to(dev).eval()

    def run(sampler: Any) -> Callable[[], Any]:
        return lambda: sampler.sample(model, n, torch.Generator().manual_seed(0), prompt="w1 w2").ids
    kw = {"max_new_tokens": tokens}
    return ({"naive": run(NaiveSampler(**kw)), "eager": run(StatefulSampler(cuda_graph=False, **kw)),
             "graph": run(StatefulSampler(**kw))},
            f"lstm {preset}: {model.num_params():,} params, {tokens} tokens, n={n}")


def gpt(name: str, preset: str, dev: torch.device, n: int, tokens: int) -> tuple[dict[str, Callable[[], Any]], str]:
    from genzoo.plugins.gpt import CachedSampler, NaiveSampler
    model = genzoo.create_model(name, preset=preset, pad_id=None).to(dev).eval()
    model.start_counts.fill_(1.0)

    def run(sampler: Any) -> Callable[[], Any]:
        return lambda: sampler.sample(model, n, torch.Generator().manual_seed(0)).ids
    kw = {"max_new_tokens": tokens}
    return ({"naive": run(NaiveSampler(**kw)), "eager": run(CachedSampler(cuda_graph=False, **kw)),
             "graph": run(CachedSampler(**kw))},
            f"{name} {preset}: {model.num_params():,} params, context {model.config.context}, "
            f"{tokens} tokens, n={n}")


def time_all(fns: dict[str, Callable[[], Any]], repeats: int, dev: torch.device) -> dict[str, list[float]]:
    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    outs = {k: fn() for k, fn in fns.items()}  # warm-up, and the same-output check
    first = next(iter(outs.values()))
    for k, out in outs.items():
        same = torch.equal(out, first) if isinstance(out, torch.Tensor) else out == first
        if not same:
            raise AssertionError(f"{k} drew different output from naive")
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # alternate, so drift hits every variant alike
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--quick", action="store_true", help="quick presets only (CPU smoke run)")
    ap.add_argument("--md-naive", action="store_true", help="time pixelcnn-md's naive sampler too")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    preset = "quick" if args.quick else "book"
    cases = []
    for n in args.n:
        cases += [pixelcnn(preset, dev, n), pixelcnn_md(preset, dev, n, args.md_naive or dev.type == "cuda"), lstm(preset if args.quick else "quick", dev, n, args.tokens),
                  gpt("gpt", "quick", dev, n, args.tokens)]
        if not args.quick:
            cases.append(gpt("gpt-shakespeare", "book", dev, n, args.tokens))
    rows, raw = [], {}
    for fns, label in cases:
        if dev.type != "cuda":
            fns.pop("graph")  # no graphs off CUDA: it would time the eager sampler twice
        times = time_all(fns, args.repeats, dev)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"case": label, **{f"{k}_s": v for k, v in med.items()}}
        if "naive" in med:
            row["fast_eager_vs_naive"] = med["naive"] / med["eager"]
        if "graph" in med:
            row["graph_vs_eager"] = med["eager"] / med["graph"]
            if "naive" in med:
                row["fast_graph_vs_naive"] = med["naive"] / med["graph"]
        rows.append(row)
        raw[label] = times
        ratios = "  ".join(f"{k} {v:.1f}x" for k, v in row.items() if k.endswith(("naive", "eager")))
        print(f"{label}: " + "  ".join(f"{k} {v:.4f} s" for k, v in med.items()) + f"  | {ratios}",
              flush=True)
    dump_report({"device": device_label(dev), "repeats": args.repeats, "rows": rows}, raw,
                vars(args), args.json)


if __name__ == "__main__":
    main()
