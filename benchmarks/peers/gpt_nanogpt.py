"""GPT: genzoo vs a nanoGPT-equivalent model on nanoGPT's CPU "baby GPT", in one process.

    OMP_NUM_THREADS=1 python benchmarks/peers/gpt_nanogpt.py --repeats 7 --json benchmarks/results/gpt_nanogpt.json

The nanoGPT model below is karpathy/nanoGPT's model.py reduced to what the baby GPT uses
(4 layers, 4 heads, 128 wide, block 64, no biases, tied embedding, dropout 0, flash attention
through SDPA, AdamW with nanoGPT's decay groups). genzoo's weights are copied into it and the
logits checked equal, so both time the *same* network. Then, interleaved repeat by repeat:
- training step (forward, backward, clip 1.0, AdamW) at batch 12 x 64 characters: genzoo's
  ``Model.training_step`` vs nanoGPT's loop body; ratio genzoo/nanoGPT > 1 means genzoo is faster;
- sampling 256 new characters: nanoGPT's ``generate`` (full forward over the cropped window per
  token), genzoo ``naive`` (the same, windows as ``cached``) and genzoo ``cached`` (KV cache),
  on the baby GPT (context 64) and on a 256-context model where the cache never refills.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.core.bench import matmul_peak, timeit
from genzoo.core.data import DataConfig, load
from genzoo.core.trainer import StepContext, TrainConfig
from genzoo.plugins.gpt import CachedSampler, NaiveSampler

# -- nanoGPT (model.py, reduced) -------------------------------------------------------------


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class NanoMLP(nn.Module):
    def __init__(self, n_embd, bias):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = NanoAttention(n_embd, n_head, bias)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = NanoMLP(n_embd, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, bias=False):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([NanoBlock(n_embd, n_head, bias) for _ in range(n_layer)]),
            ln_f=LayerNorm(n_embd, bias)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return self.lm_head(x[:, [-1], :]), None

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def nano_from_genzoo(model) -> NanoGPT:
    c = model.config
    nano = NanoGPT(c.vocab, c.context, c.layers, c.heads, c.embed_dim, bias=c.bias)
    names = {"token_embedding.weight": "transformer.wte.weight",
             "position_embedding.weight": "transformer.wpe.weight",
             "ln_f.weight": "transformer.ln_f.weight"}
    for i in range(c.layers):
        for a, b in [("ln_1", "ln_1"), ("ln_2", "ln_2"), ("attn.qkv", "attn.c_attn"),
                     ("attn.proj", "attn.c_proj"), ("ff.0", "mlp.c_fc"), ("ff.2", "mlp.c_proj")]:
            names[f"blocks.{i}.{a}.weight"] = f"transformer.h.{i}.{b}.weight"
    ours = model.state_dict()
    nano.load_state_dict({names[k]: v for k, v in ours.items()} | {"lm_head.weight": ours["token_embedding.weight"]})
    return nano


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed repeat")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    results: dict[str, object] = {"threads": torch.get_num_threads(), "torch": torch.__version__}

    data = load(DataConfig(name="tinyshakespeare", seq_len=64), "train")
    model = genzoo.create_model("gpt-shakespeare", preset="quick").train()
    nano = nano_from_genzoo(model).train()
    x = data.rows[:12]
    with torch.no_grad():
        a, _ = model(x[:, :-1])
        b, _ = nano(x[:, :-1].contiguous(), x[:, 1:].contiguous())
    assert torch.allclose(a, b, atol=1e-5), "the two networks differ"
    assert sum(p.numel() for p in nano.parameters()) == model.num_params()

    # training steps, interleaved so drift on a shared machine hits both alike
    cfg = TrainConfig(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0)
    opts = model.configure_optimizers(cfg)
    ctx = StepContext(torch.device("cpu"), "none", 1.0)
    nano_opt = nano.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    g = torch.Generator().manual_seed(0)
    batches = [data.rows[torch.randint(len(data), (12,), generator=g)] for _ in range(8)]
    nano_batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]  # get_batch's X, Y

    def genzoo_steps():
        for i in range(args.steps):
            model.training_step({"x": batches[i % 8]}, opts, ctx)

    def nano_steps():
        for i in range(args.steps):
            X, Y = nano_batches[i % 8]
            _, loss = nano(X, Y)
            nano_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(nano.parameters(), 1.0)
            nano_opt.step()

    ours, theirs = [], []
    genzoo_steps(), nano_steps()  # warm-up
    for _ in range(args.repeats):
        ours += timeit(genzoo_steps, 1, 0, torch.device("cpu"))
        theirs += timeit(nano_steps, 1, 0, torch.device("cpu"))
    ms_ours = statistics.median(ours) / args.steps * 1e3
    ms_theirs = statistics.median(theirs) / args.steps * 1e3
    peak = statistics.median(matmul_peak(torch.device("cpu"))["values"])
    fpt = model.flops_per_token(64)
    results["train"] = {
        "genzoo_ms_per_step": ms_ours, "nanogpt_ms_per_step": ms_theirs,
        "ratio_genzoo_over_nanogpt": ms_theirs / ms_ours,
        "genzoo_tokens_per_s": 12 * 64 / ms_ours * 1e3,
        "flops_per_token_6N_plus_attn": fpt, "matmul_peak_flops": peak,
        "genzoo_mfu": fpt * 12 * 64 / (ms_ours / 1e3) / peak,
        "nanogpt_mfu": fpt * 12 * 64 / (ms_theirs / 1e3) / peak}
    print(json.dumps(results["train"], indent=1))

    # sampling 256 new tokens from a one-character prompt, one sequence
    model.eval(), nano.eval()
    sampling = {}
    big = genzoo.create_model("gpt-shakespeare", preset="quick", context=320).eval()
    for label, m in [("baby (context 64)", model), ("baby, context 320", big)]:
        prompt = torch.zeros(1, 1, dtype=torch.long)
        m.start_counts.fill_(1.0)
        kw = {"max_new_tokens": args.new_tokens, "top_k": 200}
        fns = {"cached": lambda: CachedSampler(**kw).sample(m, 1, torch.Generator().manual_seed(0)),
               "naive": lambda: NaiveSampler(**kw).sample(m, 1, torch.Generator().manual_seed(0))}
        if m is model:
            fns["nanoGPT generate"] = lambda: nano.generate(prompt, args.new_tokens, top_k=200)
        times = {k: [] for k in fns}
        for k, f in fns.items():
            f()
        with torch.no_grad():
            for _ in range(max(3, args.repeats // 2)):
                for k, f in fns.items():
                    times[k] += timeit(f, 1, 0, torch.device("cpu"))
        med = {k: statistics.median(v) for k, v in times.items()}
        sampling[label] = {**{f"{k}_s": v for k, v in med.items()},
                           "cache_speedup_over_naive": med["naive"] / med["cached"],
                           **({"cache_speedup_over_nanogpt": med["nanoGPT generate"] / med["cached"]}
                              if "nanoGPT generate" in med else {})}
        a = CachedSampler(**kw).sample(m, 1, torch.Generator().manual_seed(0)).ids
        b = NaiveSampler(**kw).sample(m, 1, torch.Generator().manual_seed(0)).ids
        sampling[label]["cached_equals_naive"] = a == b
    results["sample_256"] = sampling
    print(json.dumps(sampling, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
