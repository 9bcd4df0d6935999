"""LSTM language model (Hochreiter & Schmidhuber 1997; Foster ch. 5): text, one token at a time.

The book's model is three layers: Embedding(vocab, 100) -> LSTM(128) -> Dense(vocab, softmax),
trained to predict token t+1 from tokens 0..t of recipes ("recipe for TITLE | step | step ...")
cut or padded to 200 tokens. Options here: stacked layers, GRU cells, a character tokenizer
(through the data: ``lstm-shakespeare``).

Padding (id 0, word level) is not text: the loss ignores it, except the first pad after a
document, which is the document's end. That is what the book's model learns too (its generator
stops when it draws id 0), so samples end where a recipe ends.

Two samplers draw the same tokens for the same seed: ``stateful`` feeds each new token to the
LSTM once and carries (h, c) forward; ``naive`` re-runs the whole prefix for every token, as the
book's TextGenerator does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import (Model, Sampler, StepGraph, TextSample, Tokenizer, TokenOptions,
                           categorical)
from genzoo.nn.autoregressive import TokenSteps, generate, run_token_steps


@dataclass
class LSTMConfig:
    vocab_size: int = 10_000  # set from the data's tokenizer (config_from_data)
    embedding_dim: int = 100
    hidden_size: int = 128
    layers: int = 1  # stacked recurrent layers
    cell: Literal["lstm", "gru"] = "lstm"
    dropout: float = 0.0  # between stacked layers
    pad_id: int | None = 0  # word level: 0; character level has no padding (None)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "embedding_dim", "hidden_size", "layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, vocab_size), got {self.pad_id}")


class LSTMLanguageModel(Model):
    Config = LSTMConfig
    modality = "text"
    likelihood_unit = "token"

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        rnn = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn(c.embedding_dim, c.hidden_size, num_layers=c.layers, batch_first=True,
                       dropout=c.dropout if c.layers > 1 else 0.0)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)
        # How often each token opens a training row: the first token of an unprompted sample is
        # drawn from it (the network only ever predicts tokens after the first).
        self.register_buffer("start_counts", torch.zeros(c.vocab_size))
        self.tokenizer: Tokenizer | None = None

    # -- data --------------------------------------------------------------------------------
    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        tok = getattr(data, "tokenizer", None)
        if tok is not None:
            return {"vocab_size": len(tok), "pad_id": tok.pad_id}
        vocab = getattr(data, "vocab_size", None)  # a registry-only stand-in (create_model)
        return {"vocab_size": int(vocab)} if vocab else {}

    def setup(self, data: Any) -> None:
        tok = data.tokenizer
        if len(tok) != self.config.vocab_size:
            raise ConfigError(f"the data's tokenizer has {len(tok)} tokens but the model's "
                              f"vocab_size is {self.config.vocab_size}; leave vocab_size unset")
        self.tokenizer = tok
        first = data.rows[:, 0].cpu()
        self.start_counts.copy_(torch.bincount(first, minlength=len(tok)).float())

    def artifacts(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        if "tokenizer" in artifacts:
            tok = Tokenizer.from_json(artifacts["tokenizer"])
            if len(tok) != self.config.vocab_size:
                raise ValueError(f"tokenizer has {len(tok)} tokens, the model "
                                 f"{self.config.vocab_size}")
            self.tokenizer = tok

    # -- network ------------------------------------------------------------------------------
    def hidden_states(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Token ids (B, T) -> the top layer's outputs (B, T, hidden) and the state after T."""
        return self.rnn(self.embedding(ids), state)

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Token ids (B, T) -> next-token logits (B, T, V) and the recurrent state after T."""
        h, state = self.hidden_states(ids, state)
        return self.head(h), state

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """``zoo export``: one step, token ids (B,) and the state -> logits (B, V), new state."""
        c = self.config
        ids = torch.randint(0, c.vocab_size, (2,), generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        states = [0.1 * torch.randn(c.layers, 2, c.hidden_size, generator=g)
                  for _ in range(2 if c.cell == "lstm" else 1)]
        names = ["h", "c"] if c.cell == "lstm" else ["h"]
        dev = self.head.weight.device
        return ExportStep(self).eval(), tuple(t.to(dev) for t in (ids, *states)), {
            "inputs": ["token", *names], "outputs": ["logits", *(f"next_{n}" for n in names)],
            "dynamic": {"token": {0: "batch"}, **{n: {1: "batch"} for n in names}},
            "what": f"{c.cell.upper()} step: token ids (B,) and state {', '.join(names)} "
                    f"({c.layers}, B, {c.hidden_size}) (zeros to start) -> next-token logits "
                    f"(B, {c.vocab_size}) and the next state (the run's tokenizer: artifacts.json)"}

    def step(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One token per row (B,) -> next-token logits (B, V) and the new state: the same
        recurrence as ``forward``, one fused cell per layer (``torch.lstm_cell``, what
        ``nn.LSTMCell`` calls). Calling ``nn.LSTM`` for a single time step costs ~3x more on a
        CPU (its sequence kernel's per-call setup)."""
        x = self.embedding(ids)
        c = self.config
        if state is None:
            zeros = x.new_zeros(c.layers, x.shape[0], c.hidden_size)
            state = (zeros, zeros.clone()) if c.cell == "lstm" else zeros
        hs, cs = [], []
        for layer in range(c.layers):
            weights = [getattr(self.rnn, f"{w}_l{layer}") for w in
                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if c.cell == "lstm":
                x, cell = torch.lstm_cell(x, (state[0][layer], state[1][layer]), *weights)
                cs.append(cell)
            else:
                x = torch.gru_cell(x, state[layer], *weights)
            hs.append(x)  # dropout between layers is off in eval mode, as here
        new = (torch.stack(hs), torch.stack(cs)) if c.cell == "lstm" else torch.stack(hs)
        return self.head(x), new

    def _targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs x[:, :-1], targets x[:, 1:], and which targets count: every real token plus
        the first pad after a document (its end); later padding is ignored."""
        x = batch["x"]
        inp, tgt = x[:, :-1], x[:, 1:]
        pad = self.config.pad_id
        if pad is None:
            return inp, tgt, torch.ones_like(tgt, dtype=torch.bool)
        return inp, tgt, (tgt != pad) | (inp != pad)

    def _token_nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of each counted target (N,) and the row it belongs to (N,). The vocabulary
        projection, most of a step's cost, runs only where a target counts (a third of a
        recipe batch is padding)."""
        inp, tgt, mask = self._targets(batch)
        h, _ = self.hidden_states(inp)
        logits = self.head(h[mask])
        nll = F.cross_entropy(logits.float(), tgt[mask], reduction="none")
        return nll, mask.nonzero()[:, 0]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nll, _ = self._token_nll(batch)
        loss = nll.mean()  # nats per predicted token
        return {"loss": loss}

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over each row of the log-probabilities of its predicted tokens (nats)."""
        nll, row = self._token_nll(batch)
        return -torch.zeros(batch["x"].shape[0], device=nll.device).index_add_(0, row, nll)

    def likelihood_units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(self._targets(batch)[2].sum())


class ExportStep(nn.Module):
    """``LSTMLanguageModel.step`` with the state as separate tensors: what ``zoo export``
    writes (the recurrent layer on one time step, which exporters know as one op)."""

    def __init__(self, model: LSTMLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        logits, new = self.model(token[:, None], h if c is None else (h, c))
        return (logits[:, 0], *(new if isinstance(new, tuple) else (new,)))


# -- sampling ---------------------------------------------------------------------------------

@dataclass
class LSTMSamplerOptions(TokenOptions):
    # the book shows 1.0 (varied, often ungrammatical) and 0.2 (safe, repetitive); 0.7 reads
    # like a recipe after a few CPU minutes of training
    temperature: float = 0.7
    show_top: int = 5  # --show-probs: candidates listed per step
    show_samples: int = 3  # --show-probs: for this many samples
    cuda_graph: bool = True  # stateful, on GPUs: replay the per-token step as one CUDA graph

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.show_top < 1 or self.show_samples < 1:
            raise ValueError("show_top and show_samples must be >= 1")


class _TokenSampler(Sampler):
    Options = LSTMSamplerOptions
    inputs = {"prompt": "text to continue (default: a first token drawn as training rows begin)"}
    shows = {"probs": "the top next-token probabilities at each step"}
    preview = {"max_new_tokens": 80}  # the trainer's periodic samples
    stateful = True
    check_every = 16  # stateful: tokens between looks at whether every row has ended

    def check(self, model: LSTMLanguageModel, inputs: dict[str, Any]) -> None:
        if model.tokenizer is None:
            raise ConfigError("this model has no tokenizer: train it (setup(data)) or load a run")
        V = len(model.tokenizer)
        if self.options.top_k is not None and self.options.top_k > V:
            raise ConfigError(f"top_k={self.options.top_k} is larger than the vocabulary "
                              f"({V} tokens)")
        if inputs.get("prompt"):
            model.tokenizer.encode_prompt(inputs["prompt"])  # all-unknown prompts fail here

    @torch.no_grad()
    def sample(self, model: LSTMLanguageModel, n: int, generator: torch.Generator,
               prompt: str | None = None, show: tuple[str, ...] = ()) -> TextSample:
        tok, pad = model.tokenizer, model.config.pad_id
        out = self.first_tokens(model, n, generator, prompt)
        start = out.shape[1]
        if self.stateful:
            out, tables = self.walk(model, out, generator, "probs" in show)
        else:
            out, tables = self.rerun(model, out, generator, "probs" in show)
        rows = [r[: r.index(pad)] if pad is not None and pad in r else r for r in out.tolist()]
        sample = TextSample([tok.decode(r) for r in rows], rows, prompt)
        if "probs" in show:
            sample.extras["probs"] = probs_table(tok, out[:, start:].cpu(), tables, prompt)
        return sample

    def first_tokens(self, model: LSTMLanguageModel, n: int, generator: torch.Generator,
                     prompt: str | None) -> torch.Tensor:
        """The prompt's ids, or a first token drawn as training rows begin (every recipe:
        "recipe"): (n, start)."""
        dev, pad = model.device, model.config.pad_id
        if prompt:
            return torch.tensor(model.tokenizer.encode_prompt(prompt), device=dev).repeat(n, 1)
        counts = model.start_counts.float()
        if counts.sum() == 0:
            counts = torch.ones_like(counts)
        if pad is not None:
            counts[pad] = 0
        return categorical(counts.log().expand(n, -1), generator)[:, None].to(dev)

    def rerun(self, model: LSTMLanguageModel, out: torch.Tensor, generator: torch.Generator,
              probs: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The book's way: the whole prefix through the network for every new token."""
        o, tables = self.options, []

        def observe(logits: torch.Tensor) -> None:
            top = self.top_probs(logits)
            tables.append((top.values.cpu(), top.indices.cpu()))
        # the pad token ends a document; ended rows stay ended
        out = generate(out, lambda seq: model(seq)[0][:, -1], generator, o.max_new_tokens,
                       o.temperature, o.top_k, end=model.config.pad_id,
                       observe=observe if probs else None)
        return out, tables

    def walk(self, model: LSTMLanguageModel, out: torch.Tensor, generator: torch.Generator,
             probs: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One cell step per new token, carrying the state; the step is static, so on GPUs it
        is one CUDA graph replayed per token. Ended rows are checked every `check_every`
        tokens, not every token: a check reads the device and would stall it."""
        o = self.options
        # the uniforms of the draws: a chunk of steps at a time, the same numbers as up front
        walk = TokenWalk(model, out, o.max_new_tokens, self, probs, generator)
        runner = StepGraph(walk.step, model.device, o.cuda_graph)

        def advance(made: int, most: int) -> int:
            runner.run(most)
            return most
        made = run_token_steps(advance, o.max_new_tokens, self.check_every,
                               walk.done if model.config.pad_id is not None else None, walk)
        out = walk.tokens[:, :out.shape[1] + made]
        tables = list(zip(walk.top_p[:made].cpu(), walk.top_i[:made].cpu())) if probs else []
        return out, tables

    def top_probs(self, last: torch.Tensor) -> Any:
        o = self.options
        p = torch.softmax(last[: o.show_samples], -1)
        return p.topk(min(o.show_top, p.shape[-1]), -1)


class TokenWalk(TokenSteps):
    """The stateful sampler's buffers, written in place by ``step`` at the device-side
    counter ``made``: tokens and ended rows (``TokenSteps``), next-token logits, recurrent
    state, --show-probs."""

    def __init__(self, model: LSTMLanguageModel, prompt: torch.Tensor, u: torch.Tensor | int,
                 sampler: _TokenSampler, probs: bool, generator: torch.Generator | None = None):
        o = sampler.options
        super().__init__(prompt, u, o.temperature, o.top_k, model.config.pad_id, generator)
        self.model, self.sampler, self.probs = model, sampler, probs
        logits, state = model(prompt)
        self.logits = logits[:, -1].contiguous()
        self.state = state if isinstance(state, tuple) else (state,)
        shape = (self.total, min(o.show_samples, prompt.shape[0]),
                 min(o.show_top, model.config.vocab_size))
        self.top_p = torch.zeros(shape, device=prompt.device) if probs else None
        self.top_i = torch.zeros(shape, dtype=torch.long, device=prompt.device) if probs else None

    def record_probs(self, logits: torch.Tensor, made: torch.Tensor) -> None:
        top = self.sampler.top_probs(logits)
        self.top_p.index_copy_(0, made, top.values[None])
        self.top_i.index_copy_(0, made, top.indices[None])

    def step(self) -> None:
        nxt = self.draw(self.logits, self.record_probs if self.probs else None)
        logits, state = self.model.step(nxt, self.state if len(self.state) == 2 else self.state[0])
        self.logits.copy_(logits)
        for buf, new in zip(self.state, state if isinstance(state, tuple) else (state,)):
            buf.copy_(new)


def probs_table(tok: Tokenizer, new: torch.Tensor, tables: list[tuple[torch.Tensor, torch.Tensor]],
                prompt: str | None) -> str:
    """The book's TextGenerator view: at each step, the likeliest next tokens (after temperature
    and top-k) and the one drawn."""
    def show(i: int) -> str:
        return repr(tok.token(i)) if tok.level == "char" else (tok.token(i) or "<end>")

    lines = []
    for s in range(tables[0][0].shape[0] if tables else 0):
        lines.append(f"sample {s}" + (f", prompt {prompt!r}" if prompt else ""))
        for t, (p, i) in enumerate(tables):
            if t > 0 and tok.pad_id is not None and int(new[s, t - 1]) == tok.pad_id:
                break
            cands = "  ".join(f"{show(int(j))} {float(q):.3f}" for q, j in zip(p[s], i[s]))
            lines.append(f"  {t:3d} {show(int(new[s, t])):>14} | {cands}")
    return "\n".join(lines)


class StatefulSampler(_TokenSampler):
    """Carries the LSTM state token by token: one step of the network per new token."""

    name = "stateful"
    stateful = True


class NaiveSampler(_TokenSampler):
    """Re-runs the whole prefix for every new token (the book's TextGenerator): quadratic in
    the length, the reference the stateful sampler is checked against."""

    name = "naive"
    stateful = False
