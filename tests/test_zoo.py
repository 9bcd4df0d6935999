"""Registry-driven smoke test (timm's pattern): every built-in model with offline data trains a
couple of steps with its quick preset, saves a run, reloads it, samples with every sampler of
its family and writes the samples the way its modality is shown."""
import pytest
import torch

import genzoo
from genzoo import api
from genzoo.core.sample import ImageSample, PointSample, TextSample

OFFLINE = ("embedded", "text", "points")


def builtin_models():
    reg = genzoo.registry()
    return [e.name for e in reg.list() if e.plugin == "built-in"
            and reg.get_dataset(e.dataset["name"]).source in OFFLINE
            and not reg.get_dataset(e.dataset["name"]).location.startswith("kaggle:")]


# a minute of the default suite's three: the quick pixelcnn-md nets sampled pixel by pixel by the
# naive reference sampler; tests/test_pixelcnn_md.py trains, reloads and samples both samplers
SLOW = {"pixelcnn-md", "pixelcnn-md-mnist"}


def every_model():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in builtin_models()]


def payload(sample):
    """What must be identical for the same seed, and what must be checked for range."""
    if isinstance(sample, ImageSample):
        x = sample.images
        assert x.ndim == 4 and torch.isfinite(x).all()
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        return x
    if isinstance(sample, PointSample):
        assert sample.points.ndim == 2 and torch.isfinite(sample.points).all()
        return sample.points
    if isinstance(sample, TextSample):
        assert all(isinstance(t, str) for t in sample.texts)
        return sample.texts
    return sample


@pytest.mark.parametrize("name", every_model())
def test_every_model_trains_saves_reloads_and_samples(name, tmp_path):
    run = api.train(name, "quick", {"train.steps": 2, "batch_size": 8, "sample_every": 0,
                                    "sample_n": 2, "log_every": 1}, out=tmp_path / "run", progress=False)
    logs = [run.metrics()]
    if (run.path / "model_index.json").exists():  # a pipeline: each stage logs in its own folder
        from genzoo.core.run_folder import Run
        logs = [Run(p).metrics() for p in sorted((run.path / "components").iterdir())]
    for log in logs:
        losses = [m["loss"] for m in log if "split" not in m]
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    loaded = api.load_run(run.path)
    for sampler in loaded.family.samplers:
        out = loaded.sample(2, seed=0, sampler=sampler)
        again = loaded.sample(2, seed=0, sampler=sampler)
        assert len(out) == 2
        a, b = payload(out), payload(again)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, sampler
        paths = loaded.write(out, tmp_path / f"s-{sampler}")
        assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_image_grids_are_at_least_512_px_wide(tmp_path):
    from PIL import Image
    from genzoo.core.sample import write
    paths = write(ImageSample(torch.rand(16, 1, 16, 16)), tmp_path / "grid")
    with Image.open(paths[0]) as im:
        assert im.width >= 512 and im.height >= 512
