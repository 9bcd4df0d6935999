"""CUDA checks: run with `pytest -m gpu` on a machine with a GPU (skipped elsewhere)."""
import pytest
import torch

import genzoo
from genzoo import api

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_train_on_cuda_with_autocast_and_sample_on_both_devices(tmp_path):
    run = api.train("pixelcnn", "quick", {"train.steps": 30, "device": "cuda", "sample_every": 0,
                                          "log_every": 10}, out=tmp_path / "run", progress=False)
    losses = [m["loss"] for m in run.metrics() if "split" not in m]
    assert losses[-1] < losses[0]
    cpu = api.load_run(run.path, device="cpu").sample(4, seed=1).images
    gpu = api.load_run(run.path, device="cuda").sample(4, seed=1).images
    assert gpu.shape == cpu.shape == (4, 1, 16, 16)
    # uniforms come from a CPU generator: same seed, same draws; logits differ only by rounding
    assert (gpu.cpu() == cpu).float().mean() > 0.9


def test_cached_equals_naive_on_cuda():
    from genzoo.plugins.pixelcnn import CachedSampler, NaiveSampler
    model = genzoo.create_model("pixelcnn", filters=32, blocks=2).cuda().double().eval()
    a = NaiveSampler().sample(model, 4, torch.Generator().manual_seed(0))
    b = CachedSampler().sample(model, 4, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_resume_on_cuda_matches(tmp_path):
    cfg = {"train.steps": 8, "device": "cuda", "sample_every": 0, "filters": 16, "blocks": 1,
           "amp": "none"}
    full = api.train("pixelcnn", "quick", cfg, out=tmp_path / "a", progress=False)
    half = api.train("pixelcnn", "quick", cfg, out=tmp_path / "b", progress=False, stop_after=4)
    api.resume(half.path, progress=False)
    from genzoo.core.checkpoint import load_tensors
    a, b = load_tensors(full.weights_path), load_tensors(half.weights_path)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def _models():
    return [e.name for e in genzoo.registry().list() if e.source == "built-in"
            and genzoo.registry().get_dataset(e.dataset["name"]).source == "embedded"]


@pytest.mark.parametrize("name", _models())
def test_every_model_trains_with_bf16_autocast_on_cuda(name, tmp_path):
    run = api.train(name, "quick", {"train.steps": 3, "device": "cuda", "sample_every": 0,
                                    "log_every": 1}, out=tmp_path / "run", progress=False)
    assert len([m for m in run.metrics() if "split" not in m]) == 3
    loaded = api.load_run(run.path, device="cuda")
    images = loaded.sample(4, seed=0).images
    assert images.shape[0] == 4 and 0 <= float(images.min()) and float(images.max()) <= 1
