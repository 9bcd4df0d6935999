"""FID and KID (Heusel et al. 2017; Bińkowski et al. 2018) through torchmetrics, with a
swappable feature network.

Both compare the statistics of real and generated images in some network's feature space; the
number means little without that space and the sample counts, so every result carries a
``protocol`` string (features, n real vs n fake, dataset and split) printed beside it.

Feature networks:
- ``inception``: the standard InceptionV3 pool features (torchmetrics' port of torch-fidelity's
  ``FeatureExtractorInceptionV3``), the protocol papers use. Its weights are read from the data
  root's cache (or torch hub's), downloaded there once from torch-fidelity's URL when the machine
  is online; offline, one line says so;
- a genzoo run (``--features RUN``) whose model defines image ``features`` (``Model.features``):
  the book's chapter-2 classifier, its penultimate layer, trained on the same dataset. The offline
  default: ``auto`` takes Inception when its weights are present, else the newest finished such
  run on the run's dataset, else the dataset's registered classifier (``cnn-twemoji`` for
  twemoji), trained once with a short fixed config and cached under the data root
  (``feature_cache``), keyed by classifier, dataset transform, config and genzoo version.

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

from genzoo.core.atomic import file_lock
from genzoo.errors import ConfigError

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name
# where torch-fidelity itself downloads them (torch_fidelity.feature_extractor_inceptionv3)
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_WEIGHTS)
INCEPTION_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the name carries it
# The auto-trained feature network: the registered classifier's own config with a fixed, short
# schedule (its quick preset takes minutes on a busy CPU); part of the cache key.
AUTO_TRAIN: dict[str, Any] = {"train.steps": 100, "train.batch_size": 32, "train.lr": 0.002,
                              "train.schedule": "cosine", "train.warmup_steps": 0,
                              "train.sample_every": 0, "train.checkpoint_every": 100,
                              "train.seed": 0}


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


def family_serves_as_features(family: Any,
                              serves: Callable[[type], bool] = serves_as_features) -> bool:
    """Whether registry family `family`'s model passes `serves` (default: serves as features;
    its ``module:attr`` resolved now); False for a name that is not a family here (a plugin not
    installed, a damaged config)."""
    from genzoo.core.registry import registry
    from genzoo.errors import GenzooError
    if not isinstance(family, str):
        return False
    try:
        return serves(registry().get_family(family).model_class())
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


def feature_cache() -> Path:
    """Where FID/KID feature networks are cached: DATA_ROOT/fid-features."""
    from genzoo.core.data_config import data_root
    return data_root() / "fid-features"


def inception_cached() -> Path:
    return feature_cache() / INCEPTION_WEIGHTS


def inception_weights() -> Path | None:
    """The InceptionV3 weights on disk (genzoo's cache, else torch hub's where torch-fidelity
    puts them), or None. Never downloads."""
    for path in (inception_cached(), Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS):
        if path.is_file():
            return path
    return None


def download_inception(url: str = INCEPTION_URL, timeout: float = 30.0) -> Path:
    """torch-fidelity's InceptionV3 weights, downloaded once into ``feature_cache()`` (a
    temporary file, its sha256 checked, then renamed: a concurrent eval never reads half a
    file). Offline: one line saying so."""
    import hashlib
    import urllib.error
    import urllib.request
    target = inception_cached()
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if target.is_file():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        print(f"downloading torch-fidelity's InceptionV3 weights (~95 MB) once into {target}",
              file=__import__("sys").stderr)
        try:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            tmp.unlink(missing_ok=True)
            why = getattr(e, "reason", None) or e
            raise ConfigError(f"--features inception: cannot download the InceptionV3 weights "
                              f"from {url} ({why}): offline? Put {INCEPTION_WEIGHTS} at {target}, "
                              "or use the offline feature network: --features auto") from None
        if not digest.hexdigest().startswith(INCEPTION_SHA256_PREFIX):
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"--features inception: the file downloaded from {url} is not "
                              f"{INCEPTION_WEIGHTS} (sha256 {digest.hexdigest()[:12]}...); "
                              "try again later")
        os.replace(tmp, target)
    return target


def inception_features() -> ImageFeatures:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError("--features inception needs torch-fidelity, whose InceptionV3 "
                          "torchmetrics uses: pip install torch-fidelity (or genzoo[metrics]); "
                          "without it: --features auto") from None
    weights = inception_weights() or download_inception()
    from torchmetrics.image.fid import NoTrainInceptionV3
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(weights))
    return ImageFeatures(lambda x: net((x * 255).round().to(torch.uint8)), (3, 299, 299), 2048,
                         "InceptionV3 pool3 (2048-d, torch-fidelity weights, 299x299)", net)


def find_feature_run(dataset: str, folders: list[Path],
                     serves: Callable[[type], bool] = serves_as_features) -> Path | None:
    """The newest finished run on `dataset` under any of `folders` whose model passes `serves`
    (default: it can serve as the feature network; its class resolved through the registry)."""
    import json
    capable: dict[str, bool] = {}  # family -> whether its model passes `serves`
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for cfg_path in folder.glob("*/config.json"):
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            run = cfg_path.parent
            if not (isinstance(cfg, dict) and cfg.get("data", {}).get("name") == dataset
                    and (run / "model.safetensors").exists()):
                continue
            family = cfg.get("family")
            if isinstance(family, str) and family not in capable:
                capable[family] = family_serves_as_features(family, serves)
            if isinstance(family, str) and capable[family]:
                try:
                    state = json.loads((run / "trainer.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(state, dict) and state.get("complete", False):
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
    if inception_weights() is not None and _has_torch_fidelity():
        return inception_features()
    run = find_feature_run(dataset, search)
    if run is None:
        run = auto_feature_run(dataset, search)
    return run_features(run, device)


def _has_torch_fidelity() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch_fidelity") is not None


def feature_models(dataset: str) -> list[Any]:
    """The registry models that serve as features on `dataset` (a classifier of it), the ones
    tagged ``features`` first (the CNN before the MLP)."""
    from genzoo.core.registry import registry
    found = [e for e in registry().list() if e.dataset.get("name") == dataset
             and family_serves_as_features(e.family)]
    return sorted(found, key=lambda e: ("features" not in e.tags, e.name))


def feature_key(entry: Any, overrides: dict[str, Any]) -> str:
    """The cache folder's name: classifier, dataset and its transform (channels x size as the
    classifier sees them), a hash of the config, the genzoo version."""
    import hashlib
    import json
    import re

    from genzoo._version import __version__
    from genzoo.core.factory import plan
    from genzoo.core.registry import registry
    p = plan(entry.name, "quick", overrides)
    native = registry().get_dataset(p.data.name).shape
    channels = p.data.channels or (native[0] if native else "n")
    size = p.data.size or p.data.crop or (native[-1] if native else "n")
    blob = json.dumps({"model": entry.name, "overrides": overrides,
                       "data": {k: getattr(p.data, k) for k in ("name", "size", "channels", "pad")}
                               # crop only when set: the keys of existing caches stay as they were
                               | ({"crop": p.data.crop} if p.data.crop is not None else {})},
                      sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    key = f"{entry.name}-{p.data.name}-{channels}x{size}-pad{p.data.pad}-{digest}-genzoo{__version__}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def _finished(run: Path) -> bool:
    import json
    try:
        return (run / "model.safetensors").is_file() and \
            bool(json.loads((run / "trainer.json").read_text()).get("complete", False))
    except (OSError, ValueError, AttributeError):
        return False


def auto_feature_run(dataset: str, search: list[Path] | None = None,
                     say: Callable[[str], None] | None = None,
                     train_overrides: dict[str, Any] | None = None,
                     what: str = "genzoo's FID feature config") -> Path:
    """The cached feature network for `dataset`: the registered classifier trained once with
    ``AUTO_TRAIN`` into ``feature_cache()/KEY`` (a temporary folder renamed into place, under a
    lock, so concurrent evals train it once and never read half a run). One line when
    `dataset` has no registered classifier."""
    import shutil
    import sys
    import tempfile
    import time
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    models = feature_models(dataset)
    if not models:
        from genzoo.core.registry import registry
        covered = sorted({e.dataset.get("name") for e in registry().list()
                          if family_serves_as_features(e.family) and e.dataset.get("name")})
        where = f" in {', '.join(str(f) for f in search)}" if search else ""
        raise ConfigError(f"FID/KID need a feature network for {dataset!r}: no Inception weights "
                          f"on disk, no finished classifier run on {dataset}{where}, and no "
                          f"registered classifier to train for it (covered: {', '.join(covered)}); "
                          "train a classifier on it and pass --features RUN, or --features inception")
    entry = models[0]
    overrides = dict(AUTO_TRAIN if train_overrides is None else train_overrides)
    cache = feature_cache()
    target = cache / feature_key(entry, overrides)
    if _finished(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".{target.name}.lock"):
        if _finished(target):  # another eval trained it while this one waited
            return target
        from genzoo.core.runner import train
        steps = overrides.get("train.steps", "its quick preset's")
        say(f"no feature network for {dataset}: training {entry.name} once ({steps} steps, "
            f"{what}) into {target}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache))
        start = time.perf_counter()
        try:
            train(entry.name, "quick", overrides, out=tmp / "run", progress=False)
            if target.exists():  # a broken earlier attempt
                shutil.rmtree(target)
            os.replace(tmp / "run", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"trained the {dataset} feature network in {time.perf_counter() - start:.1f} s; "
            "cached for every later eval")
    return target


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
