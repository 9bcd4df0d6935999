"""Static sampler steps (core/graphs): what CUDA-graph capture needs, checked on the CPU.

A step qualifies for capture when it never reads the device from the host. On the ``meta``
device tensors have no data, so any such read (``.item()``, ``bool(t)``, a data-dependent shape)
raises there: running a step on meta proves it static without a GPU. The capture itself is
checked in tests/test_gpu.py."""
import pytest
import torch
import torch.nn.functional as F

import genzoo
from genzoo.core.graphs import StepGraph, run_steps, window_index
from genzoo.core.sampler import categorical, categorical_from_uniform, uniforms


def test_host_reads_fail_on_meta_so_the_check_below_means_something():
    t = torch.zeros(3, device="meta")
    with pytest.raises(Exception):
        bool(t.sum() > 0)
    with pytest.raises(Exception):
        t.nonzero()


def test_step_graph_runs_eagerly_off_cuda():
    calls = []
    runner = run_steps(lambda: calls.append(1), 5, "cpu")
    runner.run(3)
    assert len(calls) == 8 and runner.calls == 8 and not runner.captured


@pytest.mark.parametrize("kh,kw,dilation", [(3, 3, (1, 1)), (7, 7, (1, 1)), (2, 3, (2, 2)), (2, 1, (1, 4))])
def test_window_index_picks_the_same_windows_as_a_convolution(kh, kw, dilation):
    torch.manual_seed(0)
    h, w = 5, 6
    ph, pw = (kh - 1) * dilation[0], (kw - 1) * dilation[1]
    padded = torch.randn(2, 3, h + ph, w + pw)
    weight = torch.randn(4, 3, kh, kw)
    want = F.conv2d(padded, weight, dilation=dilation)  # (2, 4, h, w)
    idx = window_index(h, w, kh, kw, dilation)
    windows = padded.flatten(2)[:, :, idx]  # (2, 3, h*w, kh*kw)
    got = torch.einsum("bcpk,ock->bop", windows, weight.flatten(2)).view(2, 4, h, w)
    assert torch.allclose(got, want, atol=1e-5)


def test_uniforms_drawn_up_front_equal_those_drawn_step_by_step():
    g = torch.Generator().manual_seed(3)
    one_by_one = torch.stack([torch.rand(4, generator=g) for _ in range(50)])
    assert torch.equal(uniforms(torch.Generator().manual_seed(3), (50, 4), "cpu"), one_by_one)
    logits = torch.randn(4, 9)
    a = categorical(logits, torch.Generator().manual_seed(5))
    b = categorical_from_uniform(logits, uniforms(torch.Generator().manual_seed(5), (4,), "cpu"))
    assert torch.equal(a, b)


def test_pixelcnn_step_is_static():
    from genzoo.plugins.pixelcnn import PixelWalk
    model = genzoo.create_model("pixelcnn", filters=8, blocks=2).to("meta").eval()
    walk = PixelWalk(model, 2, 6, 6, 1.0, 3, torch.rand(36, 2).to("meta"))
    with torch.no_grad():
        walk.step()
        walk.step()
    assert walk.levels.shape == (2, 36)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_step_is_static(cell):
    from genzoo.plugins.lstm import LSTMConfig, LSTMLanguageModel, StatefulSampler, TokenWalk
    model = LSTMLanguageModel(LSTMConfig(vocab_size=20, embedding_dim=4, hidden_size=8, cell=cell,
                                         layers=2)).eval()
    sampler = StatefulSampler(max_new_tokens=5, top_k=4)
    with torch.no_grad():
        prompt = torch.tensor([[3, 4], [5, 6]])
        walk = TokenWalk(model, prompt, torch.rand(5, 2), sampler, probs=True)
        meta = TokenWalk.__new__(TokenWalk)  # the same walk, every tensor moved to meta
        model.to("meta")
        meta.__dict__ = {k: (v.to("meta") if isinstance(v, torch.Tensor) else
                             tuple(t.to("meta") for t in v) if isinstance(v, tuple) else v)
                         for k, v in walk.__dict__.items()}
        meta.step()
        meta.step()


def test_gpt_step_is_static():
    from genzoo.plugins.gpt import DecodeWalk, GPTSamplerOptions
    model = genzoo.create_model("gpt", layers=2, heads=2, embed_dim=16, key_dim=8, ff_dim=32,
                                vocab=30, context=12, pad_id=0).to("meta").eval()
    o = GPTSamplerOptions(max_new_tokens=6, top_k=5)
    walk = DecodeWalk(model, torch.ones(2, 3, dtype=torch.long, device="meta"),
                      torch.rand(6, 2).to("meta"), o, want_attn=False)
    with torch.no_grad():
        walk.prefill(0, 3)
        walk.sample_next()
        walk.step()
        walk.step()


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_md_row_and_pixel_steps_are_static(channels):
    from genzoo.plugins.pixelcnn_md import PixelCNNMD, PixelCNNMDConfig, RowWalk
    model = PixelCNNMD(PixelCNNMDConfig(filters=8, blocks=2, dilations=[1, 2], image_size=6,
                                        channels=channels)).to("meta").eval()
    walk = RowWalk(model, 2, 6, 6, 1.0, torch.rand(36, 2, 1 + channels).to("meta"))
    with torch.no_grad():
        for _ in range(2):
            walk.row_step()
            walk.pixel_step()
            walk.pixel_step()
    assert walk.levels.shape == (2, channels, 36)
