"""The recognisability ceiling of real MNIST digits in each frame a quick preset may model them in
(issue 23): how confident the judge is of real digits at 28x28, shrunk whole to 16x16, and with
only the centre crop x crop shrunk to 16x16 (``data.crop``), judged with the crop put back in the
28x28 frame (what ``zoo eval --metrics recognisable`` does) and, for contrast, stretched over it.

    OMP_NUM_THREADS=1 python benchmarks/recognisable_frames.py JUDGE [--n N]

JUDGE: a finished ``zoo train cnn-mnist`` run. Each figure is the share of N real images (seeded
subset of each split, default 1,000; the mnist-5k test split has 500) the judge puts in one class
with p >= 0.9, and the class entropy / log 10, exactly as ``genzoo.core.recognition`` scores them.
"""
from __future__ import annotations

import argparse

import torch

from genzoo.core.data_config import DataConfig
from genzoo.core.recognition import Judge, scores
from genzoo.core.sources import load

CROPS = (20, 22, 24)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("judge")
    p.add_argument("--n", type=int, default=1000, help="real images per split (default 1,000)")
    args = p.parse_args(argv)
    if not 1 <= args.n <= 5000:
        p.error(f"--n must be 1..5000, got {args.n}")
    torch.set_num_threads(1)
    judge = Judge(args.judge)

    def figure(images: torch.Tensor) -> str:
        s = scores(judge.probs(images))
        return f"{s['confident']:.3f} / {s['class_entropy']:.3f}"

    print("| split | frame | confident / entropy |\n| --- | --- | --- |")
    for split in ("test", "train"):
        pick = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))
        whole = load(DataConfig(name="mnist-5k"), split)
        index = pick[pick < len(whole)][:args.n]
        x = whole.images(index)
        n = len(x)
        small = load(DataConfig(name="mnist-5k", size=16), split).images(index)
        ink = x.sum()
        print(f"| {split} ({n}) | 28x28 as it is | {figure(x)} |")
        print(f"| {split} ({n}) | whole 28x28 at 16x16 | {figure(small)} |")
        for crop in CROPS:
            data = load(DataConfig(name="mnist-5k", crop=crop, size=16), split)
            images = data.images(index)
            o = (28 - crop) // 2
            outside = 1 - float(x[..., o:o + crop, o:o + crop].sum() / ink)
            print(f"| {split} ({n}) | centre {crop}x{crop} at 16x16, put back "
                  f"({outside:.1%} of the ink cut) | {figure(data.to_source_frame(images))} |")
            print(f"| {split} ({n}) | centre {crop}x{crop} at 16x16, stretched over 28x28 "
                  f"| {figure(images)} |")  # the judge resizes 16 -> 28 itself


if __name__ == "__main__":
    main()
