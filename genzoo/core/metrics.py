"""``zoo eval``: the family's own loss terms on a split and, for likelihood families, the
negative log-likelihood in the units that mean something for the modality:
nats/example and bits/dim for discrete images, nats/token and perplexity for text, nats/point
for points (``Model.likelihood_unit``)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def likelihood_report(unit: str | None, total_nats: float, examples: int,
                      units: int) -> dict[str, float]:
    nll = total_nats / max(examples, 1)
    per_unit = total_nats / max(units, 1)
    out = {"nll_nats": nll}
    if unit == "dim":
        out["bits_per_dim"] = per_unit / math.log(2)
    elif unit == "token":
        out["nats_per_token"] = per_unit
        out["perplexity"] = math.exp(min(per_unit, 700.0))
    elif unit == "point":
        out["nats_per_point"] = per_unit
    return out


def log_likelihood(model: Any, data: Any, device: torch.device,
                   batch_size: int = 256) -> dict[str, float]:
    """Through the one ``log_prob(batch)`` path every likelihood family implements."""
    from genzoo.core.batching import batches
    total, n, units = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches(data, batch_size, device):
            lp = model.log_prob(batch)
            total += float(lp.double().sum())
            n += int(lp.shape[0])
            units += model.likelihood_units(batch)
    return likelihood_report(model.likelihood_unit, -total, n, units)


METRICS = ("loss", "nll", "fid", "kid", "recognisable")
RECOGNISABLE_N = 500  # samples judged by default (the reference figures used 200)
MAX_FID_SAMPLES = 50_000  # the largest protocol in use (FID-50k)


def eval_file(data: str | None) -> str:
    """Where ``zoo eval`` saves its figures inside the run: ``eval.json`` for the run's own
    dataset (what ``zoo leaderboard`` and ``zoo gallery`` read), ``eval-NAME.json`` for
    ``--data NAME`` (``eval-folder-DIRNAME.json`` for ``folder:PATH``)."""
    import re
    from pathlib import Path
    if data is None:
        return "eval.json"
    if data.startswith("folder:"):
        data = "folder-" + (Path(data[len("folder:"):]).expanduser().resolve().name or "root")
    return "eval-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", data)[:80] or "data") + ".json"


def eval_data(loaded: Any, data: str | None, split: str) -> tuple[Any, str]:
    """The split to score: the run's own dataset, or `data` (a registry dataset name or
    ``folder:PATH``) seen through the run's own transform: its image size, channels and pad
    (from the model's ``image_shape`` where it has one), its text settings and tokenizer.
    Returns the data and the dataset's name. A name that is not a dataset, or one of another
    modality, is one line."""
    from genzoo.core import config as configlib
    from genzoo.core.data_config import DataConfig
    from genzoo.core.registry import registry
    from genzoo.core.sources import load
    from genzoo.errors import ConfigError
    if data is None:
        return loaded.data(split), str(loaded.config.get("data", {}).get("name", ""))
    model = loaded.model
    modality = getattr(model, "modality", "image")
    cfg = dict(loaded.config.get("data", {}))
    reg = registry()
    if data.startswith("folder:"):
        path = data[len("folder:"):]
        if not path.strip():
            raise ConfigError("--data folder:PATH needs a PATH")
        name = "music-folder" if modality == "events" and "music-folder" in reg.datasets \
            else "folder"
        cfg.update(name=name, path=path)
    else:
        if data not in reg.datasets:
            fits = sorted(n for n, d in reg.datasets.items()
                          if d.modality == modality and d.source != "folder")
            raise ConfigError(f"unknown dataset {data!r}; for this {modality} model: "
                              f"{', '.join(fits)}, or folder:PATH (all: `zoo data list`)")
        cfg.update(name=data, path=None)
    spec = reg.get_dataset(cfg["name"])
    if spec.modality != modality:
        raise ConfigError(f"--data {data}: {spec.name} is {spec.modality} data, but "
                          f"{loaded.name} models {modality}")
    cfg.update(limit=None, label=None)  # the run's subset and attribute belong to its dataset
    if getattr(getattr(model, "tokenizer", None), "level", None) in ("word", "char"):
        cfg["tokenizer"] = model.tokenizer.level  # rows cut as the run cuts them (words, chars)
    shape = model.image_shape() if modality == "image" and hasattr(model, "image_shape") else None
    if shape is not None and shape[1] == shape[2]:
        pad = int(cfg.get("pad") or 0)
        cfg.update(channels=int(shape[0]), size=int(shape[1]) - 2 * pad)
    out = load(configlib.build(DataConfig, cfg, what="data"), split)
    tok = getattr(model, "tokenizer", None)
    if tok is not None and getattr(out, "tokenizer", None) is not None \
            and out.tokenizer.vocab != tok.vocab:
        out = retokenize(out, tok)
    k = getattr(getattr(model, "config", None), "num_classes", None)
    classes = getattr(out, "classes", None) or []
    if isinstance(k, int) and classes and len(classes) != k:
        raise ConfigError(f"--data {data}: {len(classes)} classes, but {loaded.name} was trained "
                          f"on {k}; score it on data with the same classes")
    return out, spec.name if spec.source != "folder" else data


def retokenize(data: Any, tok: Any) -> Any:
    """Text rows re-encoded with the run's tokenizer (words it never saw become its [UNK];
    characters it never saw are one line), same row length."""
    import dataclasses
    L = data.rows.shape[1]
    pad = tok.pad_id if tok.pad_id is not None else 0
    rows = torch.full((len(data), L), pad, dtype=torch.long)
    for i, row in enumerate(data.rows.tolist()):
        ids = tok.encode(data.tokenizer.decode(row))[:L]
        rows[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return dataclasses.replace(data, rows=rows, tokenizer=tok)


def evaluate(run_path: str, split: str = "test", device: str = "cpu",
             batch_size: int = 256, metrics: tuple[str, ...] | None = None,
             n_samples: int | None = None, features: str | None = None, seed: int = 0,
             save: bool = True, data: str | None = None,
             classifier: str | None = None) -> dict[str, Any]:
    """The run's loss terms on `split`, the family's own figures (``Model.evaluate_extra``) and
    the chosen `metrics` (default: loss and, for likelihood families, NLL; ``fid``/``kid`` for
    image families compare `n_samples` generated images with the split in the feature space
    `features` names, see ``genzoo.core.fid``; ``recognisable`` judges samples with a
    chapter-2 `classifier` run, see ``genzoo.core.recognition``). `data`: score on another dataset
    (``eval_data``). Saved to RUN/eval.json (merged with earlier results), where
    ``zoo leaderboard`` and ``zoo gallery`` read it; another dataset's to ``eval_file(data)``."""
    from genzoo.core.runner import evaluate_loss, load_run
    from genzoo.errors import ConfigError
    wanted = tuple(metrics) if metrics else ("loss", "nll")
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
    loaded = load_run(run_path, device=device)
    spec = data
    data, dataset = eval_data(loaded, spec, split)
    model = loaded.model
    out: dict[str, Any] = {"run": str(loaded.path), "model": loaded.name, "dataset": dataset,
                           "split": split, "examples": len(data)}
    out.update({f"loss/{k}": v for k, v in evaluate_loss(model, data, model.device, batch_size).items()})
    # figures a family draws (a confusion matrix) go beside the run's own for another dataset
    out.update(model.evaluate_extra(data, loaded.path if spec is None
                                    else loaded.path / eval_file(spec).removesuffix(".json")))
    if "nll" in wanted:
        if model.has_likelihood:
            out.update(log_likelihood(model, data, model.device, batch_size))
            out["likelihood_unit"] = model.likelihood_unit
        elif metrics:
            out["nll_note"] = f"{loaded.family.name} defines no likelihood"
    sample_metrics = tuple(m for m in wanted if m in ("fid", "kid"))
    drawn: dict[int, torch.Tensor] = {}  # FID/KID and recognisable at one n judge one draw

    def draw(n: int) -> torch.Tensor:
        if n not in drawn:
            drawn[n] = generated_images(loaded, n, seed)
        return drawn[n]
    if sample_metrics:
        out.update(sample_quality(loaded, data, split, sample_metrics, n_samples, features,
                                  seed, device, dataset, draw))
    if "recognisable" in wanted:
        out.update(recognisable(loaded, data, split, n_samples, classifier, seed, device,
                                dataset, draw))
    if save:
        from genzoo.core.atomic import read_json, write_json
        path = loaded.path / eval_file(spec)
        old = read_json(path) if path.exists() else {}
        write_json(path, {**(old if isinstance(old, dict) else {}), **out,
                          "time": __import__("time").strftime("%Y-%m-%dT%H:%M:%S")})
    return out


def _images_only(loaded: Any, data: Any, what: str, hint: str = "") -> None:
    """One line when the run's samples or the split are not images (a metric that needs both)."""
    from genzoo.errors import ConfigError
    if getattr(loaded.model, "modality", "image") != "image" or not hasattr(data, "images"):
        raise ConfigError(f"{what}, but {loaded.name} makes "
                          f"{getattr(loaded.model, 'modality', '?')} samples{hint}")


def generated_images(loaded: Any, n: int, seed: int, chunk: int = 250) -> torch.Tensor:
    """`n` images from the run's default sampler, drawn `chunk` at a time (chunk i with seed
    `seed + i`, so FID/KID and the recognisability figure see the same samples for one seed)."""
    return torch.cat([loaded.sample(min(chunk, n - start), seed=seed + i).images
                      for i, start in enumerate(range(0, n, chunk))])


def sample_quality(loaded: Any, data: Any, split: str, metrics: tuple[str, ...],
                   n_samples: int | None, features: str | None, seed: int,
                   device: str, dataset: str | None = None,
                   draw: Callable[[int], torch.Tensor] | None = None) -> dict[str, Any]:
    """FID/KID of the run's default sampler against the split, with the protocol. `draw(n)`:
    the n generated images (default ``generated_images`` at `seed`)."""
    from pathlib import Path

    from genzoo.core.fid import fid_kid, kid_subset, resolve_features
    from genzoo.errors import ConfigError
    _images_only(loaded, data, "FID/KID compare images", "; use --metrics nll")
    real = data.images()[:10_000]
    n = n_samples or len(real)
    if not 2 <= n <= MAX_FID_SAMPLES:
        raise ConfigError(f"--n-samples must be 2..{MAX_FID_SAMPLES} for FID/KID, got {n}")
    dataset = dataset or loaded.config.get("data", {}).get("name", "")
    search = [loaded.path.parent, Path("runs")]
    feats = resolve_features(features, dataset, search, device)
    fake = draw(n) if draw else generated_images(loaded, n, seed)
    scores = fid_kid(real, fake, feats.to(torch.device(device)), metrics, seed=seed)
    size = "x".join(str(s) for s in real.shape[1:])
    sampler = loaded.config.get("sampler") or loaded.family.default_sampler
    protocol = (f"features: {feats.name}; real: {len(real)} {split} images of {dataset} "
                f"({size}); fake: {n} samples (sampler {sampler}, seed {seed})"
                + (f"; KID: 100 subsets of {kid_subset(len(real), n)}" if "kid" in metrics else ""))
    return {**scores, "fid_features": feats.name, "fid_n_real": len(real), "fid_n_fake": n,
            "protocol": protocol}


def recognisable(loaded: Any, data: Any, split: str, n_samples: int | None,
                 classifier: str | None, seed: int, device: str,
                 dataset: str | None = None,
                 draw: Callable[[int], torch.Tensor] | None = None) -> dict[str, Any]:
    """The recognisability figure of the run's default sampler (``genzoo.core.recognition``):
    confident fraction and class entropy, beside the same on real `split` images. `draw(n)`:
    as in ``sample_quality``."""
    from pathlib import Path

    from genzoo.core.recognition import Judge, judge_run, recognisability
    from genzoo.errors import ConfigError
    _images_only(loaded, data, "recognisable judges images")
    n = n_samples or RECOGNISABLE_N
    if not 1 <= n <= MAX_FID_SAMPLES:
        raise ConfigError(f"--n-samples must be 1..{MAX_FID_SAMPLES}, got {n}")
    dataset = dataset or loaded.config.get("data", {}).get("name", "")
    judge = Judge(judge_run(dataset, classifier, [loaded.path.parent, Path("runs")]), device)
    fake = draw(n) if draw else generated_images(loaded, n, seed)
    real = data.images()
    if len(real) > n:  # a seeded subset: splits are often ordered by class
        real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]]
    # the judge sees both in the source's frame (data.crop and pad undone; a plain data.size is
    # left to the judge's own resize): a classifier trained on 28x28 digits is judged on 28x28
    # digits, not on a stretched crop
    undo = getattr(data, "to_source_frame", lambda images: images)  # a loader's own image set
    out = recognisability(undo(fake), undo(real), judge)
    frame = getattr(data, "frame", None)
    out["recog_protocol"] += (f" ({split} split of {dataset}; sampler seed {seed}"
                              + (f"; {frame.describe()}" if frame is not None else "") + ")")
    return out
