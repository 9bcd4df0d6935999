"""LSTM sampling: the stateful sampler (one LSTM step per new token, state carried) against the
naive one (the book's TextGenerator: the whole prefix re-run for every token), 200 new tokens.

The network is the `lstm` quick preset's (Embedding 2,000 x 100 -> LSTM 128 -> 2,000 logits),
freshly initialised: sampling cost does not depend on the weights. The end-of-text stop is
switched off (pad_id=None) so every call draws exactly `--tokens` tokens. Both samplers are
timed in the same process, alternating, median of `--repeats` after one warm-up each; the
script also checks that they drew the same tokens.

    python benchmarks/lstm_sampling.py --repeats 5 --json benchmarks/results/lstm_sampling.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from genzoo.core.text import Tokenizer
from genzoo.plugins.lstm import LSTMConfig, LSTMLanguageModel, NaiveSampler, StatefulSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 16], help="samples per call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the records here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    vocab = 2000
    model = LSTMLanguageModel(LSTMConfig(vocab_size=vocab, pad_id=None)).to(dev).eval()
    model.tokenizer = Tokenizer("word", ["", "[UNK]"] + [f"w{i}" for i in range(vocab - 2)])
    model.start_counts.fill_(1.0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    records = []
    for n in args.n:
        samplers = {"stateful": StatefulSampler(max_new_tokens=args.tokens),
                    "naive": NaiveSampler(max_new_tokens=args.tokens)}
        times: dict[str, list[float]] = {k: [] for k in samplers}
        ids = {}
        with torch.no_grad():
            for name, s in samplers.items():  # warm-up, and the same-tokens check
                ids[name] = s.sample(model, n, torch.Generator().manual_seed(0), prompt="w1 w2").ids
            assert ids["stateful"] == ids["naive"], "samplers disagree"
            assert all(len(r) == 2 + args.tokens for r in ids["naive"])
            for _ in range(args.repeats):  # alternate, so load drift hits both alike
                for name, s in samplers.items():
                    sync()
                    t = time.perf_counter()
                    s.sample(model, n, torch.Generator().manual_seed(0), prompt="w1 w2")
                    sync()
                    times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        rec = {"n": n, "tokens": args.tokens, "device": str(dev), "threads": torch.get_num_threads(),
               "stateful_s": med["stateful"], "naive_s": med["naive"],
               "ratio": med["naive"] / med["stateful"], "repeats": args.repeats,
               "stateful_all": times["stateful"], "naive_all": times["naive"],
               "torch": torch.__version__, "python": platform.python_version()}
        if dev.type == "cuda":
            rec["gpu"] = torch.cuda.get_device_name(dev)
        records.append(rec)
        print(f"n={n:3d}  {args.tokens} tokens  stateful {med['stateful']:.3f} s  "
              f"naive {med['naive']:.3f} s  ratio {rec['ratio']:.1f}x  (same tokens: yes)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
