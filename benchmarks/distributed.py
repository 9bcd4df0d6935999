"""Data-parallel throughput on one machine: `zoo train` in one process vs `--nproc N` (torchrun,
gloo on CPU / nccl on GPU), same global batch and seed. Reads samples/s from each run's
metrics.jsonl (every logged window after the first, which holds start-up); medians over repeats.

    python benchmarks/distributed.py --nproc 2 --repeats 3 --json benchmarks/results/distributed-cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], cwd: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genzoo", "train", *args, "--out", "run", "--no-progress"],
                   cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    rates = [m["samples_per_s"] for m in map(json.loads, (cwd / "run" / "metrics.jsonl").open())
             if "samples_per_s" in m][1:]
    return statistics.median(rates), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    common = ["pixelcnn", "--steps", str(a.steps), "--batch-size", "64", "--device", a.device,
              "--set", "filters=32", "--set", "blocks=2", "--set", "sample_every=0",
              "--set", "log_every=10", "--set", "checkpoint_every=1000"]
    settings = {  # (extra args, threads per process)
        "1 process, 1 thread": ([], 1),
        f"1 process, {a.nproc} threads": ([], a.nproc),
        f"{a.nproc} processes (torchrun, gloo), 1 thread each": (["--nproc", str(a.nproc)], 1),
    }
    records = []
    for name, (extra, threads) in settings.items():
        rates, walls = [], []
        for _ in range(a.repeats):
            with tempfile.TemporaryDirectory() as d:
                rate, wall = run(common + extra, Path(d), threads)
            rates.append(rate)
            walls.append(wall)
        records.append({"setting": name, "samples_per_s": rates, "median": statistics.median(rates),
                        "wall_s": walls})
        print(f"{name:50s} {statistics.median(rates):8.0f} samples/s  (runs: "
              f"{', '.join(f'{r:.0f}' for r in rates)}; wall {statistics.median(walls):.1f} s)")
    base = records[0]["median"]
    for r in records:
        r["ratio_to_1_process_1_thread"] = r["median"] / base
        print(f"{r['setting']:50s} x{r['ratio_to_1_process_1_thread']:.2f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"command": " ".join(["zoo", "train", *common]),
                                            "records": records}, indent=2))


if __name__ == "__main__":
    main()
