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
    from genzoo.core.runner import batches
    total, n, units = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches(data, batch_size, device):
            lp = model.log_prob(batch)
            total += float(lp.double().sum())
            n += int(lp.shape[0])
            units += model.likelihood_units(batch)
    return likelihood_report(model.likelihood_unit, -total, n, units)


def evaluate(run_path: str, split: str = "test", device: str = "cpu",
             batch_size: int = 256) -> dict[str, Any]:
    from genzoo.core.runner import evaluate_loss, load_run
    loaded = load_run(run_path, device=device)
    data = loaded.data(split)
    model = loaded.model
    out: dict[str, Any] = {"run": str(loaded.path), "model": loaded.name, "split": split,
                           "examples": len(data)}
    out.update({f"loss/{k}": v for k, v in evaluate_loss(model, data, model.device, batch_size).items()})
    if model.has_likelihood:
        out.update(log_likelihood(model, data, model.device, batch_size))
        out["likelihood_unit"] = model.likelihood_unit
    return out
