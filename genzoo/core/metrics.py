"""``zoo eval``: likelihood in nats and bits/dim for models that define one, and the family's
own loss terms on the held-out split."""
from __future__ import annotations

import math
from typing import Any

import torch


@torch.no_grad()
def evaluate(run_path: str, split: str = "test", device: str = "cpu",
             batch_size: int = 256) -> dict[str, Any]:
    from genzoo import api
    from genzoo.core import config as configlib
    from genzoo.core.data import DataConfig, load
    loaded = api.load_run(run_path, device=device)
    data_cfg = configlib.build(DataConfig, loaded.config["data"], what="data")
    data = load(data_cfg, split)
    model = loaded.model
    out: dict[str, Any] = {"run": str(loaded.path), "split": split, "examples": len(data)}
    out.update({f"loss/{k}": v for k, v in api.evaluate_loss(model, data, model.device, batch_size).items()})
    if model.has_likelihood:
        total, n, dims = 0.0, 0, None
        idx = torch.arange(len(data))
        for start in range(0, len(data), batch_size):
            x = data.batch(idx[start:start + batch_size])["x"].to(model.device)
            lp = model.log_prob(x)
            total += float(lp.double().sum())
            n += x.shape[0]
            dims = x[0].numel()
        nll = -total / max(n, 1)
        out["nll_nats"] = nll
        out["bits_per_dim"] = nll / (dims * math.log(2))
    return out
