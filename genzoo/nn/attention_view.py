"""What a causal transformer attended to while it sampled: the book's text view and a heat map.

A sampler collects, for each new token, one *attention row*: ``(position, start, weights)``, the
absolute position of the new token in its row, where the window it was predicted from starts,
and the last layer's attention weights of every head over that window, (heads, window length).
These functions turn the rows of sample 0 into the views ``--show-attention`` prints and draws.
"""
from __future__ import annotations

import io
from typing import Any

import torch

from genzoo.family import ImageSample, pyplot

__all__ = ["AttentionRow", "attention_text", "attention_map"]

AttentionRow = tuple[int, int, torch.Tensor]
"""(absolute position of a new token, start of its window, weights (heads, window length))."""


def _tok(tok: Any, i: int) -> str:
    s = tok.token(i) if tok else str(i)
    return {"": "<end>", "\n": "\\n", " ": "␣"}.get(s, s)


def attention_text(row: list[int], attn_rows: list[AttentionRow], tok: Any, prompt_len: int,
                   top: int) -> str:
    """The book's view: for each new token of `row`, the `top` earlier tokens each head
    attended to most, with their weights. `tok` names the ids (``token(i)``); None prints ids."""
    heads = attn_rows[0][2].shape[0] if attn_rows else 0
    lines = [f"attention of sample 0 (last layer, {heads} heads): for each new token, the "
             f"{top} earlier tokens each head attended to most, with their weights",
             "prompt: " + " ".join(_tok(tok, i) for i in row[:prompt_len])]
    for pos, start, w in attn_rows:
        if pos >= len(row):
            break
        parts = []
        for h in range(w.shape[0]):
            k = min(top, w.shape[1])
            vals, idx = w[h].topk(k)
            parts.append(f"h{h + 1}: " + ", ".join(
                f"{_tok(tok, row[start + int(j)])} {float(v):.2f}" for v, j in zip(vals, idx)))
        lines.append(f"{_tok(tok, row[pos])!r:>16} <- " + " | ".join(parts))
    return "\n".join(lines)


def attention_map(row: list[int], attn_rows: list[AttentionRow], tok: Any,
                  limit: int = 48) -> ImageSample | None:
    """A heat map per head: the first `limit` new tokens (rows) over every token so far
    (columns), as one image; None when there is no new token to show."""
    import numpy as np
    from PIL import Image

    attn_rows = [r for r in attn_rows if r[0] < len(row)][:limit]
    if not attn_rows:
        return None
    heads = attn_rows[0][2].shape[0]
    width = attn_rows[-1][0]  # columns: every token before the last new one shown
    mats = np.zeros((heads, len(attn_rows), width))
    for r, (pos, start, w) in enumerate(attn_rows):
        mats[:, r, start:start + w.shape[1]] = w.numpy()
    labels = [_tok(tok, i) for i in row[:width]]
    plt = pyplot()
    fig, axes = plt.subplots(1, heads, figsize=(max(6, 0.22 * width) * heads, 0.22 * len(attn_rows) + 2),
                             squeeze=False)
    for h, ax in enumerate(axes[0]):
        ax.imshow(mats[h], cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_title(f"head {h + 1}")
        ax.set_xticks(range(width), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(attn_rows)), [_tok(tok, row[p]) for p, _, _ in attn_rows], fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    buf.seek(0)
    img = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255
    return ImageSample(img[None], nrow=1)
