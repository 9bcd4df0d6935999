"""The sampling loops every autoregressive family shares: one for pixels, one for tokens.

An autoregressive model factorises p(x) = prod_t p(x_t | x_<t), so it samples by drawing x_t one
at a time, each from the network's prediction given the ones already drawn (pytorch-generative's
``AutoregressiveModel.sample``). Each loop comes in two forms:

- the reference, a full forward pass per new pixel or token: ``raster_sample`` fills an image
  in raster order, ``generate`` appends tokens to rows (temperature, top-k, end tokens);
- the fast form, where a family's *static* step (see ``genzoo.family.StepGraph``) computes each
  activation once from its own caches and is replayed as a CUDA graph on GPUs:
  ``raster_steps`` drives a pixel (and row) step over an image, ``TokenSteps`` is the per-row
  bookkeeping of a token step and ``run_token_steps`` its host loop.

Both forms draw the same numbers from the generator in the same order (the fast ones draw them
ahead, ``genzoo.family.uniforms``: a token step's a chunk of ``UNIFORM_CHUNK`` steps at a time,
never all ``max_new_tokens`` up front), so a family's fast sampler draws the very samples of its
reference for a seed; the families' tests check it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from genzoo.family import (StepGraph, apply_temperature_top_k, categorical,
                           categorical_from_uniform, uniforms)

__all__ = ["raster_sample", "raster_steps", "generate", "window_start", "UNIFORM_CHUNK",
           "TokenSteps", "run_token_steps"]

UNIFORM_CHUNK = 256  # token steps whose uniforms a static token loop draws at a time


# -- pixels ---------------------------------------------------------------------------------------

def raster_sample(canvas: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor],
                  draw: Callable[[torch.Tensor], torch.Tensor],
                  row_stride: int | None = None) -> torch.Tensor:
    """Fill `canvas` (n, C, H, W) in place, pixel by pixel in raster order, and return it.

    For each pixel, ``predict(canvas)`` gives the distribution's parameters at every pixel
    (n, P, H, W) from the canvas so far; ``draw`` turns the parameters at this pixel (n, P) into
    its values (n, C). The network must be causal (a pixel's parameters see only earlier
    pixels), so what is still blank never matters. H*W forward passes: the reference a family's
    cached sampler is checked against.

    `row_stride`: for a network that also never reads the rows *below* an output (shifted
    convolutions pad only at the top), and whose strides divide the height by this much, pixel
    (i, j) is predicted from the canvas's first rows only, rounded up to a multiple of the
    stride: the same parameters for about half the work."""
    _, _, h, w = canvas.shape
    for i in range(h):
        rows = h if row_stride is None else min(h, -(-(i + 1) // row_stride) * row_stride)
        for j in range(w):
            canvas[:, :, i, j] = draw(predict(canvas[:, :, :rows])[:, :, i, j])
    return canvas


def raster_steps(pixel_step: Callable[[], None], h: int, w: int, device: torch.device | str,
                 cuda_graph: bool = True, row_step: Callable[[], None] | None = None) -> None:
    """Walk an h x w image with a family's static steps: ``row_step`` (when given) once at the
    start of each row, for what a whole row can compute before its first pixel, then
    ``pixel_step`` once per pixel. Each step keeps its own position counter on the device; on
    CUDA (with `cuda_graph`) each is captured once and replayed."""
    pixels = StepGraph(pixel_step, device, cuda_graph)
    rows = StepGraph(row_step, device, cuda_graph) if row_step is not None else None
    for _ in range(h):
        if rows is not None:
            rows.run()
        pixels.run(w)


# -- tokens ---------------------------------------------------------------------------------------

def generate(seq: torch.Tensor,
             next_logits: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
             generator: torch.Generator, max_new_tokens: int,
             temperature: float | Sequence[float] = 1.0, top_k: int | None = None,
             end: int | None = None,
             observe: Callable[[torch.Tensor | list[torch.Tensor]], None] | None = None
             ) -> torch.Tensor:
    """Append up to `max_new_tokens` tokens to the rows `seq` (n, T) and return the longer rows.

    ``next_logits(seq)`` gives the logits of every row's next token (n, V). Rows of several
    aligned streams, (n, T, S) (the music transformer's notes and durations), take one logits
    tensor per stream, drawn in stream order, each with its own temperature when `temperature`
    is a sequence. Logits are divided by the temperature and cut to the `top_k` likeliest before
    the draw; ``observe`` sees them so (a --show-probs view). With an `end` token (one stream
    only), a row that draws it has ended: it gets `end` from then on, and the loop stops once
    every row has ended."""
    streams = seq.shape[2] if seq.dim() == 3 else 0  # 0: plain rows (n, T)
    if end is not None and streams:
        raise ValueError("an end token needs rows of one stream, (n, T)")
    temps = list(temperature) if isinstance(temperature, Sequence) else \
        [temperature] * max(streams, 1)
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    for _ in range(max_new_tokens):
        logits = next_logits(seq)
        logits = list(logits) if streams else [logits]
        logits = [apply_temperature_top_k(lg.float(), t, top_k) for lg, t in zip(logits, temps)]
        drawn = [categorical(lg, generator) for lg in logits]
        if observe is not None:
            observe(logits if streams else logits[0])
        nxt = torch.stack(drawn, -1) if streams else drawn[0]
        if end is not None:  # after the end token, only end tokens
            nxt = nxt.masked_fill(done, end)
            done |= nxt == end
        seq = torch.cat([seq, nxt[:, None]], 1)
        if end is not None and bool(done.all()):
            break
    return seq


def window_start(length: int, start: int, context: int) -> int:
    """Where the window over rows of `length` tokens starts, given where it started: once it
    outgrows the context it keeps its last half (``max(1, context // 2)`` tokens), so a KV cache
    refilled from it serves the next context // 2 tokens before it is refilled again. A
    reference and a cached sampler that both move their window with it see the same windows,
    hence draw the same tokens."""
    if length - start > context:
        return length - max(1, context // 2)
    return start


class TokenSteps:
    """The per-row bookkeeping of a static token step (one a CUDA graph can capture).

    It holds the rows (n, P + T), the prompt followed by room for T new tokens; the uniforms of
    their draws; which rows have ended; and ``made``, the tokens drawn so far, as a (1,) tensor
    on the device, so a step never reads anything back to the host. A family's walk subclasses
    it, keeps its network's state beside it (KV caches, an RNN state) and calls ``draw`` with the
    next-token logits in its step.

    `u` is either all T x n uniforms, or T with a `generator`: then a buffer of `chunk` x n
    (default ``UNIFORM_CHUNK``) holds the uniforms of `chunk` steps at a time, refilled in place
    by ``room`` (which ``run_token_steps`` calls between steps) from the generator. A CPU
    generator gives the same numbers drawn in consecutive pieces as drawn at once, so both give
    the same tokens; the buffer keeps a long run's memory to its tokens."""

    def __init__(self, prompt: torch.Tensor, u: torch.Tensor | int, temperature: float = 1.0,
                 top_k: int | None = None, end: int | None = None,
                 generator: torch.Generator | None = None, chunk: int | None = None):
        n, P = prompt.shape
        chunk = chunk or UNIFORM_CHUNK
        if isinstance(u, torch.Tensor):  # every step's, drawn by the caller
            self.total, self.generator = int(u.shape[0]), None
        else:
            if generator is None:
                raise ValueError("TokenSteps needs a generator to draw the uniforms of its "
                                 f"{u} steps")
            self.total, self.generator = int(u), generator
            u = torch.zeros(max(1, min(chunk, self.total)), n, device=prompt.device)
        self.u, self.temperature, self.top_k, self.end = u, temperature, top_k, end
        self.drawn = self.total if self.generator is None else 0  # steps with uniforms, host-side
        self.prompt_len = P
        self.tokens = torch.cat([prompt, prompt.new_zeros(n, self.total)], 1)
        self.done = torch.zeros(n, dtype=torch.bool, device=prompt.device)
        self.made = torch.zeros(1, dtype=torch.long, device=prompt.device)

    def room(self, made: int) -> int:
        """How many steps may run from `made` (tokens made so far) before the uniforms run out;
        at the end of a chunk it first draws the next chunk's into the buffer (in place: a
        captured step reads them where it read the last)."""
        if made >= self.drawn and self.drawn < self.total:
            if made != self.drawn:
                raise RuntimeError(f"token step {made} ran past its uniforms ({self.drawn})")
            k = min(self.u.shape[0], self.total - self.drawn)
            self.u[:k].copy_(uniforms(self.generator, (k, self.u.shape[1]), self.u.device))
            self.drawn += k
        return self.drawn - made

    def draw(self, logits: torch.Tensor,
             observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Draw every row's next token from `logits` (n, V) after temperature and top-k, with
        the uniforms of this step; ended rows get the end token. Write it after the last one,
        count it, and return it (n,). ``observe(logits, made)`` sees the tempered logits and the
        index of this token (a --show-probs view)."""
        logits = apply_temperature_top_k(logits.float(), self.temperature, self.top_k)
        # the buffer holds `len(u)` steps' uniforms: step `made`'s are at made % len(u)
        nxt = categorical_from_uniform(logits, self.u.index_select(0, self.made % self.u.shape[0]))
        if observe is not None:
            observe(logits, self.made)
        if self.end is not None:  # after the end token, only end tokens
            nxt = nxt.masked_fill(self.done, self.end)
            self.done |= nxt == self.end
        self.tokens.index_copy_(1, self.made + self.prompt_len, nxt[:, None])
        self.made.add_(1)
        return nxt

    def last(self) -> torch.Tensor:
        """The last token of every row so far (n,)."""
        return self.tokens.index_select(1, self.made + self.prompt_len - 1)[:, 0]


def run_token_steps(advance: Callable[[int, int], int], total: int, check_every: int,
                    done: torch.Tensor | None = None, steps: TokenSteps | None = None) -> int:
    """The host loop of a static token sampler; returns how many tokens it made.

    ``advance(made, most)`` makes between 1 and `most` tokens (running the step, refilling a
    cache...) and says how many. The loop ends after `total` tokens, or when every row of
    `done` has ended; it looks at `done` only every `check_every` tokens, because a look reads
    the device and so waits for all the work queued on it. With `steps` (a ``TokenSteps`` that
    draws its uniforms a chunk at a time), `most` never crosses the end of a chunk, and the next
    chunk is drawn before its first step."""
    made = checked = 0
    while made < total:
        most = min(check_every, total - made)
        if steps is not None:
            most = min(most, steps.room(made))
        made += advance(made, most)
        if done is not None and made - checked >= check_every:
            checked = made
            if bool(done.all()):
                break
    return made
