"""Registry-driven smoke test (timm's pattern): every built-in model trains a couple of steps
with its quick preset, saves a run, reloads it and samples with every sampler of its family."""
import pytest
import torch

import genzoo
from genzoo import api


def builtin_models():
    return [e.name for e in genzoo.registry().list() if e.source == "built-in"
            and genzoo.registry().get_dataset(e.dataset["name"]).source == "embedded"]


@pytest.mark.parametrize("name", builtin_models())
def test_every_model_trains_saves_reloads_and_samples(name, tmp_path):
    run = api.train(name, "quick", {"train.steps": 2, "batch_size": 8, "sample_every": 0,
                                    "sample_n": 2, "log_every": 1}, out=tmp_path / "run", progress=False)
    losses = [m["loss"] for m in run.metrics() if "split" not in m]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    loaded = api.load_run(run.path)
    for sampler in loaded.family.samplers:
        images = loaded.sample(2, seed=0, sampler=sampler)
        again = loaded.sample(2, seed=0, sampler=sampler)
        assert torch.equal(images, again), sampler  # a seed fixes the samples
        assert images.shape[0] == 2 and images.ndim == 4
        assert torch.isfinite(images).all()
        assert 0 <= float(images.min()) and float(images.max()) <= 1
