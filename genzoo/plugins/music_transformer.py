"""The music transformer of Foster ch. 11: a decoder-only transformer over two token streams.

A piece is two aligned streams, notes (``G4``, ``rest``, ``G:major``...) and durations in quarter
notes (``1.0``, ``0.5``...). Each stream has its own embedding (half the width each) plus a sine
position encoding; the two are concatenated, go through a transformer block (causal multi-head
attention and a feed-forward layer, ``genzoo.nn.transformer.Block`` as in GPT), and two softmax
heads predict the next note and the next duration. The loss is the sum of the two
cross-entropies, so the likelihood of an event (note and duration) is the product of the two
heads' probabilities: given the past the note and the duration are predicted independently, as
in the book.

Sampling draws both streams with their own temperature, optional top-k, and a KV cache per
layer (``genzoo.nn.transformer.KVCache``): past the context, the window keeps its last half and
the cache is refilled, exactly as the ``naive`` reference does, so both give the same piece for
a seed (the loop is ``genzoo.nn.autoregressive.generate``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import Model, Sampler, TokenOptions
from genzoo.nn.autoregressive import generate, window_start
from genzoo.nn.music import REST, START, ZERO, MusicSample, notes_from_tokens, parse_prompt
from genzoo.nn.transformer import Block, KVCache


@dataclass
class MusicTransformerConfig:
    note_vocab: int = 82  # from the data (82 in the music21 chorales: pitches, rest, keys, meters)
    duration_vocab: int = 20  # from the data (20 in the chorales)
    context: int = 50  # book: SEQ_LEN 50
    layers: int = 1  # book: one TransformerBlock
    heads: int = 5  # book: N_HEADS 5
    embed_dim: int = 256  # book: EMBEDDING_DIM 256 (128 per stream, concatenated)
    key_dim: int = 256  # book: KEY_DIM 256 per head
    ff_dim: int = 256  # book: FEED_FORWARD_DIM 256
    dropout: float = 0.3  # book: DROPOUT_RATE 0.3
    norm: Literal["post", "pre"] = "post"  # book: post-norm block

    def __post_init__(self) -> None:
        for key in ("note_vocab", "duration_vocab", "context", "layers", "heads", "embed_dim",
                    "key_dim", "ff_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim must be a multiple of 4 (two streams of sines and "
                             f"cosines), got {self.embed_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def sine_positions(length: int, dim: int, start: int = 0) -> torch.Tensor:
    """Vaswani et al.'s encoding (keras_nlp's SinePositionEncoding, the book's): sines on even
    channels, cosines on odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    pos = torch.arange(start, start + length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


class MusicTransformer(Model):
    Config = MusicTransformerConfig
    modality = "events"
    likelihood_unit = "token"  # one token = one event: a note and its duration

    def __init__(self, config: MusicTransformerConfig):
        super().__init__(config)
        c = config
        half = c.embed_dim // 2
        self.note_embedding = nn.Embedding(c.note_vocab, half)
        self.duration_embedding = nn.Embedding(c.duration_vocab, half)
        self.register_buffer("positions", sine_positions(c.context, half), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        eps = 1e-6 if c.norm == "post" else 1e-5  # Keras' LayerNormalization in the book's block
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.heads, c.key_dim, c.ff_dim, c.dropout,
                                          c.norm, "relu", True, eps) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.embed_dim) if c.norm == "pre" else nn.Identity()
        self.note_head = nn.Linear(c.embed_dim, c.note_vocab)
        self.duration_head = nn.Linear(c.embed_dim, c.duration_vocab)
        self.note_vocab: list[str] = []  # the run's vocabularies: setup(data) or load_artifacts
        self.duration_vocab: list[str] = []

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        if not hasattr(data, "note_vocab"):
            return {}
        return {"note_vocab": len(data.note_vocab), "duration_vocab": len(data.duration_vocab),
                "context": int(data.seq_len)}

    # -- the run's vocabularies ----------------------------------------------------------------
    def setup(self, data: Any) -> None:
        c = self.config
        if len(data.note_vocab) > c.note_vocab or len(data.duration_vocab) > c.duration_vocab:
            raise ConfigError(f"the data has {len(data.note_vocab)} notes and "
                              f"{len(data.duration_vocab)} durations but the model's vocabularies "
                              f"are {c.note_vocab} and {c.duration_vocab}: --set "
                              f"note_vocab={len(data.note_vocab)} duration_vocab={len(data.duration_vocab)}")
        if data.seq_len > c.context:
            raise ConfigError(f"data.seq_len {data.seq_len} is longer than the model's context "
                              f"{c.context}: --set context={data.seq_len}")
        self.note_vocab, self.duration_vocab = list(data.note_vocab), list(data.duration_vocab)

    def artifacts(self) -> dict[str, Any]:
        return {"vocabularies": {"notes": self.note_vocab, "durations": self.duration_vocab}}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        v = artifacts.get("vocabularies")
        if v:
            self.note_vocab, self.duration_vocab = list(v["notes"]), list(v["durations"])

    # -- network -------------------------------------------------------------------------------
    def forward(self, notes: torch.Tensor, durations: torch.Tensor,
                caches: list[KVCache] | None = None, start: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids (B, T) at positions start..start+T-1 -> note logits (B, T, V_n) and duration
        logits (B, T, V_d)."""
        T = notes.shape[1]
        if start + T > self.config.context:
            raise ValueError(f"{start + T} positions; the context is {self.config.context}")
        pos = self.positions[start:start + T]
        x = torch.cat([self.note_embedding(notes) + pos, self.duration_embedding(durations) + pos],
                      dim=-1)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, caches[i] if caches is not None else None)
        x = self.ln_f(x)
        return self.note_head(x), self.duration_head(x)

    def _nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position NLL of the next note and the next duration, (B, T) each."""
        x = batch["x"]
        inp, tgt = x[:, :-1], x[:, 1:]
        note_logits, dur_logits = self(inp[..., 0], inp[..., 1])
        note = F.cross_entropy(note_logits.float().transpose(1, 2), tgt[..., 0], reduction="none")
        dur = F.cross_entropy(dur_logits.float().transpose(1, 2), tgt[..., 1], reduction="none")
        return note, dur

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        note, dur = self._nll(batch)
        note, dur = note.mean(), dur.mean()
        # the book sums the two heads' cross-entropies; that is the NLL of an event in nats
        return {"loss": note + dur, "note_nll": note, "duration_nll": dur}

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        note, dur = self._nll(batch)
        return -(note + dur).sum(1)

    def likelihood_units(self, batch: dict[str, torch.Tensor]) -> int:
        x = batch["x"]
        return int(x.shape[0] * (x.shape[1] - 1))

    # -- tokens --------------------------------------------------------------------------------
    def encode(self, events: list[tuple[str, str]]) -> list[tuple[int, int]]:
        """(note, duration) tokens -> ids; anything outside the vocabularies is one clear line."""
        if not self.note_vocab:
            raise ConfigError("this model has no vocabularies (it was never trained on music), "
                              "so it cannot read a prompt")
        n_idx = {t: i for i, t in enumerate(self.note_vocab)}
        d_idx = {t: i for i, t in enumerate(self.duration_vocab)}
        out = []
        for note, dur in events:
            if note not in n_idx:
                known = sorted(t for t in self.note_vocab if t[0].isupper() and t[-1].isdigit()
                               and ":" not in t)
                raise ConfigError(f"prompt note {note!r} is not in this model's vocabulary "
                                  f"({len(known)} pitches from {known[0] if known else '?'} to "
                                  f"{known[-1] if known else '?'} as the data spells them, "
                                  f"e.g. {', '.join(known[:6])}; and 'rest')")
            if dur not in d_idx:
                durs = ", ".join(sorted((t for t in self.duration_vocab if t != ZERO),
                                        key=lambda s: float(eval_fraction(s))))
                raise ConfigError(f"prompt duration {dur!r} (of {note}) is not in this model's "
                                  f"vocabulary; known durations: {durs}")
            out.append((n_idx[note], d_idx[dur]))
        return out


def eval_fraction(s: str) -> float:
    from fractions import Fraction
    try:
        return float(Fraction(s))
    except (ValueError, ZeroDivisionError):
        return 0.0


# -- sampling ------------------------------------------------------------------------------------

@dataclass
class MusicOptions(TokenOptions):
    max_new_tokens: int = 100  # events (note + duration) after the prompt
    temperature: float = 0.5  # notes; book: 0.5
    duration_temperature: float | None = None  # None: the notes' temperature
    bpm: float = 90.0  # tempo of the MIDI and WAV files

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.duration_temperature is not None and not self.duration_temperature > 0:
            raise ValueError(f"duration_temperature must be > 0, got {self.duration_temperature}")
        if not self.bpm > 0:
            raise ValueError(f"bpm must be > 0, got {self.bpm}")


class CachedSampler(Sampler):
    """Draws note and duration of each next event from their softmax heads (own temperatures,
    top-k), one event per step, reusing every layer's keys and values."""

    name = "cached"
    Options = MusicOptions
    inputs = {"prompt": "notes to continue, NOTE:DURATION in quarter notes, e.g. "
                        "\"G4:1 A4:0.5 B4:0.5\" (default: start from START)"}
    preview = {"max_new_tokens": 48}
    use_cache = True

    def check(self, model: MusicTransformer, inputs: dict[str, Any]) -> None:
        prompt = inputs.get("prompt")
        if prompt:
            ids = model.encode(parse_prompt(prompt))
            if len(ids) + 1 > model.config.context:
                raise ConfigError(f"the prompt has {len(ids)} notes but the model's context is "
                                  f"{model.config.context}; shorten the prompt")

    @torch.no_grad()
    def sample(self, model: MusicTransformer, n: int, generator: torch.Generator,
               prompt: str | None = None, **_: Any) -> MusicSample:
        o, c = self.options, model.config
        dev = model.device
        first = [(model.note_vocab.index(START), model.duration_vocab.index(ZERO))] \
            if START in model.note_vocab else [(0, 0)]
        ids = first + (model.encode(parse_prompt(prompt)) if prompt else [])
        seq = torch.tensor(ids, device=dev)[None].expand(n, -1, -1).clone()  # (n, T, 2)
        start, caches = 0, None

        def next_logits(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal start, caches
            moved = window_start(seq.shape[1], start, c.context)
            if moved != start:  # full: keep the last half, refill the cache
                start, caches = moved, None
            if not self.use_cache:
                nl, dl = model(seq[:, start:, 0], seq[:, start:, 1])
            elif caches is None:
                caches = [KVCache(c.context) for _ in model.blocks]
                nl, dl = model(seq[:, start:, 0], seq[:, start:, 1], caches, 0)
            else:  # only the newest event, at its position in the window
                nl, dl = model(seq[:, -1:, 0], seq[:, -1:, 1], caches, seq.shape[1] - 1 - start)
            return nl[:, -1], dl[:, -1]
        # two streams, each drawn with its own temperature: the note, then its duration
        seq = generate(seq, next_logits, generator, o.max_new_tokens,
                       (o.temperature, o.duration_temperature or o.temperature), o.top_k)
        pieces, texts = [], []
        for row in seq.tolist():
            notes = [model.note_vocab[a] for a, _ in row]
            durs = [model.duration_vocab[b] for _, b in row]
            pieces.append(notes_from_tokens(notes, durs))
            texts.append(" ".join(f"{a}:{b}" if b != ZERO or a == REST else a
                                  for a, b in zip(notes, durs)))
        out = MusicSample(pieces, tracks=["melody"], bpm=o.bpm, tokens=texts)
        out.extras["summary"] = out.summary()
        return out


class NaiveSampler(CachedSampler):
    """The reference: a full forward pass over the window for every new event."""

    name = "naive"
    use_cache = False
