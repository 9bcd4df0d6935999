"""Music figures (Foster ch. 11): training throughput, sampling latency per token (music
transformer, KV cache vs the naive reference) and per bar (MuseGAN), and, given trained runs,
the held-out NLL per event and what each MuseGAN latent controls.

    OMP_NUM_THREADS=1 python benchmarks/music_bench.py --json benchmarks/results/music.json \
        [--transformer-run RUN] [--musegan-run RUN]

Medians of repeats; ratios (cached vs naive) are measured in the same process.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from genzoo.core.bench import record, timeit
from genzoo.core.data import StepBatches
from genzoo.core.data import load as load_data
from genzoo.core.factory import build_model, plan
from genzoo.core.sampler import draw
from genzoo.core.trainer import StepContext


def train_rate(name: str, preset: str, batch: int, steps: int, repeats: int) -> dict:
    p = plan(name, preset, {"train.batch_size": batch})
    data = load_data(p.data, "train")
    torch.manual_seed(0)
    model = build_model(p, data)
    model.setup(data)
    model.train()
    opts = model.configure_optimizers(p.train)
    ctx = StepContext(torch.device("cpu"), "none", p.train.grad_clip)
    batches = StepBatches(data, batch, 0)
    cached = [batches(i) for i in range(4)]

    def run() -> None:
        for i in range(steps):
            model.training_step(cached[i % 4], opts, ctx)
    times = timeit(run, repeats, 1, torch.device("cpu"))
    return record(name, torch.device("cpu"), "train_throughput",
                  f"preset={preset} batch={batch} params={model.num_params()} (training_step)",
                  [steps * batch / t for t in times], "samples/s"), model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--transformer-run")
    ap.add_argument("--musegan-run")
    a = ap.parse_args()
    cpu = torch.device("cpu")
    out = []

    rec, mt = train_rate("music-transformer", "quick", 64, 5, a.repeats)
    out.append(rec)
    rec["tokens_per_s"] = rec["median"] * 50
    from genzoo.plugins.music_transformer import CachedSampler, NaiveSampler
    mt.eval()
    mt.note_vocab = ["START"] + [f"x{i}" for i in range(mt.config.note_vocab - 1)]
    mt.duration_vocab = ["0.0"] + ["1.0"] * (mt.config.duration_vocab - 1)
    tokens = 200
    per = {}
    for cls in (CachedSampler, NaiveSampler):
        s = cls(max_new_tokens=tokens)
        times = timeit(lambda: draw(mt, s, 1, torch.Generator().manual_seed(0)), a.repeats, 1, cpu)
        per[cls.name] = [t / tokens for t in times]
        out.append(record("music-transformer", cpu, "sample_latency",
                          f"sampler={cls.name} n=1, {tokens} events (context 50: the window "
                          "slides)", per[cls.name], "s/event"))
    out.append(record("music-transformer", cpu, "speedup", "naive / cached, same process",
                      [statistics.median(per["naive"]) / statistics.median(per["cached"])], "x"))

    rec, gan = train_rate("musegan", "quick", 32, 2, a.repeats)
    out.append(rec)
    from genzoo.plugins.musegan import PriorSampler
    gan.eval()
    for n in (1, 64):
        s = PriorSampler()
        times = timeit(lambda: gan.binarise(gan(**gan.latents(n, torch.Generator().manual_seed(0)))),
                       a.repeats, 1, cpu)
        out.append(record("musegan", cpu, "sample_latency",
                          f"generator + argmax, n={n}, 2 bars each (quick widths)",
                          [t / (2 * n) for t in times], "s/bar"))

    if a.transformer_run:
        from genzoo.core.metrics import evaluate
        r = evaluate(a.transformer_run, "test")
        # per beat (quarter note) of held-out melody: the events' NLL over the time they fill
        from genzoo import api
        from genzoo.nn.music import beats_of
        loaded = api.load_run(a.transformer_run)
        test = loaded.data("test")
        beat = torch.tensor([beats_of(t) for t in test.duration_vocab])
        nll = beats = events = 0.0
        with torch.no_grad():
            for i in range(0, len(test), 256):
                x = test.batch(torch.arange(i, min(i + 256, len(test))))["x"]
                nll -= float(loaded.model.log_prob({"x": x}).sum())
                beats += float(beat[x[:, 1:, 1]].sum())
                events += x[:, 1:].shape[0] * x[:, 1:].shape[1]
        out.append({"model": "music-transformer", "metric": "heldout_nll", "run": a.transformer_run,
                    **{k: v for k, v in r.items() if isinstance(v, (int, float))},
                    "nats_per_event": nll / events, "nats_per_beat": nll / beats,
                    "heldout_pieces": test.pieces, "heldout_events": events,
                    "heldout_beats": beats})
    if a.musegan_run:
        from genzoo import api
        from genzoo.plugins.musegan import track_changes
        m = api.load_run(a.musegan_run).model
        stats = {"style": track_changes(m, "style", 256).tolist(),
                 "chords": track_changes(m, "chords", 256).tolist()}
        for k in range(m.config.tracks):
            g = track_changes(m, "groove", 256, track=k)
            stats[f"groove[{k}] share in own track"] = float(g[k] / g.sum())
            mel = track_changes(m, "melody", 256, track=k)
            stats[f"melody[{k}] share in own track"] = float(mel[k] / mel.sum())
        out.append({"model": "musegan", "metric": "latent_control", "run": a.musegan_run,
                    "mean |change| per track (S, A, T, B)": stats})
    for r in out:
        print(json.dumps(r))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
