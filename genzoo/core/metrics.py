"""``zoo eval``: the family's own loss terms on a split and, for likelihood families, the
negative log-likelihood in the units that mean something for the modality:
nats/example and bits/dim for discrete images, nats/token and perplexity for text, nats/point
for points (``Model.likelihood_unit``)."""
from __future__ import annotations

import math
from typing import Any

import torch


def likelihood_report(unit: str | None, total_nats: float, examples: int,
                      units: int) -> dict[str, float]:
    nll = total_nats / max(examples, 1)
    per_unit = total_nats / max(units, 1)
    out = {"nll_nats": nll}
    if unit == "dim":
        out["bits_per_dim"] = per_unit / math.log(2)
    elif unit == "token":
        out["nats_per_token"] = per_unit
        out["perplexity"] = math.exp(min(per_unit, 700.0))
    elif unit == "point":
        out["nats_per_point"] = per_unit
    return out


def log_likelihood(model: Any, data: Any, device: torch.device,
                   batch_size: int = 256) -> dict[str, float]:
    """Through the one ``log_prob(batch)`` path every likelihood family implements."""
    from genzoo.core.batching import batches
    total, n, units = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches(data, batch_size, device):
            lp = model.log_prob(batch)
            total += float(lp.double().sum())
            n += int(lp.shape[0])
            units += model.likelihood_units(batch)
    return likelihood_report(model.likelihood_unit, -total, n, units)


METRICS = ("loss", "nll", "fid", "kid")


def evaluate(run_path: str, split: str = "test", device: str = "cpu",
             batch_size: int = 256, metrics: tuple[str, ...] | None = None,
             n_samples: int | None = None, features: str | None = None, seed: int = 0,
             save: bool = True) -> dict[str, Any]:
    """The run's loss terms on `split`, the family's own figures (``Model.evaluate_extra``) and
    the chosen `metrics` (default: loss and, for likelihood families, NLL; ``fid``/``kid`` for
    image families compare `n_samples` generated images with the split in the feature space
    `features` names, see ``genzoo.core.fid``). Saved to RUN/eval.json (merged with earlier
    results), where ``zoo leaderboard`` and ``zoo gallery`` read it."""
    from genzoo.core.runner import evaluate_loss, load_run
    from genzoo.errors import ConfigError
    wanted = tuple(metrics) if metrics else ("loss", "nll")
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
    loaded = load_run(run_path, device=device)
    data = loaded.data(split)
    model = loaded.model
    out: dict[str, Any] = {"run": str(loaded.path), "model": loaded.name, "split": split,
                           "examples": len(data)}
    out.update({f"loss/{k}": v for k, v in evaluate_loss(model, data, model.device, batch_size).items()})
    out.update(model.evaluate_extra(data, loaded.path))
    if "nll" in wanted:
        if model.has_likelihood:
            out.update(log_likelihood(model, data, model.device, batch_size))
            out["likelihood_unit"] = model.likelihood_unit
        elif metrics:
            out["nll_note"] = f"{loaded.family.name} defines no likelihood"
    sample_metrics = tuple(m for m in wanted if m in ("fid", "kid"))
    if sample_metrics:
        out.update(sample_quality(loaded, data, split, sample_metrics, n_samples, features,
                                  seed, device))
    if save:
        from genzoo.core.atomic import read_json, write_json
        path = loaded.path / "eval.json"
        old = read_json(path) if path.exists() else {}
        write_json(path, {**(old if isinstance(old, dict) else {}), **out,
                          "time": __import__("time").strftime("%Y-%m-%dT%H:%M:%S")})
    return out


def sample_quality(loaded: Any, data: Any, split: str, metrics: tuple[str, ...],
                   n_samples: int | None, features: str | None, seed: int,
                   device: str) -> dict[str, Any]:
    """FID/KID of the run's default sampler against the split, with the protocol."""
    from pathlib import Path

    from genzoo.core.fid import fid_kid, kid_subset, resolve_features
    from genzoo.errors import ConfigError
    if getattr(loaded.model, "modality", "image") != "image" or not hasattr(data, "images"):
        raise ConfigError(f"FID/KID compare images, but {loaded.name} makes "
                          f"{getattr(loaded.model, 'modality', '?')} samples; use --metrics nll")
    real = data.images()[:10_000]
    n = n_samples or len(real)
    if n < 2:
        raise ConfigError(f"--n-samples must be >= 2 for FID/KID, got {n}")
    dataset = loaded.config.get("data", {}).get("name", "")
    search = [loaded.path.parent, Path("runs")]
    feats = resolve_features(features, dataset, search, device)
    chunks = []
    for i, start in enumerate(range(0, n, 250)):
        chunks.append(loaded.sample(min(250, n - start), seed=seed + i).images)
    fake = torch.cat(chunks)
    scores = fid_kid(real, fake, feats.to(torch.device(device)), metrics, seed=seed)
    size = "x".join(str(s) for s in real.shape[1:])
    sampler = loaded.config.get("sampler") or loaded.family.default_sampler
    protocol = (f"features: {feats.name}; real: {len(real)} {split} images of {dataset} "
                f"({size}); fake: {n} samples (sampler {sampler}, seed {seed})"
                + (f"; KID: 100 subsets of {kid_subset(len(real), n)}" if "kid" in metrics else ""))
    return {**scores, "fid_features": feats.name, "fid_n_real": len(real), "fid_n_fake": n,
            "protocol": protocol}
