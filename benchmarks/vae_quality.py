"""What each chapter-3 preset reaches on its default (embedded) data: training time, the test
ELBO and importance-weighted bound in nats, and reconstruction MSE against the mean-image
baseline. Trains the runs it does not find, so a second call only re-evaluates.

    python benchmarks/vae_quality.py --preset quick --json benchmarks/results/vae-quality-quick.json
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import genzoo
from genzoo.core import config as configlib
from genzoo.nn import latent
from genzoo.core.data import DataConfig, load
from genzoo.core.metrics import evaluate

MODELS = ("autoencoder", "vae-fashion", "vae-faces")


def trained(name: str, preset: str, runs: Path) -> Path:
    path = runs / f"{name}-{preset}"
    state = path / "trainer.json"
    if not (state.exists() and json.loads(state.read_text()).get("complete")):
        genzoo.train(name, preset=preset, out=str(path))
    return path


def measure(name: str, preset: str, path: Path) -> dict:
    loaded = genzoo.load_run(str(path))
    cfg = loaded.config
    metrics = loaded.run.metrics()
    steps = [m for m in metrics if "split" not in m]
    created = datetime.strptime(cfg["created"], "%Y-%m-%dT%H:%M:%S").timestamp()
    data_cfg = configlib.build(DataConfig, cfg["data"], what="data")
    train, test = load(data_cfg, "train"), load(data_cfg, "test")
    out = {
        "model": name, "preset": preset, "run": path.name, "params": cfg["params"],
        "dataset": cfg["data"]["name"], "steps": steps[-1]["step"],
        "train_wall_s": round(steps[-1]["time"] - created, 1),
        "train_samples_per_s_logged": round(sum(m["samples_per_s"] for m in steps) / len(steps), 1),
        "recon_train": latent.reconstruction_error(loaded.model, train.x),
        "recon_test": latent.reconstruction_error(loaded.model, test.x, reference=train.x),
    }
    t = time.perf_counter()
    ev = evaluate(str(path))
    out["eval_s"] = round(time.perf_counter() - t, 1)
    out["eval"] = {k: v for k, v in ev.items() if k not in ("run",)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick", choices=["quick", "book"])
    ap.add_argument("--runs", default="runs/bench", type=Path, help="where runs are kept")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--json", type=Path, help="write the records here")
    args = ap.parse_args()
    records = [measure(m, args.preset, trained(m, args.preset, args.runs)) for m in args.models]
    text = json.dumps(records, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
