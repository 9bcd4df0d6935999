"""Issue 23's tuning figure: the recognisability of 200 samples (sampler seed 1) beside 200 real
*training* images, so presets are tuned without looking at the test split.

    OMP_NUM_THREADS=1 python benchmarks/recognisable_tune.py RUN JUDGE [--n N] [SAMPLER_OPTION=VALUE ...]
    e.g. python benchmarks/recognisable_tune.py runs/ebm runs/cnn-mnist start=buffer steps=200

--n: samples and real images (default 200, as the test figure; 1,000 to compare candidates
whose 200-sample figures differ by less than the ~0.035 standard error of a share near 0.4).

The test figure, once per final preset, is `zoo eval RUN --metrics recognisable --n-samples 200
--classifier JUDGE` (sampler seed 0, the test split)."""
from __future__ import annotations

import json
import sys
import time

import torch

from genzoo.core.metrics import recognisable
from genzoo.core.runner import load_run


def parse(value: str) -> object:
    try:
        return json.loads(value)  # numbers, true/false, lists
    except json.JSONDecodeError:
        return value  # a bare word such as start=buffer


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    run, judge, rest, n = argv[0], argv[1], list(argv[2:]), 200
    if "--n" in rest:
        i = rest.index("--n")
        n = int(rest[i + 1])
        del rest[i:i + 2]
    options = {k: parse(v) for k, v in (a.split("=", 1) for a in rest)}
    loaded = load_run(run)
    if options:  # sampler options for every draw the figure makes
        sample = loaded.sample
        loaded.sample = lambda n, seed=0, **kw: sample(n, seed=seed, **{**options, **kw})
    t = time.process_time()
    out = recognisable(loaded, loaded.data("train"), "train", n, judge, 1, "cpu")
    keep = ("recog_confident", "recog_class_entropy", "recog_confident_real",
            "recog_class_entropy_real", "recog_histogram")
    print(run, options, {k: round(out[k], 3) if isinstance(out[k], float) else out[k] for k in keep},
          f"{time.process_time() - t:.1f} CPU s")


if __name__ == "__main__":
    main(sys.argv[1:])
