"""Matplotlib figures written next to a run (Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def loss_curve(run: Any, path: Path | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    records = [m for m in run.metrics() if "split" not in m and "loss" in m]
    path = Path(path or run.path / "loss.png")
    keys = [k for k in records[0] if k not in ("step", "epoch", "lr", "samples_per_s", "time")] \
        if records else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot([m["step"] for m in records], [m.get(k) for m in records], label=k)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
