"""Issue 23's tuning figure: the recognisability of 200 samples (sampler seed 1) beside 200 real
*training* images, so presets are tuned without looking at the test split.

    OMP_NUM_THREADS=1 python benchmarks/recognisable_tune.py RUN JUDGE [--n N] [OPTION=VALUE ...]
    e.g. python benchmarks/recognisable_tune.py runs/ebm runs/cnn-mnist start=buffer steps=200

--n: samples and real images (default 200, as the test figure; 1,000 to compare candidates
whose 200-sample figures differ by less than the ~0.035 standard error of a share near 0.4).

The test figure, once per final preset, is `zoo eval RUN --metrics recognisable --n-samples 200
--classifier JUDGE` (sampler seed 0, the test split)."""
from __future__ import annotations

import argparse
import json
import time

import torch

from genzoo.core.metrics import recognisable
from genzoo.core.runner import load_run


def parse(value: str) -> object:
    try:
        return json.loads(value)  # numbers, true/false, lists
    except json.JSONDecodeError:
        return value  # a bare word such as start=buffer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("judge")
    p.add_argument("options", nargs="*", metavar="SAMPLER_OPTION=VALUE")
    p.add_argument("--n", type=int, default=200, help="samples and real images (default 200)")
    args = p.parse_intermixed_args(argv)
    if bad := [a for a in args.options if "=" not in a]:
        p.error(f"sampler options are OPTION=VALUE, got {' '.join(bad)}")
    torch.set_num_threads(1)
    options = {k: parse(v) for k, v in (a.split("=", 1) for a in args.options)}
    loaded = load_run(args.run)
    if options:  # sampler options for every draw the figure makes
        sample = loaded.sample
        loaded.sample = lambda k, seed=0, **kw: sample(k, seed=seed, **{**options, **kw})
    t = time.process_time()
    out = recognisable(loaded, loaded.data("train"), "train", args.n, args.judge, 1, "cpu")
    keep = ("recog_confident", "recog_class_entropy", "recog_confident_real",
            "recog_class_entropy_real", "recog_histogram")
    shown = {k: round(out[k], 3) if isinstance(out[k], float) else out[k] for k in keep}
    print(args.run, options, shown, f"{time.process_time() - t:.1f} CPU s")


if __name__ == "__main__":
    main()
