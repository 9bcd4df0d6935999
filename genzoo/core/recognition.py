"""Recognisability: does a generator's output look like its data, judged by genzoo's own
chapter-2 classifier? An Inception-Score-like figure without Inception, in two parts:

- ``confident``: the fraction of samples the classifier puts in one class with probability
  >= 0.9 (a blob or a scribble spreads its probability; a recognisable digit does not);
- ``class_entropy``: the entropy of the histogram of predicted classes over the samples, divided
  by log K (1.0: every class as often; low: a few classes, i.e. mode collapse).

Both are printed beside the same figures for real held-out images of the dataset, seen through
the same transform (channels, size): the ceiling a generator can reach with this classifier.
The classifier is the newest finished class-logits run on the dataset in the search folders
(``genzoo.core.fid.find_feature_run``), else the dataset's registered classifier trained once with
its quick preset and cached under the data root (``genzoo.core.fid.auto_feature_run``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genzoo.core import fid
from genzoo.errors import ConfigError

THRESHOLD = 0.9
#: the classifier's own training for this figure: the registry's quick preset (the issue's
#: reference figures were measured with the quick cnn-mnist), seed 0, no sample grids
QUICK = {"train.sample_every": 0, "train.seed": 0}


def serves_as_judge(model_cls: type) -> bool:
    return bool(getattr(model_cls, "has_class_logits", lambda: False)()) \
        and getattr(model_cls, "modality", None) == "image"


def judge_run(dataset: str, spec: str | None = None, search: list[Path] | None = None) -> Path:
    """The classifier run that judges samples of `dataset`: `spec` (a run folder) when given,
    else one found in `search`, else the cached quick classifier (trained once)."""
    if spec not in (None, "auto"):
        if not Path(spec).is_dir():
            raise ConfigError(f"--classifier {spec}: no such run folder; give a classifier run "
                              "(zoo train cnn-mnist) or 'auto'")
        return Path(spec)
    run = fid.find_feature_run(dataset, search or [], serves_as_judge)
    if run is not None:
        return run
    return fid.auto_feature_run(dataset, search, train_overrides=QUICK,
                            what="its quick preset, to judge recognisability")


class Judge:
    """A classifier run's ``class_logits`` behind the transform its training data had: images
    in [0, 1] of any size and 1 or 3 channels -> class probabilities."""

    def __init__(self, run_path: str | Path, device: str = "cpu"):
        from genzoo.core.runner import load_run
        loaded = load_run(run_path, device=device)
        model = loaded.model
        if not serves_as_judge(type(model)):
            raise ConfigError(f"--classifier {run_path}: {loaded.name} "
                              f"({loaded.config.get('family')}) has no class logits; give a "
                              "classifier run (zoo train cnn-mnist)")
        shape = model.image_shape() if hasattr(model, "image_shape") else None
        classes = list(getattr(model.config, "class_names", []) or [])
        self.k = int(getattr(model.config, "num_classes", 0) or len(classes))
        self.classes = classes
        self.name = f"{loaded.name} run {loaded.path}"
        self.net = fid.ImageFeatures(model.class_logits, shape, self.k, self.name, model).eval()
        self.device = model.device

    @torch.no_grad()
    def probs(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        out = [F.softmax(self.net(images[i:i + batch].to(self.device)).float(), 1).cpu()
               for i in range(0, len(images), batch)]
        return torch.cat(out) if out else torch.zeros(0, self.k)


def scores(probs: torch.Tensor, threshold: float = THRESHOLD) -> dict[str, Any]:
    """confident fraction, normalised class entropy and the class histogram of (n, K) probs."""
    n, k = probs.shape
    top = probs.max(1)
    hist = torch.bincount(top.indices, minlength=k).float()
    p = hist / hist.sum().clamp_min(1)
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum()) / math.log(k) if k > 1 else 0.0
    return {"confident": float((top.values >= threshold).float().mean()) if n else 0.0,
            "class_entropy": entropy, "histogram": [int(h) for h in hist.tolist()]}


def recognisability(fake: torch.Tensor, real: torch.Tensor, judge: Judge,
                    threshold: float = THRESHOLD) -> dict[str, Any]:
    """The figure for generated images `fake` beside its ceiling on real images `real` (both
    (n, C, H, W) in [0, 1] or uint8), with the protocol line."""
    mine, ceiling = scores(judge.probs(fake), threshold), scores(judge.probs(real), threshold)
    protocol = (f"recognisable: fraction of images the classifier {judge.name} gives one class "
                f"p >= {threshold}; class entropy of its argmax histogram / log {judge.k}; "
                f"{len(fake)} samples vs {len(real)} real images")
    return {"recog_confident": mine["confident"], "recog_class_entropy": mine["class_entropy"],
            "recog_confident_real": ceiling["confident"],
            "recog_class_entropy_real": ceiling["class_entropy"],
            "recog_histogram": mine["histogram"], "recog_classes": judge.classes,
            "recog_n": len(fake), "recog_protocol": protocol}
