"""Figures of a trained text-to-image run (ldm-mnist, ldm-twemoji): prompt accuracy and CLIP score
at guidance w in {0, 1, 3}, and the latency of guidance in one batch vs two passes.

    zoo train cnn-mnist --out runs/cnn-mnist                      # the judge (chapter 2)
    zoo run ldm-mnist --out runs/ldm-mnist
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text2image_bench.py runs/ldm-mnist \\
        --classifier runs/cnn-mnist --json benchmarks/results/text2image_mnist.json

Prompt accuracy: for every class prompt of the run ("a handwritten seven"), --per-class images
(seeded), classified by the in-zoo classifier run (images cropped or resized to its size); the
share whose predicted class is the prompted one. w = 0 ignores the prompt (chance: 1 / classes).
CLIP score: 100 x max(cos(image, prompt), 0) under the run's own CLIP, averaged.
Latency: --n images at w = 3, DDIM 20 steps, conditional and unconditional passes as one batch
of 2n vs two batches of n; median of --repeats, process CPU time and wall time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genzoo import api  # noqa: E402
from genzoo.plugins.text2image import clip_score, generate  # noqa: E402


def to_classifier(images: torch.Tensor, clf) -> torch.Tensor:
    c, h, _ = clf.image_shape()
    x = images
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x.expand(-1, 3, -1, -1)
    side = x.shape[-1]
    if side > h and (side - h) % 2 == 0 and side - h <= 4:  # the pad the data added
        m = (side - h) // 2
        return x[..., m:m + h, m:m + h]
    if side != h:
        x = F.interpolate(x, size=(h, h), mode="bilinear", antialias=True, align_corners=False)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--guidance", default="0,1,3")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=64, help="images for the latency figure")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    model = api.load_run(args.run).model
    clf = api.load_run(args.classifier).model.eval()
    names = list(clf.config.class_names)
    prompts = model.clip.class_prompts
    want = torch.tensor([names.index(c) for c in model.clip.class_names])
    texts = [p for p in prompts for _ in range(args.per_class)]
    labels = want.repeat_interleave(args.per_class)
    out: dict = {"run": args.run, "classifier": args.classifier, "per_class": args.per_class,
                 "classes": len(prompts), "chance": 1 / len(prompts), "steps": args.steps}
    for w in (float(v) for v in args.guidance.split(",")):
        t0 = time.process_time()
        images = torch.cat([generate(model, texts[i:i + 200], torch.Generator().manual_seed(i),
                                     guidance=w, steps=args.steps)
                            for i in range(0, len(texts), 200)])
        cpu = time.process_time() - t0
        with torch.no_grad():
            pred = clf(to_classifier(images, clf)).argmax(1)
        hits = (pred == labels).float()
        per = {p: float(hits[i * args.per_class:(i + 1) * args.per_class].mean())
               for i, p in enumerate(prompts)}
        out[f"w={w:g}"] = {"prompt_accuracy": float(hits.mean()), "per_prompt": per,
                           "clip_score": clip_score(model.clip, images, texts),
                           "cpu_s_per_image": cpu / len(texts)}
        print(f"w={w:g}: prompt accuracy {hits.mean():.3f}, CLIP score "
              f"{out[f'w={w:g}']['clip_score']:.1f}", flush=True)
    lat: dict = {}
    for batched in (True, False):
        cpu, wall = [], []
        for r in range(args.repeats + 1):
            t0, w0 = time.process_time(), time.perf_counter()
            generate(model, [prompts[0]] * args.n, torch.Generator().manual_seed(0), 3.0,
                     args.steps, batched=batched)
            if r:  # the first is a warm-up
                cpu.append(time.process_time() - t0)
                wall.append(time.perf_counter() - w0)
        lat["one_batch" if batched else "two_passes"] = {"cpu_s": statistics.median(cpu),
                                                         "wall_s": statistics.median(wall)}
    lat["speedup_cpu"] = lat["two_passes"]["cpu_s"] / lat["one_batch"]["cpu_s"]
    lat["speedup_wall"] = lat["two_passes"]["wall_s"] / lat["one_batch"]["wall_s"]
    lat["n"] = args.n
    lat["threads"] = torch.get_num_threads()
    out["latency_w3"] = lat
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
