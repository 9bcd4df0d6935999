"""The Sampler interface: how to draw from a trained network, kept apart from the network (as
diffusers keeps schedulers apart from the U-Net) so one network can be sampled several ways.

A sampler declares
- ``Options``: a dataclass of settings (``--set temperature=0.8``), type-checked and listed;
  ``__post_init__`` rejects bad values (a ValueError becomes one clear line);
- ``inputs``: what a caller may pass per call (``prompt``, ``label``, ``noise``...), by name with a
  one-line help, so ``zoo sample --prompt/--label`` are checked against the sampler, not a family;
- ``shows``: optional views it can add as extras (``chain``, ``probs``, ``attention``...);
- ``needs_grad``: True for samplers that differentiate through the input (Langevin dynamics).
  ``draw`` then runs with gradients on but the network's own parameters frozen.

``draw`` is the one path every caller uses: the CLI, ``LoadedRun.sample``, the trainer's grids.
It calls ``sample`` on batches of at most ``batch_size`` samples (``draw_chunks``), so the memory
a sampler takes does not grow with `n`: ``zoo sample --n 200000`` draws 782 batches of 256.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genzoo.core import config as configlib
from genzoo.errors import ConfigError

DEFAULT_BATCH = 256  # samples per ``sample`` call unless the caller or the sampler says less
MODALITY_BATCH = {"points": 16_384}  # a 2-D point is a few bytes: larger batches, same memory
MAX_BATCH = 16_384  # the largest --batch-size taken
MAX_SAMPLES = 10_000_000  # the most samples one call draws (--n)
TOKEN_BUDGET = 4_000_000  # tokens a token sampler holds at once: rows x max_new_tokens
MAX_NEW_TOKENS = 100_000  # a token loop's longest run (the row buffers are sized by it)


@dataclass
class SamplerOptions:
    """Samplers subclass this with their own fields."""


class Sampler:
    name: ClassVar[str] = ""
    Options: ClassVar[type] = SamplerOptions
    inputs: ClassVar[dict[str, str]] = {}
    shows: ClassVar[dict[str, str]] = {}
    needs_grad: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = configlib.build(self.Options, options,
                                       what=f"sampler {self.name or type(self).__name__} option")

    def sample(self, model: Any, n: int, generator: torch.Generator, **inputs: Any) -> Any:
        """Return `n` samples: a ``genzoo.core.sample.Sample``, or images as floats in [0, 1]
        shaped (n, C, H, W)."""
        raise NotImplementedError

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        """Validate options and inputs against this model (e.g. top_k <= vocabulary); raise
        ConfigError with one line. Called by ``draw`` before sampling."""

    def batch_limit(self, model: Any) -> int | None:
        """The most samples one ``sample`` call may draw with these options, where a sample's
        size depends on them (None: the default batch). Token samplers hold rows of
        ``max_new_tokens`` tokens, so their batches shrink as the rows grow."""
        tokens = getattr(self.options, "max_new_tokens", None)
        if isinstance(tokens, int) and tokens > 0:
            return max(1, TOKEN_BUDGET // tokens)
        return None

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any]]:
        import dataclasses
        hints = configlib._resolved_types(cls.Options)
        return [(f.name, getattr(hints.get(f.name), "__name__", str(hints.get(f.name))), f.default)
                for f in dataclasses.fields(cls.Options)]


@contextlib.contextmanager
def sampling_mode(model: Any, needs_grad: bool) -> Iterator[None]:
    """eval mode; no_grad, or (for input-gradient samplers) grad on with parameters frozen so
    sampling never leaves gradients in the network. Restores everything afterwards."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        if needs_grad:
            with frozen(model), torch.enable_grad():
                yield
        else:
            with torch.no_grad():
                yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """The module's parameters stop requiring grad, and are restored afterwards: a loss can
    flow *through* a network (a GAN's critic, an EBM's Langevin steps, a frozen pipeline stage)
    without its weights learning from it or building a graph for them."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def check_inputs(sampler: Sampler, family: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop unset inputs; refuse ones the sampler does not declare, in one line."""
    inputs = {k: v for k, v in inputs.items() if v is not None and v != () and v != []}
    shows = inputs.pop("show", None)
    for key in inputs:
        if key not in sampler.inputs:
            takes = ", ".join(sampler.inputs) or "none"
            why = " (it is an unconditional model)" if key == "label" else ""
            raise ConfigError(f"input {key!r} given, but sampler {sampler.name!r} of family "
                              f"{family!r} takes inputs: {takes}{why} (--input NAME=VALUE)")
    if shows:
        shows = [shows] if isinstance(shows, str) else list(shows)
        for s in shows:
            if s not in sampler.shows:
                can = ", ".join(sampler.shows) or "nothing extra"
                raise ConfigError(f"--show {s} given, but sampler {sampler.name!r} of family "
                                  f"{family!r} has no {s} to show (it can show: {can})")
        inputs["show"] = tuple(shows)
    return inputs


def check_batch_size(batch_size: int) -> int:
    """A sampling batch size the caller chose: an int in [1, MAX_BATCH], or one line."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"the sampling batch size (--batch-size) must be an integer from 1 to "
                          f"{MAX_BATCH}, got {batch_size!r}")
    return batch_size


def batch_size_for(model: Any, sampler: Sampler, batch_size: int | None = None) -> int:
    """How many samples one ``sample`` call draws: the caller's `batch_size` or the modality's
    default, never more than the sampler's own limit for its options."""
    size = check_batch_size(batch_size) if batch_size is not None else \
        MODALITY_BATCH.get(getattr(model, "modality", "image"), DEFAULT_BATCH)
    limit = sampler.batch_limit(model)
    return max(1, min(size, limit)) if limit else size


def draw_chunks(model: Any, sampler: Sampler, n: int, generator: torch.Generator,
                inputs: dict[str, Any] | None = None, family: str = "",
                batch_size: int | None = None) -> Iterator[Any]:
    """``draw`` batch by batch: typed Samples of at most ``batch_size_for`` samples each, `n`
    in all, drawn in turn from one generator (so a seed fixes them). Everything is checked
    before the first batch is drawn; a writer can take each batch as it comes, so memory stays
    flat however large `n` is. `n` no larger than the batch gives the one batch the sampler
    draws for `n`: exactly what a single ``sample`` call gives."""
    from genzoo.core.sample import as_sample
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise ConfigError(f"the number of samples must be from 1 to {MAX_SAMPLES:_}, got {n!r}")
    inputs = check_inputs(sampler, family or type(model).__name__, dict(inputs or {}))
    sampler.check(model, inputs)
    size = batch_size_for(model, sampler, batch_size)
    modality = getattr(model, "modality", "image")

    def batches() -> Iterator[Any]:
        for start in range(0, n, size):
            with sampling_mode(model, sampler.needs_grad):
                out = sampler.sample(model, min(size, n - start), generator, **inputs)
            yield as_sample(out, modality)
    return batches()  # checked above, drawn lazily below


def draw(model: Any, sampler: Sampler, n: int, generator: torch.Generator,
         inputs: dict[str, Any] | None = None, family: str = "",
         batch_size: int | None = None) -> Any:
    """The one sampling path: checks inputs, picks the grad mode, returns a typed Sample of `n`
    samples drawn in batches (``draw_chunks``) and joined."""
    from genzoo.core.sample import concat
    return concat(list(draw_chunks(model, sampler, n, generator, inputs, family, batch_size)))


def apply_temperature_top_k(logits: torch.Tensor, temperature: float = 1.0,
                            top_k: int | None = None) -> torch.Tensor:
    """Shared by every categorical sampler (PixelCNN, LSTM, GPT)."""
    if not temperature > 0:  # also catches nan
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw from softmax(logits) over the last dim with an explicit generator (CPU-drawn uniforms,
    so the same seed gives the same samples on every device)."""
    rows = logits[..., 0].numel()
    return categorical_from_uniform(logits, uniforms(generator, (rows,), logits.device))


def categorical_from_uniform(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from softmax(logits) with given uniforms, one per row: the form a
    captured step uses (its uniforms were drawn before the loop, see ``uniforms``)."""
    probs = torch.softmax(logits.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    idx = (flat.cumsum(-1) < u.reshape(-1, 1)).sum(-1).clamp_max(flat.shape[-1] - 1)
    return idx.reshape(probs.shape[:-1])


def uniforms(generator: torch.Generator, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """U(0, 1) numbers from `generator` on its own device (the CPU, so a seed draws the same
    samples on every device), moved to `device` in one copy. Drawing a loop's uniforms ahead
    gives the very numbers the loop would draw one step at a time, and spares a GPU loop a
    blocking host-to-device copy per step; a CPU generator gives the same stream drawn whole or
    in consecutive pieces (``uniforms(g, (a + b, n))`` equals ``uniforms(g, (a, n))`` followed by
    ``uniforms(g, (b, n))``), so a long loop draws them a chunk of steps at a time
    (``genzoo.nn.autoregressive.TokenSteps``), never all up front."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def gaussian(generator: torch.Generator, shape: tuple[int, ...], device: torch.device | str,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, 1) noise from `generator` on its own device, moved to `device` (and `dtype`) in one
    copy: the same seed gives the same noise whichever device the network runs on."""
    z = torch.randn(shape, generator=generator, device=generator.device)
    return z.to(device=device, dtype=dtype) if dtype is not None else z.to(device)


@dataclass
class TokenOptions:
    """Options every token sampler shares (LSTM, GPT, music): validated on construction."""

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS:_}, "
                             f"got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
