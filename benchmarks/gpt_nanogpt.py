"""nanoGPT's CPU "baby GPT" trained inside genzoo, scored the way the issue scores nanoGPT.

nanoGPT's README CPU command (config/train_shakespeare_char.py plus overrides):

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

is the `gpt-shakespeare` quick preset: 4 layers, 4 heads, 128 wide, block 64, no biases, tied
embedding, 804,096 parameters; 2,000 iterations of 12 x 64 characters; AdamW lr 1e-3, warm-up
100, cosine to min_lr 1e-4 (lr_floor 0.1) at 2,000, betas (0.9, 0.99), weight decay 0.1 on
matrices only, clip 1.0. nanoGPT runs fp32 on a CPU, so this script trains with amp=none.

Splits (characters of tinyshakespeare input.txt, N = 1,115,394):
  --split test : train on the first 90%, score the last 10%. This is nanoGPT's own split
                 (prepare.py: train = data[:int(n*0.9)], val = data[int(n*0.9):]) and genzoo's
                 tinyshakespeare train/test split (test_fraction 0.1). Report figures only.
  --split val  : train on the first 80%, score characters [80%, 90%). For tuning: never
                 touches the last 10%.
Scoring: the scored slice cut into non-overlapping 64-character windows (plus one target
character), every position of every window scored, mean nats per character over all of them
(the partial window at the end is dropped: under 64 of ~111,000 characters).

    OMP_NUM_THREADS=1 python benchmarks/gpt_nanogpt.py --split test --seeds 0 1 2 \
        --json benchmarks/results/gpt_nanogpt_test.json
    OMP_NUM_THREADS=1 python benchmarks/gpt_nanogpt.py --split val --seeds 0 --set train.lr=0.002
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genzoo import api

TEXT = Path(__file__).resolve().parents[1] / "genzoo" / "data" / "tinyshakespeare.txt"
BLOCK = 64
# nanoGPT's recipe, pinned here (the preset may move on): fp32 as nanoGPT runs on a CPU
NANOGPT = {"train.amp": "none", "train.sample_every": 0, "train.steps": 2000, "train.batch_size": 12,
           "train.lr": 1e-3, "train.warmup_steps": 100, "train.schedule": "cosine",
           "train.lr_floor": 0.1, "train.betas": [0.9, 0.99], "train.weight_decay": 0.1,
           "train.grad_clip": 1.0, "model.dropout": 0.0}


def parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@torch.no_grad()
def score(model, text: str, batch: int = 256) -> tuple[float, int]:
    """Mean nats/char over non-overlapping BLOCK-char windows of `text`, every position."""
    ids = torch.tensor(model.tokenizer.encode(text), dtype=torch.long)
    if len(ids) != len(text):
        raise SystemExit("the run's tokenizer does not map characters one to one")
    n = (len(ids) - 1) // BLOCK
    rows = ids[: n * BLOCK + 1].unfold(0, BLOCK + 1, BLOCK)
    model.eval()
    total, count = 0.0, 0
    for i in range(0, n, batch):
        r = rows[i: i + batch].to(model.device)
        logits, _ = model(r[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), r[:, 1:].flatten(),
                                       reduction="sum"))
        count += r[:, 1:].numel()
    return total / count, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe change on top of nanoGPT's, e.g. train.lr=0.002")
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temp folder)")
    ap.add_argument("--json", default=None, help="append the result to this JSON list")
    a = ap.parse_args()
    text = TEXT.read_text(encoding="utf-8")
    N = len(text)
    if a.split == "test":
        fraction, scored = 0.1, text[int(N * 0.9):]
    else:
        fraction, scored = 0.2, text[int(N * 0.8): int(N * 0.9)]
    sets = dict(kv.split("=", 1) for kv in a.sets)
    overrides = {**NANOGPT, "data.test_fraction": fraction,
                 **{k: parse_value(v) for k, v in sets.items()}}
    results = []
    with tempfile.TemporaryDirectory(prefix="gpt_nanogpt_") as tmp:
        root = Path(a.out or tmp)
        for seed in a.seeds:
            c0, t0 = cpu_seconds(), time.time()
            run = api.train("gpt-shakespeare", "quick", {**overrides, "train.seed": seed},
                            out=root / f"{a.split}-seed{seed}", progress=False)
            c1, t1 = cpu_seconds(), time.time()
            model = api.load_run(str(run.path)).model
            loss, count = score(model, scored)
            params = sum(p.numel() for p in model.parameters())
            results.append({"seed": seed, "loss": round(loss, 4), "scored_chars": count,
                            "params": params, "train_cpu_s": round(c1 - c0, 1),
                            "train_wall_s": round(t1 - t0, 1)})
            print(json.dumps(results[-1]), flush=True)
    losses = [r["loss"] for r in results]
    summary = {"label": a.label or (" ".join(a.sets) or "nanoGPT recipe"), "split": a.split,
               "sets": sets, "mean": round(statistics.mean(losses), 4),
               "sd": round(statistics.stdev(losses), 4) if len(losses) > 1 else None,
               "runs": results, "command": " ".join(["python"] + sys.argv)}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    if a.json:
        path = Path(a.json)
        old = json.loads(path.read_text()) if path.exists() else []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(old + [summary], indent=1) + "\n")


if __name__ == "__main__":
    main()
