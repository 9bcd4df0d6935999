"""FID and KID (Heusel et al. 2017; Bińkowski et al. 2018) through torchmetrics, with a
swappable feature network.

Both compare the statistics of real and generated images in some network's feature space; the
number means little without that space and the sample counts, so every result carries a
``protocol`` string (features, n real vs n fake, dataset and split) printed beside it.

Feature networks:
- ``inception``: the standard InceptionV3 pool features (torchmetrics' torch-fidelity port), used
  only when torch-fidelity and its weights are already on disk (nothing is downloaded);
- a genzoo run (``--features RUN``) whose model defines image ``features`` (``Model.features``):
  the book's chapter-2 classifier, its penultimate layer, trained on the same dataset. The offline
  default: ``auto`` takes Inception when its weights are present, else the newest finished such
  run on the run's dataset.

Numbers from different feature networks, image sizes or sample counts are not comparable (FID is
biased upwards at small n); published CIFAR-10 FIDs (e.g. DCGAN 49.0, WGAN-GP 25.9 in
PyTorch-StudioGAN) are Inception features at 10k vs 10k.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name


class ImageFeatures(nn.Module):
    """Adapts a feature function to torchmetrics: images as floats in [0, 1] (or uint8), any size
    and 1 or 3 channels -> (B, num_features) floats. Converts channels (grey <-> RGB by
    luminance) and resizes (bilinear, antialiased) to what the network was trained on."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, int, int] | None,
                 num_features: int, name: str, module: nn.Module | None = None):
        super().__init__()
        self.fn, self.shape, self.num_features, self.name = fn, shape, num_features, name
        self.net = module  # registered so .to(device) moves it

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if self.shape is not None:
            c, h, w = self.shape
            if x.shape[1] != c:
                if c == 1:
                    x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
                elif x.shape[1] == 1:
                    x = x.expand(-1, c, -1, -1)
                else:
                    raise ConfigError(f"cannot feed {x.shape[1]}-channel images to the "
                                      f"{self.name} features ({c} channels)")
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return self.fn(x).float().flatten(1)


def serves_as_features(model_cls: type) -> bool:
    """Whether a Model class can be FID/KID's feature network: it defines ``features`` on images
    (``Model.has_features`` alone would also take a text model's hidden states)."""
    return bool(getattr(model_cls, "has_features", lambda: False)()) \
        and getattr(model_cls, "modality", None) == "image"


def family_serves_as_features(family: Any) -> bool:
    """Whether registry family `family`'s model serves as features (its ``module:attr`` resolved
    now); False for a name that is not a family here (a plugin not installed, a damaged
    config)."""
    from genzoo.core.registry import registry
    from genzoo.errors import GenzooError
    if not isinstance(family, str):
        return False
    try:
        return serves_as_features(registry().get_family(family).model_class())
    except GenzooError:
        return False


def run_features(run_path: str | os.PathLike, device: str = "cpu") -> ImageFeatures:
    """The ``features(x)`` of a trained run's network (a classifier's penultimate layer)."""
    from genzoo.core.runner import load_run
    loaded = load_run(run_path, device=device)
    model = loaded.model
    if not serves_as_features(type(model)):
        raise ConfigError(f"--features {run_path}: {loaded.name} ({loaded.config.get('family')}) "
                          "has no image feature layer; give a run of a model that defines one, "
                          "e.g. a classifier (`zoo train cnn-fashion`)")
    model.eval()
    shape = model.image_shape() if hasattr(model, "image_shape") else None
    dim = getattr(model, "feature_dim", None)
    if dim is None:  # measure it: one image through the network
        if shape is None:
            raise ConfigError(f"--features {run_path}: {loaded.name} states neither its image "
                              "shape (image_shape) nor its feature size (feature_dim)")
        with torch.no_grad():
            dim = model.features(torch.zeros(1, *shape, device=model.device)).flatten(1).shape[1]
    size = f", {shape[1]}x{shape[2]}" if shape is not None else ""
    return ImageFeatures(model.features, shape, int(dim),
                         f"{loaded.name} run {loaded.path} ({dim}-d penultimate layer{size})", model)


def inception_weights() -> Path | None:
    """The local torch-fidelity InceptionV3 weights, or None (never downloads)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    return path if path.exists() else None


def inception_features() -> ImageFeatures:
    weights = inception_weights()
    if weights is None:
        raise ConfigError("--features inception needs torch-fidelity (pip install torch-fidelity) "
                          f"and its weights at {Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_WEIGHTS} "
                          "(genzoo never downloads them); offline, pass a classifier run: --features RUN")
    from torchmetrics.image.fid import NoTrainInceptionV3
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(weights))
    return ImageFeatures(lambda x: net((x * 255).round().to(torch.uint8)), (3, 299, 299), 2048,
                         "InceptionV3 pool3 (2048-d, torch-fidelity weights, 299x299)", net)


def find_feature_run(dataset: str, folders: list[Path]) -> Path | None:
    """The newest finished run on `dataset` under any of `folders` whose model can serve as the
    feature network (``serves_as_features``; its class resolved through the registry)."""
    import json
    capable: dict[str, bool] = {}  # family -> whether its model serves as features
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for cfg_path in folder.glob("*/config.json"):
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError):
                continue
            run = cfg_path.parent
            if not (isinstance(cfg, dict) and cfg.get("data", {}).get("name") == dataset
                    and (run / "model.safetensors").exists()):
                continue
            family = cfg.get("family")
            if isinstance(family, str) and family not in capable:
                capable[family] = family_serves_as_features(family)
            if isinstance(family, str) and capable[family]:
                state = run / "trainer.json"
                done = state.exists() and json.loads(state.read_text()).get("complete", False)
                if done:
                    found.append((run.stat().st_mtime, run))
    return max(found)[1] if found else None


def resolve_features(spec: str | None, dataset: str, search: list[Path],
                     device: str = "cpu") -> ImageFeatures:
    """``inception``, a RUN folder whose model has image features (a classifier), or
    ``auto``/None (Inception when its weights are local, else the newest such run on `dataset`
    in the `search` folders)."""
    if spec == "inception":
        return inception_features()
    if spec not in (None, "auto"):
        if not Path(spec).exists():
            raise ConfigError(f"--features {spec}: no such run folder; give a classifier run, "
                              "'inception', or 'auto'")
        return run_features(spec, device)
    if inception_weights() is not None:
        return inception_features()
    run = find_feature_run(dataset, search)
    if run is None:
        from genzoo.core.registry import registry
        names = [e.name for e in registry().list() if e.dataset.get("name") == dataset
                 and family_serves_as_features(e.family)]
        how = f"train one (`zoo train {names[0]}`) and " if names else "train a classifier on it and "
        raise ConfigError(f"FID/KID need a feature network for {dataset!r}: no Inception weights "
                          f"on disk and no finished run on {dataset} of a model with image "
                          f"features (a classifier) in {', '.join(str(f) for f in search)}; "
                          f"{how}pass --features RUN")
    return run_features(run, device)


def kid_subset(n_real: int, n_fake: int) -> int:
    """1000 (the usual) when both sets have 2000 or more, else half the smaller set, so the
    subsets differ and KID's std over them means something."""
    return min(1000, max(2, min(n_real, n_fake) // 2))


def fid_kid(real: torch.Tensor, fake: torch.Tensor, features: ImageFeatures,
            metrics: tuple[str, ...] = ("fid", "kid"), batch_size: int = 200,
            seed: int = 0, subsets: int = 100) -> dict[str, float]:
    """FID and/or KID (mean and std over `subsets` random subsets) between two image sets in
    [0, 1]. KID's subset size: ``kid_subset``."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance
    if len(real) < 2 or len(fake) < 2:
        raise ConfigError(f"FID/KID need at least 2 real and 2 generated images, got "
                          f"{len(real)} and {len(fake)}")
    device = next(features.parameters(), torch.empty(0)).device
    meters: dict[str, Any] = {}
    if "fid" in metrics:
        meters["fid"] = FrechetInceptionDistance(feature=features, normalize=True,
                                                 reset_real_features=False)
    if "kid" in metrics:
        import warnings
        with warnings.catch_warnings():  # "will save all extracted features": we know, n is small
            warnings.simplefilter("ignore", UserWarning)
            meters["kid"] = KernelInceptionDistance(feature=features, normalize=True,
                                                    subsets=subsets,
                                                    subset_size=kid_subset(len(real), len(fake)))
    for m in meters.values():
        m.to(device)
    for is_real, images in ((True, real), (False, fake)):
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size].to(device)
            for m in meters.values():
                m.update(chunk, real=is_real)
    out: dict[str, float] = {}
    if "fid" in meters:
        out["fid"] = max(0.0, float(meters["fid"].compute()))
    if "kid" in meters:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # KID's subsets come from the global RNG
            mean, std = meters["kid"].compute()
        out["kid"], out["kid_std"] = float(mean), float(std)
    return out
