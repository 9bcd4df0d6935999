"""GPT: causal attention, the loss on real text, KV-cache sampling equal to the uncached
reference, the run's tokenizer, resume, the attention view and bad input through the CLI."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.core.data import DataConfig, load
from genzoo.nn.transformer import KVCache
from genzoo.plugins.gpt import GPT, CachedSampler, GPTConfig, NaiveSampler
from cli_checks import one_line_error


def small(**kw):
    """A small untrained GPT over 50 tokens, 16 of context."""
    torch.manual_seed(0)
    cfg = dict(vocab=50, context=16, layers=2, heads=2, embed_dim=32, key_dim=None, ff_dim=64,
               dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tiny import tiny  # tests/tiny.py, as the `tiny` fixture (function-scoped) gives it
    out = tmp_path_factory.mktemp("gpt") / "run"  # a word-level GPT on the embedded recipes
    return api.train("gpt", "quick", tiny("gpt", steps=4), out=out, progress=False)


# -- network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_position_sees_only_earlier_tokens(norm):
    model = small(norm=norm)
    x = torch.randint(0, 50, (2, 12))
    base, _ = model(x)
    for t in (0, 5, 11):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % 50
        out, _ = model(changed)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        if t < 11:
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


def test_cached_forward_equals_full_forward():
    model = small().double()
    x = torch.randint(0, 50, (3, 10))
    full, wf = model(x, need_weights=True)
    caches = [KVCache(16) for _ in model.blocks]
    a, _ = model(x[:, :6], caches, 0)
    steps = [model(x[:, t:t + 1], caches, t, need_weights=True) for t in range(6, 10)]
    assert torch.allclose(a, full[:, :6])
    for i, (logits, w) in enumerate(steps):
        assert torch.allclose(logits[:, 0], full[:, 6 + i])
        assert torch.allclose(w[-1][:, :, 0], wf[-1][:, :, 6 + i, : 7 + i])


def test_book_preset_has_the_books_parameter_count_and_nanogpt_flops():
    assert genzoo.create_model("gpt", preset="book").num_params() == 5_809_168  # Keras summary
    baby = genzoo.create_model("gpt-shakespeare", preset="quick")
    assert baby.num_params() - 64 * 128 == 795_904  # nanoGPT: "number of parameters: 0.80M"
    L, H, Q, T = 4, 4, 32, 64  # nanoGPT's estimate_mfu, tied embedding counted once
    assert baby.flops_per_token() == 6 * 795_904 + 12 * L * H * Q * T
    rows = torch.zeros(8, T + 1, dtype=torch.long)  # what zoo bench's MFU divides by
    assert baby.flops({"x": rows}) == baby.flops_per_token(T) * T * 8


def test_loss_ignores_padding_but_learns_the_end_of_text():
    model = small(pad_id=0)
    rows = torch.tensor([[5, 6, 7, 0, 0, 0, 0]])
    x, y = model.targets(rows)
    assert y.tolist() == [[6, 7, 0, -100, -100, -100]]  # the first pad is the end token
    assert model.likelihood_units({"x": rows}) == 3
    longer = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        a, b = model.loss({"x": rows})["loss"], model.loss({"x": longer})["loss"]
    assert torch.allclose(a, b)
    lp = model.log_prob({"x": rows})
    assert math.isclose(float(-lp.sum() / 3), float(a), rel_tol=1e-5)


def test_loss_falls_on_real_text():
    data = load(DataConfig(name="tinyshakespeare", seq_len=32), "train")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**GPT.config_from_data(data), layers=1, heads=2, embed_dim=48,
                          key_dim=None, ff_dim=96, norm="pre", dropout=0.0)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        batch = {"x": data.rows[torch.randint(len(data), (16,), generator=g)]}
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > math.log(65) - 0.3  # starts near uniform over 65 characters
    assert sum(losses[-10:]) / 10 < 2.9  # unigram statistics and beyond (uniform: 4.17)


# -- sampling --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cached_and_uncached_sampling_draw_the_same_tokens(dtype):
    model = small(pad_id=None).to(dtype)
    model.start_counts.fill_(1.0)
    opts = {"max_new_tokens": 40, "temperature": 1.3, "top_k": 20}  # 41 tokens > context 16
    a = CachedSampler(**opts).sample(model, 3, torch.Generator().manual_seed(7), show=("attention",))
    b = NaiveSampler(**opts).sample(model, 3, torch.Generator().manual_seed(7), show=("attention",))
    c = CachedSampler(**opts).sample(model, 3, torch.Generator().manual_seed(8))
    assert len(a.ids[0]) == 41
    assert a.ids == b.ids and a.ids != c.ids
    assert a.extras["attention"] == b.extras["attention"]


def test_end_of_text_stops_and_pads():
    model = small(pad_id=0)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[0] = 50.0  # the end token is certain
    model.start_counts[3] = 1.0
    s = CachedSampler(max_new_tokens=30).sample(model, 2, torch.Generator().manual_seed(0))
    assert s.ids == [[3, 0], [3, 0]]


def test_cached_sampler_stops_soon_after_every_row_has_ended(monkeypatch):
    from genzoo.plugins import gpt
    model = small(pad_id=0)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[0] = 50.0  # the end token is certain
    model.start_counts[3] = 1.0
    steps = []
    step = gpt.DecodeWalk.step
    monkeypatch.setattr(gpt.DecodeWalk, "step", lambda self: (steps.append(1), step(self)))
    s = CachedSampler(max_new_tokens=200).sample(model, 2, torch.Generator().manual_seed(0))
    assert s.ids == [[3, 0], [3, 0]]
    assert len(steps) <= CachedSampler.check_every  # a look at ended rows every 16 tokens


def test_loaded_run_decodes_its_own_samples_with_the_same_seed(trained):
    data = load(DataConfig(name="recipes-pd", seq_len=24, vocab_size=500), "train")
    loaded = api.load_run(trained.path)
    assert loaded.model.tokenizer == data.tokenizer  # round trip through artifacts.json
    assert loaded.model.start_counts.sum() == len(data)
    a = loaded.sample(3, seed=1, inputs={"prompt": "Recipe for"}, max_new_tokens=12)
    b = loaded.sample(3, seed=1, inputs={"prompt": "Recipe for"}, max_new_tokens=12)
    c = loaded.sample(3, seed=2, inputs={"prompt": "Recipe for"}, max_new_tokens=12)
    assert a.texts == b.texts and a.texts != c.texts
    assert all(t.startswith("recipe for") for t in a.texts)
    assert [loaded.model.tokenizer.decode(i) for i in a.ids] == a.texts
    free = loaded.sample(2, seed=0)  # no prompt: rows start as training rows do ("recipe")
    assert all(t.startswith("recipe") for t in free.texts)


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny):
    cfg = tiny("gpt", steps=8, **{"train.lr": 3e-3, "train.schedule": "cosine",
                                  "train.weight_decay": 0.1})
    full = api.train("gpt", "quick", cfg, out=tmp_path / "full", progress=False)
    half = api.train("gpt", "quick", cfg, out=tmp_path / "half", progress=False, stop_after=4)
    api.resume(half.path, progress=False)
    a = ckpt.load_tensors(full.path / "model.safetensors")
    b = ckpt.load_tensors(half.path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((half.path / "artifacts.json").read_text()) == \
        json.loads((full.path / "artifacts.json").read_text())


# -- the CLI -----------------------------------------------------------------------------------

def test_show_attention_prints_and_writes_the_view(trained, tmp_path):
    res = CliRunner().invoke(cli, ["sample", str(trained.path), "--prompt", "recipe for", "--n", "2",
                                   "--set", "max_new_tokens=6", "--show-attention",
                                   "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "--- attention ---" in res.output and "h1:" in res.output and "h2:" in res.output
    assert (tmp_path / "s.txt").exists() and (tmp_path / "s-attention.txt").exists()
    assert (tmp_path / "s-attention-map.png").exists()


@pytest.mark.parametrize("args,needle", [
    (["--prompt", " ".join(["recipe"] * 30)], "context is 24"),
    (["--set", "temperature=0"], "temperature must be > 0"),
    (["--set", "temperature=-1"], "temperature must be > 0"),
    (["--set", "top_k=501"], "top_k 501 is larger than the vocabulary"),
    (["--prompt", "qwzx vbnmp"], "only unknown words"),
])
def test_bad_sampling_input_is_one_line(trained, args, needle):
    res = CliRunner().invoke(cli, ["sample", str(trained.path), "--n", "1", *args])
    one_line_error(res, needle)


def test_bad_model_config_is_one_line():
    res = CliRunner().invoke(cli, ["train", "gpt", "--set", "heads=3", "--set", "key_dim=none",
                                   "--steps", "1"])
    one_line_error(res, "not divisible by heads")
    res = CliRunner().invoke(cli, ["train", "gpt", "--set", "data.seq_len=100", "--steps", "1"])
    one_line_error(res, "--set context=100")


def test_tied_character_model_saves_loads_and_continues_a_prompt(tmp_path, tiny):
    run = api.train("gpt-shakespeare", "quick", tiny("gpt-shakespeare", steps=2),
                    out=tmp_path / "run", progress=False)
    assert "head.weight" not in ckpt.load_tensors(run.path / "model.safetensors")  # saved once
    loaded = api.load_run(run.path)
    assert loaded.model.head.weight is loaded.model.token_embedding.weight
    s = loaded.sample(2, seed=0, inputs={"prompt": "ROMEO:"}, max_new_tokens=20)
    assert all(t.startswith("ROMEO:") and len(t) == 26 for t in s.texts)
    res = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "1", "--prompt", "naïve ~"])
    one_line_error(res, "outside the vocabulary")

