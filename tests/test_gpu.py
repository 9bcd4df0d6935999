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
    return [e.name for e in genzoo.registry().list() if e.plugin == "built-in"
            and genzoo.registry().get_dataset(e.dataset["name"]).source == "embedded"]


@pytest.mark.parametrize("name", _models())
def test_every_model_trains_with_bf16_autocast_on_cuda(name, tmp_path):
    run = api.train(name, "quick", {"train.steps": 3, "device": "cuda", "sample_every": 0,
                                    "log_every": 1}, out=tmp_path / "run", progress=False)
    assert len([m for m in run.metrics() if "split" not in m]) == 3
    loaded = api.load_run(run.path, device="cuda")
    images = loaded.sample(4, seed=0).images
    assert images.shape[0] == 4 and 0 <= float(images.min()) and float(images.max()) <= 1


# -- fast samplers as CUDA graphs (core/graphs) ----------------------------------------------

def _captured_without_syncs(walk, steps):
    """Run a sampler's static step as a graph with every host sync an error; return the runner."""
    import warnings
    from genzoo.core.graphs import StepGraph
    runner = StepGraph(walk.step, "cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failed capture falls back with a warning
            runner.run(steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return runner


def test_pixelcnn_cached_sampler_runs_as_a_cuda_graph_and_draws_the_eager_images():
    from genzoo.plugins.pixelcnn import CachedSampler, NaiveSampler, PixelWalk
    model = genzoo.create_model("pixelcnn", filters=32, blocks=2).cuda().double().eval()
    with torch.no_grad():
        walk = PixelWalk(model, 4, 8, 8, 1.0, None, torch.rand(64, 4, device="cuda"))
        assert _captured_without_syncs(walk, 64).captured
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    graph = CachedSampler(size=8).sample(model, 4, g())
    eager = CachedSampler(size=8, cuda_graph=False).sample(model, 4, g())
    naive = NaiveSampler(size=8).sample(model, 4, g())
    assert torch.equal(graph, eager) and torch.equal(graph, naive)


def test_lstm_stateful_sampler_runs_as_a_cuda_graph_and_draws_the_eager_tokens():
    from genzoo.plugins.lstm import LSTMConfig, LSTMLanguageModel, NaiveSampler, StatefulSampler, TokenWalk
    from genzoo.core.text import Tokenizer
    model = LSTMLanguageModel(LSTMConfig(vocab_size=50, pad_id=None, layers=2)).cuda().double().eval()
    model.tokenizer = Tokenizer("word", ["", "[UNK]"] + [f"w{i}" for i in range(48)])
    with torch.no_grad():
        walk = TokenWalk(model, torch.tensor([[2, 3]], device="cuda"), torch.rand(40, 1, device="cuda"),
                         StatefulSampler(max_new_tokens=40), probs=False)
        assert _captured_without_syncs(walk, 40).captured
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    kw = {"max_new_tokens": 60}
    a = StatefulSampler(**kw).sample(model, 3, g(), prompt="w1 w2").ids
    b = StatefulSampler(cuda_graph=False, **kw).sample(model, 3, g(), prompt="w1 w2").ids
    c = NaiveSampler(**kw).sample(model, 3, g(), prompt="w1 w2").ids
    assert a == b == c


def test_gpt_cached_sampler_runs_as_a_cuda_graph_and_draws_the_eager_tokens():
    from genzoo.plugins.gpt import CachedSampler, DecodeWalk, GPTSamplerOptions, NaiveSampler
    model = genzoo.create_model("gpt", layers=2, heads=2, embed_dim=32, key_dim=16, ff_dim=64,
                                vocab=40, context=16, pad_id=None).cuda().double().eval()
    model.start_counts.fill_(1.0)
    with torch.no_grad():
        walk = DecodeWalk(model, torch.ones(2, 3, dtype=torch.long, device="cuda"),
                          torch.rand(12, 2, device="cuda"), GPTSamplerOptions(max_new_tokens=12),
                          want_attn=False)
        walk.prefill(0, 3)
        walk.sample_next()
        assert _captured_without_syncs(walk, 10).captured  # stays inside the 16-position window
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    kw = {"max_new_tokens": 50, "top_k": 10}  # past the context: refills between graph runs
    a = CachedSampler(**kw).sample(model, 3, g()).ids
    b = CachedSampler(cuda_graph=False, **kw).sample(model, 3, g()).ids
    c = NaiveSampler(**kw).sample(model, 3, g()).ids
    assert a == b == c


def test_pixelcnn_md_cached_sampler_runs_as_cuda_graphs_and_draws_the_eager_images():
    from genzoo.plugins.pixelcnn_md import CachedSampler, NaiveSampler, PixelCNNMD, PixelCNNMDConfig, RowWalk
    model = PixelCNNMD(PixelCNNMDConfig(filters=16, blocks=2, dilations=[1, 2], image_size=8,
                                        channels=3)).cuda().double().eval()
    with torch.no_grad():
        walk = RowWalk(model, 2, 8, 8, 1.0, torch.rand(64, 2, 4, device="cuda"))
        walk.row_step()  # rows and pixels interleave; capture the pixel step within row 0
        assert _captured_without_syncs(type("W", (), {"step": walk.pixel_step})(), 8).captured
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    graph = CachedSampler().sample(model, 2, g())
    eager = CachedSampler(cuda_graph=False).sample(model, 2, g())
    naive = NaiveSampler().sample(model, 2, g())
    assert torch.equal(graph, eager) and torch.equal(graph, naive)


def test_nproc_above_the_gpu_count_is_one_line():
    from click.testing import CliRunner

    from genzoo.cli import cli
    n = torch.cuda.device_count()
    res = CliRunner().invoke(cli, ["train", "pixelcnn", "--device", "cuda", "--nproc", str(n + 1),
                                   "--steps", "1"])
    assert res.exit_code == 1, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert f"--nproc {n + 1} is more than the {n} GPU" in res.output
