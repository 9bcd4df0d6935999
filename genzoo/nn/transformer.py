"""The transformer pieces GPT and the music transformer share (Vaswani et al. 2017; nanoGPT).

``CausalSelfAttention``, ``Block`` and ``KVCache`` take plain arguments, not a family's config.
Sampling keeps each layer's keys and values (a KV cache), so a new token costs one position's
work instead of a forward pass over the whole window; the cache also has a static mode, one
position per call at a device-held index, that CUDA graphs can capture.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KVCache", "CausalSelfAttention", "Block", "causal_mask"]


class KVCache:
    """Keys and values of the positions one attention layer has seen, (B, heads, T, head_dim),
    in buffers allocated once for `max_len` positions; ``append`` writes the new positions in
    place and returns every position so far."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0
        # static mode (CUDA-graph steps): one new position per call at this (1,) device tensor;
        # attention then spans the whole buffer, positions after `pos` masked out
        self.pos: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.length

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, T, D = k.shape
        if self.k is None:  # zeros, not empty: masked positions still enter p * v (0 * nan)
            self.k = k.new_zeros(B, H, self.max_len, D)
            self.v = v.new_zeros(B, H, self.max_len, D)
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} asked for")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def put(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Static mode: write one position at ``pos`` without reading it on the host; return
        the whole buffers and which of their positions are visible (<= pos)."""
        self.k.index_copy_(2, self.pos, k)
        self.v.index_copy_(2, self.pos, v)
        if self.positions is None:
            self.positions = torch.arange(self.max_len, device=k.device)
        return self.k, self.v, (self.positions <= self.pos)[None]  # (1, max_len)

    def reset(self) -> None:
        self.length = 0
        self.pos = None


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t sees positions <= t, through
    ``F.scaled_dot_product_attention`` (fused kernels on CPU and GPU). One matmul makes the
    queries, keys and values of every head (nanoGPT's ``c_attn``)."""

    def __init__(self, embed_dim: int, heads: int, head_dim: int, dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(embed_dim, 3 * heads * head_dim, bias=bias)
        self.proj = nn.Linear(heads * head_dim, embed_dim, bias=bias)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (B, T, C), and the attention weights (B, heads, T, T_all) when asked.
        With a cache, x holds only the new positions; they attend to the cached ones too."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        causal = False
        if cache is not None and cache.pos is not None:  # a static decode step (one position)
            k, v, mask = cache.put(k, v)
        else:
            past = len(cache) if cache is not None else 0
            if cache is not None:
                k, v = cache.append(k, v)
            causal = past == 0  # the fused kernels' own causal mask
            # later, a single new position may see every earlier one: no mask at all
            mask = causal_mask(T, past, x.device) if past > 0 and T > 1 else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        weights = None
        if need_weights:  # sdpa never materialises them; recompute for the attention view
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if causal and T > 1:
                mask = causal_mask(T, 0, x.device)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.float().softmax(-1)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)
        return self.proj_dropout(self.proj(y)), weights


def causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """(T, past + T) bool: new position i (absolute past + i) sees absolute positions <= it."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)


class Block(nn.Module):
    """Attention then feed-forward, each with a residual connection and layer norm: post-norm
    (the book's ``TransformerBlock``) or pre-norm (GPT-2)."""

    def __init__(self, embed_dim: int, heads: int, head_dim: int, ff_dim: int,
                 dropout: float = 0.0, norm: str = "pre", activation: str = "gelu",
                 bias: bool = True, eps: float = 1e-5):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        self.pre_norm = norm == "pre"
        self.attn = CausalSelfAttention(embed_dim, heads, head_dim, dropout, bias)
        self.ln_1 = nn.LayerNorm(embed_dim, eps=eps, bias=bias)
        self.ln_2 = nn.LayerNorm(embed_dim, eps=eps, bias=bias)
        self.ff = nn.Sequential(nn.Linear(embed_dim, ff_dim, bias=bias),
                                nn.GELU() if activation == "gelu" else nn.ReLU(),
                                nn.Linear(ff_dim, embed_dim, bias=bias), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            a, w = self.attn(self.ln_1(x), cache, need_weights)
            x = x + a
            return x + self.ff(self.ln_2(x)), w
        a, w = self.attn(x, cache, need_weights)
        x = self.ln_1(x + a)
        return self.ln_2(x + self.ff(x)), w
