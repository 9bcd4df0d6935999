"""World-model figures (benchmarks/worldmodels.md).

    nice .venv/bin/python benchmarks/worldmodels_bench.py collect --steps 500 --episodes 4 --envs 2
        raw single-env CarRacing-v3 stepping vs the rollouts source's collection, frames/s
        (wall and CPU; the collection's CPU includes its worker processes)
    nice .venv/bin/python benchmarks/worldmodels_bench.py figures RUN --episodes 20
        V's held-out reconstruction MSE, M's held-out NLL per step, C's mean return over
        EPISODES unseen tracks (WorldModel.figures) and the CMA-ES budget spent
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import types


def cpu() -> float:
    """User + system seconds of this process and its waited-for children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def collect(args: argparse.Namespace) -> dict:
    from genzoo.family import DataConfig
    from genzoo.nn.world import make_env, require_gym
    from genzoo.plugins import rollouts
    require_gym()
    env = make_env("CarRacing-v3")
    env.reset(seed=0)
    t, c = time.perf_counter(), cpu()
    for _ in range(args.steps):
        env.step(env.action_space.sample())
    raw_wall, raw_cpu = time.perf_counter() - t, cpu() - c
    env.close()
    with tempfile.TemporaryDirectory() as root:
        entry = types.SimpleNamespace(name="bench", options={
            "env": "CarRacing-v3", "policy": "brownian", "episodes": args.episodes,
            "max_steps": args.steps, "envs": args.envs})
        t, c = time.perf_counter(), cpu()
        data = rollouts.load(entry, DataConfig(name="bench", root=root), "train", progress=False)
        wall, used = time.perf_counter() - t, cpu() - c
        frames = sum(rollouts.Collection(data.folder, data.info, "brownian", 0, args.steps)
                     .complete().values())
    return {"raw_single_env": {"steps": args.steps, "frames_per_s_wall": args.steps / raw_wall,
                               "cpu_ms_per_step": 1000 * raw_cpu / args.steps},
            "collection": {"episodes": args.episodes, "envs": args.envs, "frames": frames,
                           "frames_per_s_wall": frames / wall,
                           "cpu_ms_per_frame": 1000 * used / frames},
            "cores": os.cpu_count()}


def figures(args: argparse.Namespace) -> dict:
    from genzoo import api
    from genzoo.core.sources import load
    from genzoo.family import DataConfig
    run = api.load_run(args.run)
    data_cfg = DataConfig(**run.config["data"])
    test = load(data_cfg, "test")
    out = run.model.figures(test, episodes=args.episodes)
    for name in ("vae", "mdnrnn"):
        path = os.path.join(args.run, "components", name, "metrics.jsonl")
        rows = [json.loads(x) for x in open(path)]
        out[f"{name}_test"] = [r for r in rows if r.get("split") == "test"][-1]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--steps", type=int, default=500)
    c.add_argument("--episodes", type=int, default=4)
    c.add_argument("--envs", type=int, default=2)
    f = sub.add_parser("figures")
    f.add_argument("run")
    f.add_argument("--episodes", type=int, default=20)
    args = p.parse_args()
    print(json.dumps(collect(args) if args.what == "collect" else figures(args), indent=1))


if __name__ == "__main__":
    main()
