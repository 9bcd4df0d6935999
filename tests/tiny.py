"""The one table of tiny configurations the tests train: per registry model, overrides that make
a run take seconds on a CPU. Tests take them through the ``tiny`` fixture (tests/conftest.py):

    def test_x(tiny):
        genzoo.train("pixelcnn", **tiny("pixelcnn", steps=4))

so a change of a family's defaults is made here once, not in a TINY dict per test module.
"""
from __future__ import annotations

from typing import Any

# what every tiny run shares: no sample grids, frequent logs and checkpoints
QUIET = {"train.sample_every": 0, "train.log_every": 2}

TINY: dict[str, dict[str, Any]] = {
    "pixelcnn": {"model.filters": 8, "model.blocks": 1, "train.batch_size": 16,
                 "train.checkpoint_every": 2},
    "dcgan": {"model.filters": 8, "model.max_filters": 16, "model.z_dim": 8, "data.size": 16,
              "train.batch_size": 16, "train.steps": 4, "train.sample_n": 8},
    "gpt": {"model.layers": 1, "model.embed_dim": 32, "model.key_dim": 16, "model.ff_dim": 64,
            "model.vocab": 500, "model.context": 24, "data.vocab_size": 500, "data.seq_len": 24,
            "train.batch_size": 8, "model.dropout": 0.0},
    "music-transformer": {"model.embed_dim": 32, "model.heads": 2, "model.key_dim": 16,
                          "model.ff_dim": 32, "model.dropout": 0.0, "data.limit": 12,
                          "data.seq_len": 16, "model.context": 16, "train.batch_size": 8,
                          "train.log_every": 1},
    "musegan": {"model.temporal_width": 32, "model.bar_width": 16, "model.critic_width": 8,
                "model.critic_steps": 2, "train.batch_size": 4, "train.log_every": 1,
                "data.limit": 64},
    "realnvp": {"model.couplings": 4, "model.hidden": 16, "model.layers": 2,
                "train.batch_size": 64},
    "ebm": {"model.langevin_steps": 10, "model.buffer_size": 256, "train.batch_size": 32,
            "train.sample_n": 4, "train.log_every": 5, "train.lr": 1e-3, "data.limit": 384},
    "vae-fashion": {"model.filters": "[8,16,32]", "model.latent_dim": 16, "train.batch_size": 50,
                    "train.lr": 0.005, "train.log_every": 10},
}
TINY["wgan-gp"] = TINY["cgan"] = TINY["dcgan"]
TINY["autoencoder"] = TINY["vae-fashion"]  # the same encoder and decoder, without the KL
TINY["ddm"] = {"model.widths": "[8,16]", "model.block_depth": 1, "model.embedding_dim": 8,
               "data.size": 16, "data.limit": 64, "train.batch_size": 8, "train.sample_n": 2,
               "train.log_every": 1}
TINY["gpt-shakespeare"] = {"model.layers": 1, "model.embed_dim": 32, "model.heads": 2,
                           "model.ff_dim": 64, "train.batch_size": 4}
TINY["lstm"] = {"model.hidden_size": 32, "model.embedding_dim": 16, "data.vocab_size": 300,
                "data.seq_len": 40, "train.batch_size": 16, "train.sample_n": 2}
TINY["pixelcnn-md"] = {"model.filters": 8, "model.blocks": 1, "train.batch_size": 16,
                       "data.size": 12, "data.pad": 2, "train.sample_n": 4,
                       "train.warmup_steps": 0}


def tiny(name: str, steps: int | None = None, **extra: Any) -> dict[str, Any]:
    """Overrides for a tiny run of registry model `name` (KeyError: add it to TINY)."""
    out = {**QUIET, **TINY[name], **extra}
    if steps is not None:
        out["train.steps"] = steps
    return out


def cli_args(name: str, steps: int | None = None, **extra: Any) -> list[str]:
    """The same as `zoo train` arguments: --set KEY=VALUE ... (--steps N)."""
    args: list[str] = []
    for key, value in tiny(name, **extra).items():
        if key == "train.steps":
            continue
        args += ["--set", f"{key}={value}"]
    if steps is not None or "train.steps" in TINY[name]:
        args += ["--steps", str(steps if steps is not None else TINY[name]["train.steps"])]
    return args
