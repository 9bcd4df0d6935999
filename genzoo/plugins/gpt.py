"""GPT (Radford et al. 2018; Foster ch. 9): a decoder-only transformer that predicts the next token.

Tokens and their positions are embedded and summed; each block lets every position attend to the
positions before it (causal multi-head attention) and then transforms each position on its own
(feed-forward); a linear head gives next-token logits. The book's block is the original
transformer's *post*-norm one (``x = norm(x + attn(x))``), nanoGPT / GPT-2's is *pre*-norm
(``x = x + attn(norm(x))`` and a final norm); both are here (``norm``), as are the book's
per-head key width (Keras ``MultiHeadAttention(key_dim=256)``) and nanoGPT's tied embedding.

Sampling keeps each layer's keys and values (a KV cache), so a new token costs one position's
work instead of a forward pass over the whole window. The blocks live in
``genzoo.nn.transformer``, shared with the music transformer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import (Model, Sampler, StepGraph, TextSample, Tokenizer, TokenOptions,
                           categorical)
from genzoo.nn.attention_view import AttentionRow, attention_map, attention_text
from genzoo.nn.autoregressive import TokenSteps, generate, run_token_steps, window_start
from genzoo.nn.transformer import Block, KVCache

IGNORE = -100  # cross_entropy's ignore_index


@dataclass
class GPTConfig:
    vocab: int = 10_000  # tokens, from the tokenizer (book: 10,000 words)
    context: int = 80  # positions the model can attend over (book: MAX_LEN 80)
    layers: int = 1  # transformer blocks (book: 1)
    heads: int = 2  # attention heads (book: 2)
    embed_dim: int = 256  # token / position embedding and residual width (book: 256)
    key_dim: int | None = 256  # per-head query/key/value width; None = embed_dim // heads (GPT-2)
    ff_dim: int = 256  # feed-forward hidden width (book: 256; GPT-2: 4 * embed_dim)
    activation: Literal["relu", "gelu"] = "relu"  # book: relu; GPT-2: gelu
    norm: Literal["post", "pre"] = "post"  # book: post-norm; GPT-2 / nanoGPT: pre-norm + final norm
    bias: bool = True  # biases in linear layers and layer norms (nanoGPT's baby GPT: False)
    tie_weights: bool = False  # output head shares the token embedding (Press & Wolf 2017)
    dropout: float = 0.1  # book: 0.1
    pad_id: int | None = None  # padding token of word-level data (0); None for a plain corpus

    def __post_init__(self) -> None:
        for key in ("vocab", "context", "layers", "heads", "embed_dim", "ff_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.key_dim is None and self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads "
                             f"{self.heads}; set key_dim")
        if self.key_dim is not None and self.key_dim < 1:
            raise ValueError(f"key_dim must be >= 1 (or none), got {self.key_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab:
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary of {self.vocab}")

    @property
    def head_dim(self) -> int:
        return self.key_dim or self.embed_dim // self.heads


# -- the model -----------------------------------------------------------------------------------

class GPT(Model):
    Config = GPTConfig
    modality = "text"
    likelihood_unit = "token"

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        c = config
        self.token_embedding = nn.Embedding(c.vocab, c.embed_dim)
        self.position_embedding = nn.Embedding(c.context, c.embed_dim)
        self.dropout = nn.Dropout(c.dropout)
        # Keras' LayerNormalization epsilon in the book's post-norm block, torch's in GPT-2's
        eps = 1e-6 if c.norm == "post" else 1e-5
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.heads, c.head_dim, c.ff_dim, c.dropout, c.norm, c.activation,
                  c.bias, eps) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.embed_dim, bias=c.bias) if c.norm == "pre" else nn.Identity()
        self.head = nn.Linear(c.embed_dim, c.vocab, bias=c.bias and not c.tie_weights)
        if c.tie_weights:  # one tensor, saved once (safetensors refuses shared storage)
            self.head.weight = self.token_embedding.weight
            self.register_state_dict_post_hook(_drop_tied_head)
            self.register_load_state_dict_pre_hook(_tie_head_on_load)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("attn.proj.weight") or name.endswith("ff.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.layers))
        self.tokenizer = None  # set by setup(data) or load_artifacts
        # how often each token starts a training row: the first token when there is no prompt
        self.register_buffer("start_counts", torch.zeros(c.vocab), persistent=False)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):  # GPT-2 / nanoGPT initialisation
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        tok = getattr(data, "tokenizer", None)
        if tok is None:
            return {}
        return {"vocab": len(tok), "context": int(data.seq_len), "pad_id": tok.pad_id}

    # -- the run's tokenizer -------------------------------------------------------------------
    def setup(self, data: Any) -> None:
        tok = data.tokenizer
        c = self.config
        if len(tok) > c.vocab:
            raise ConfigError(f"the tokenizer has {len(tok)} tokens but the model's vocab is "
                              f"{c.vocab}: --set vocab={len(tok)} (or a smaller data.vocab_size)")
        if data.seq_len > c.context:
            raise ConfigError(f"data.seq_len {data.seq_len} is longer than the model's context "
                              f"{c.context}: --set context={data.seq_len}")
        if tok.pad_id != c.pad_id:
            raise ConfigError(f"the data's pad id is {tok.pad_id} but the model's pad_id is "
                              f"{c.pad_id}: --set pad_id={tok.pad_id if tok.pad_id is not None else 'none'}")
        self.tokenizer = tok
        first = data.rows[:, 0].cpu()
        self.start_counts.copy_(torch.bincount(first, minlength=c.vocab)[: c.vocab].float())

    def artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start_counts": self.start_counts.detach().cpu()}
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer.to_json()
        return out

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        if "tokenizer" in artifacts:
            self.tokenizer = Tokenizer.from_json(artifacts["tokenizer"])
        if "start_counts" in artifacts:
            self.start_counts.copy_(artifacts["start_counts"])

    # -- network -------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, caches: list[KVCache] | None = None, start: int = 0,
                need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Token ids (B, T) at positions start..start+T-1 -> logits (B, T, vocab), and each
        layer's attention weights when asked."""
        T = idx.shape[1]
        if start + T > self.config.context:
            raise ValueError(f"{start + T} positions; the context is {self.config.context}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(pos))
        weights = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, caches[i] if caches is not None else None, need_weights)
            weights.append(w)
        return self.head(self.ln_f(x)), weights

    def decode_step(self, ids: torch.Tensor, caches: list[KVCache], pos: torch.Tensor,
                    need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """One new token per row (B,) at window position `pos`, a (1,) tensor on the device that
        every cache shares (static mode): next-token logits (B, vocab). Reads nothing back to
        the host, so a sampler can capture it as a CUDA graph."""
        x = self.token_embedding(ids[:, None]) + self.position_embedding(pos)
        weights = []
        for block, cache in zip(self.blocks, caches):
            x, w = block(x, cache, need_weights)
            weights.append(w)
        return self.head(self.ln_f(x))[:, 0], weights

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """``zoo export``: token ids (B, T), T <= context -> next-token logits (B, T, vocab)."""
        c = self.config
        T = min(8, c.context)
        ids = torch.randint(0, c.vocab, (2, T), generator=torch.Generator().manual_seed(0))
        return ExportLogits(self).eval(), (ids.to(self.device),), {
            "inputs": ["tokens"], "outputs": ["logits"],
            "dynamic": {"tokens": {0: "batch", 1: ["sequence", c.context]}},
            "what": f"GPT: token ids (B, T), T <= {c.context} -> next-token logits "
                    f"(B, T, {c.vocab}) at every position (the run's tokenizer: "
                    "artifacts.json)"}

    def targets(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of token rows (B, T+1). Padding is ignored in the loss, except the
        first pad after a document: it is the end-of-text token, so sampling knows when to stop."""
        x, y = rows[:, :-1], rows[:, 1:]
        pad = self.config.pad_id
        if pad is None:
            return x, y
        return x, y.masked_fill((y == pad) & (x == pad), IGNORE)  # a pad read after a pad

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = self.targets(batch["x"])
        logits, _ = self(x)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        return {"loss": nll}  # nats per token

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y = self.targets(batch["x"])
        logits, _ = self(x)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=IGNORE,
                              reduction="none")
        return -nll.sum(1)

    def likelihood_units(self, batch: dict[str, torch.Tensor]) -> int:
        return int((self.targets(batch["x"])[1] != IGNORE).sum())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, as nanoGPT's ``estimate_mfu`` counts them: 6 per weight
        that takes part in a matmul (2 forward, 4 backward) plus the attention scores and
        their use, 12 * layers * heads * head_dim * T."""
        c = self.config
        T = seq_len or c.context
        n = self.num_params() - self.position_embedding.weight.numel()
        if not c.tie_weights:  # an untied token embedding is a lookup, not a matmul
            n -= self.token_embedding.weight.numel()
        return 6 * n + 12 * c.layers * c.heads * c.head_dim * T

    def flops(self, batch: dict[str, torch.Tensor]) -> int:
        """Training FLOPs of a step on token rows (B, T + 1): B * T tokens of T positions."""
        B, T = batch["x"].shape[0], batch["x"].shape[1] - 1
        return self.flops_per_token(T) * T * B


class ExportLogits(nn.Module):
    """The GPT's forward without caches or attention weights: what ``zoo export`` writes."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gpt(tokens)[0]


def _drop_tied_head(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    state_dict.pop(prefix + "head.weight", None)


def _tie_head_on_load(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    if prefix + "token_embedding.weight" in state_dict:
        state_dict[prefix + "head.weight"] = state_dict[prefix + "token_embedding.weight"]


# -- sampling ------------------------------------------------------------------------------------

@dataclass
class GPTSamplerOptions(TokenOptions):
    show_top: int = 3  # --show-attention: earlier tokens listed per head
    cuda_graph: bool = True  # cached, on GPUs: replay the per-token step as one CUDA graph

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.show_top < 1:
            raise ValueError(f"show_top must be >= 1, got {self.show_top}")


class CachedSampler(Sampler):
    """Ancestral sampling with temperature and top-k, one new token per step, reusing each
    layer's keys and values (the KV cache).

    Past the context, the window keeps its last half and the cache is refilled from it; the
    ``naive`` sampler sees exactly the same windows, so both draw the same tokens from a seed."""

    name = "cached"
    Options = GPTSamplerOptions
    inputs = {"prompt": "text to continue (default: a first token drawn as training rows start)"}
    shows = {"attention": "which earlier tokens each new token attended to, per head (last layer)"}
    use_cache = True
    check_every = 16  # tokens between looks at whether every row has ended

    def check(self, model: GPT, inputs: dict[str, Any]) -> None:
        o, c = self.options, model.config
        if o.top_k is not None and o.top_k > c.vocab:
            raise ConfigError(f"top_k {o.top_k} is larger than the vocabulary ({c.vocab} tokens)")
        prompt = inputs.get("prompt")
        if prompt:
            ids = encode_prompt(model, prompt)
            if len(ids) > c.context:
                raise ConfigError(f"the prompt has {len(ids)} tokens but the model's context is "
                                  f"{c.context}; shorten the prompt")

    @torch.no_grad()
    def sample(self, model: GPT, n: int, generator: torch.Generator, prompt: str | None = None,
               show: tuple[str, ...] = ()) -> TextSample:
        o, c = self.options, model.config
        dev = model.device
        if prompt:
            ids = torch.tensor(encode_prompt(model, prompt), device=dev).expand(n, -1)
        else:  # draw each row's first token as training rows start
            counts = model.start_counts.float()
            logits = counts.log() if counts.sum() > 0 else torch.zeros(c.vocab, device=dev)
            ids = categorical(logits.expand(n, -1), generator)[:, None].to(dev)
        want_attn = "attention" in show
        run = self.walk if self.use_cache else self.rerun
        seq, attn_rows = run(model, ids, generator, want_attn)
        rows = seq.tolist()
        tok = model.tokenizer
        texts = [tok.decode(r) if tok else " ".join(map(str, r)) for r in rows]
        out = TextSample(texts, rows, prompt or None)
        if want_attn:
            out.extras["attention"] = attention_text(rows[0], attn_rows, tok, ids.shape[1],
                                                     o.show_top)
            heat = attention_map(rows[0], attn_rows, tok)
            if heat is not None:
                out.extras["attention-map"] = heat
        return out

    def rerun(self, model: GPT, seq: torch.Tensor, generator: torch.Generator,
              want_attn: bool) -> tuple[torch.Tensor, list[AttentionRow]]:
        """nanoGPT's ``generate``: the whole window through the network for every token."""
        o, c = self.options, model.config
        attn_rows, start = [], 0  # the window is seq[:, start:]

        def next_logits(seq: torch.Tensor) -> torch.Tensor:
            nonlocal start
            start = window_start(seq.shape[1], start, c.context)
            logits, w = model(seq[:, start:], None, 0, want_attn)
            if want_attn:
                attn_rows.append((seq.shape[1], start, w[-1][0, :, -1].cpu()))
            return logits[:, -1]
        # after the end-of-text token (the pad), only padding
        seq = generate(seq, next_logits, generator, o.max_new_tokens, o.temperature, o.top_k,
                       end=c.pad_id)
        return seq, attn_rows

    def walk(self, model: GPT, prompt: torch.Tensor, generator: torch.Generator,
             want_attn: bool) -> tuple[torch.Tensor, list[AttentionRow]]:
        """KV-cached decoding in the same windows as ``rerun``. Between refills every step is
        the same static step (a CUDA graph on GPUs); the host only counts positions, which it
        knows without reading the device, and looks at ended rows every `check_every` steps."""
        o, c = self.options, model.config
        # the uniforms of the draws: a chunk of steps at a time, the same numbers as up front
        walk = DecodeWalk(model, prompt, o.max_new_tokens, o, want_attn, generator)
        runner = StepGraph(walk.step, model.device, o.cuda_graph and not want_attn)
        length, start, attn_rows = prompt.shape[1], 0, []

        def advance(made: int, most: int) -> int:
            nonlocal length, start
            moved = window_start(length, start, c.context)
            if made == 0 or moved != start:  # (re)fill the window's caches
                start = moved
                walk.prefill(start, length)
                walk.sample_next()
                steps = 1
            else:  # steps until the window is full again
                steps = 1 if want_attn else min(most, c.context - (length - start) + 1)
                runner.run(steps)
            if want_attn:
                attn_rows.append((length, start, walk.weights[0, :, -1, :length - start].cpu()))
            length += steps
            return steps
        run_token_steps(advance, o.max_new_tokens, self.check_every,
                        walk.done if c.pad_id is not None else None, walk)
        return walk.trimmed(length), attn_rows


class DecodeWalk(TokenSteps):
    """The cached sampler's state: token rows (``TokenSteps``), next-token logits, static KV
    caches and the window position ``pos`` on the device. ``step`` feeds the last token and
    draws the next."""

    def __init__(self, model: GPT, prompt: torch.Tensor, u: torch.Tensor | int,
                 options: GPTSamplerOptions, want_attn: bool,
                 generator: torch.Generator | None = None):
        super().__init__(prompt, u, options.temperature, options.top_k, model.config.pad_id,
                         generator)
        self.model, self.want_attn = model, want_attn
        self.caches = [KVCache(model.config.context) for _ in model.blocks]
        self.logits = torch.zeros(prompt.shape[0], model.config.vocab, device=prompt.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=prompt.device)  # window position fed next
        self.weights: torch.Tensor | None = None

    def prefill(self, start: int, length: int) -> None:
        """Run the window tokens[:, start:length] into fresh caches (host-side positions)."""
        for cache in self.caches:
            cache.reset()
        logits, w = self.model(self.tokens[:, start:length], self.caches, 0, self.want_attn)
        self.logits.copy_(logits[:, -1])
        self.weights = w[-1]
        self.pos.fill_(length - start)
        for cache in self.caches:
            cache.pos = self.pos

    def sample_next(self) -> None:
        """Draw the next token from ``logits`` and write it after the last one."""
        self.draw(self.logits)

    def step(self) -> None:
        logits, w = self.model.decode_step(self.last(), self.caches, self.pos, self.want_attn)
        self.logits.copy_(logits)
        self.weights = w[-1]
        self.pos.add_(1)
        self.sample_next()

    def trimmed(self, length: int) -> torch.Tensor:
        """The rows up to `length`, or up to where the last row ended (as ``rerun`` stops)."""
        seq, pad = self.tokens[:, :length], self.end
        if pad is not None and bool(self.done.all()):
            ended = (seq[:, self.prompt_len:] == pad).int().argmax(1)  # each row's first pad
            seq = seq[:, :self.prompt_len + int(ended.max()) + 1]
        return seq


class NaiveSampler(CachedSampler):
    """The reference: a full forward pass over the window for every new token (nanoGPT's
    ``generate``). Same windows and draws as ``cached``, so the same tokens for a seed."""

    name = "naive"
    use_cache = False


def encode_prompt(model: GPT, prompt: str) -> list[int]:
    if model.tokenizer is None:
        raise ConfigError("this model has no tokenizer (it was never trained on text), so it "
                          "cannot read a prompt")
    ids = model.tokenizer.encode_prompt(prompt)
    if not ids:
        raise ConfigError(f"prompt {prompt!r} holds no tokens")
    return ids
