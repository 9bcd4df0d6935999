"""LSTM family: the loss learns, samplers agree, seeds fix text, the tokenizer travels with the run,
resume is bit-exact, and bad input fails in one line through the CLI."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.core.text import TextData, Tokenizer
from genzoo.plugins.lstm import LSTMConfig, LSTMLanguageModel, NaiveSampler, StatefulSampler

def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tiny import tiny  # tests/tiny.py, as the `tiny` fixture (function-scoped) gives it
    out = tmp_path_factory.mktemp("lstm") / "run"  # word level, on the embedded recipes
    return api.train("lstm", "quick", tiny("lstm", steps=6), out=out, progress=False)


def small(cell="lstm", layers=1, level="word"):
    """A small untrained model with the tokenizer of two recipes."""
    texts = ["recipe for toast | put bread in the toaster . | butter it .",
             "recipe for tea | boil water . | pour it on the tea , wait ."]
    tok = Tokenizer.build(texts, level)
    rows = torch.zeros(len(texts), 30, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = tok.encode(t)[:30]
        rows[i, :len(ids)] = torch.tensor(ids)
    data = TextData(rows, tok)
    torch.manual_seed(0)
    model = LSTMLanguageModel(LSTMConfig(embedding_dim=8, hidden_size=16, layers=layers, cell=cell,
                                         **LSTMLanguageModel.config_from_data(data)))
    model.setup(data)
    return model.eval(), data


def test_loss_falls_on_real_recipes(tmp_path, tiny):
    r = api.train("lstm", "quick", tiny("lstm", steps=30, **{
        "train.lr": 0.01, "train.schedule": "constant", "model.hidden_size": 64,
        "data.seq_len": 20}), out=tmp_path / "r", progress=False)
    losses = [m["loss"] for m in r.metrics() if "split" not in m]
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.8, losses  # ~6 -> ~4.5 nats/token


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("gru", 1), ("lstm", 2)])
@pytest.mark.parametrize("prompt", [None, "recipe for tea"])
def test_stateful_and_naive_samplers_draw_the_same_tokens(cell, layers, prompt):
    model, _ = small(cell, layers)
    model = model.double()
    kw = {"max_new_tokens": 25, "temperature": 1.5}  # hot: long samples before the end token
    a = StatefulSampler(**kw).sample(model, 4, torch.Generator().manual_seed(3), prompt=prompt)
    b = NaiveSampler(**kw).sample(model, 4, torch.Generator().manual_seed(3), prompt=prompt)
    c = StatefulSampler(**kw).sample(model, 4, torch.Generator().manual_seed(4), prompt=prompt)
    assert a.ids == b.ids and a.texts == b.texts
    assert a.ids != c.ids
    if prompt:
        assert all(t.startswith("recipe for tea") for t in a.texts)


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("gru", 2)])
def test_one_step_cell_equals_the_fused_recurrence(cell, layers):
    model, _ = small(cell, layers)
    ids = torch.randint(0, model.config.vocab_size, (3, 6))
    with torch.no_grad():
        full, _ = model(ids)
        state, steps = None, []
        for t in range(6):
            logits, state = model.step(ids[:, t], state)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


def test_samples_stop_at_the_end_token_and_respect_max_new_tokens():
    model, _ = small()
    s = StatefulSampler(max_new_tokens=7).sample(model, 8, torch.Generator().manual_seed(0),
                                                 prompt="recipe for")
    assert all(len(ids) <= 2 + 7 and 0 not in ids for ids in s.ids)
    greedy = StatefulSampler(top_k=1).sample(model, 2, torch.Generator().manual_seed(0), prompt="tea")
    assert greedy.ids[0] == greedy.ids[1]  # top_k=1: no randomness left


def test_same_seed_same_text_through_a_loaded_run(run):
    loaded = api.load_run(run.path)
    a = loaded.sample(3, seed=5, inputs={"prompt": "recipe for"}, max_new_tokens=30)
    b = loaded.sample(3, seed=5, inputs={"prompt": "recipe for"}, max_new_tokens=30)
    c = loaded.sample(3, seed=6, inputs={"prompt": "recipe for"}, max_new_tokens=30)
    assert a.texts == b.texts and a.texts != c.texts
    assert a.prompt == "recipe for" and all(t.startswith("recipe for") for t in a.texts)
    for sampler in ("stateful", "naive"):  # no prompt: starts as every recipe does
        s = loaded.sample(2, seed=0, sampler=sampler, max_new_tokens=10)
        assert all(t.startswith("recipe") for t in s.texts)


def test_tokenizer_travels_with_the_run(run, monkeypatch):
    data = api.load_run(run.path).data("train")
    saved = json.loads((run.path / ckpt.ARTIFACT_JSON).read_text())["artifacts"]["tokenizer"]
    assert Tokenizer.from_json(saved) == data.tokenizer and len(data.tokenizer) == 300

    def no_data(*a, **k):
        raise AssertionError("sampling must not need the data")

    monkeypatch.setattr("genzoo.core.data.load", no_data)
    monkeypatch.setattr("genzoo.core.runner.load_data", no_data)
    loaded = api.load_run(run.path)
    assert loaded.model.tokenizer == data.tokenizer
    s = loaded.sample(2, seed=0, inputs={"prompt": "recipe for"}, max_new_tokens=12)
    assert s.ids[0][:2] == data.tokenizer.encode("recipe for")
    assert s.texts[0] == data.tokenizer.decode(s.ids[0])


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny):
    cfg = tiny("lstm", steps=8, **{"train.lr": 3e-3, "train.schedule": "cosine"})
    full = api.train("lstm", "quick", cfg, out=tmp_path / "full", progress=False)
    half = api.train("lstm", "quick", cfg, out=tmp_path / "half", progress=False, stop_after=4)
    api.resume(half.path, progress=False)
    a, b = ckpt.load_tensors(full.path / ckpt.WEIGHTS), ckpt.load_tensors(half.path / ckpt.WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert api.load_run(half.path).model.tokenizer == api.load_run(full.path).model.tokenizer


def test_log_prob_counts_tokens_and_the_end_but_not_padding():
    model, data = small()
    batch = data.batch(torch.arange(2))
    lp = model.log_prob(batch)
    units = model.likelihood_units(batch)
    real = int((batch["x"] != 0).sum()) - 2  # the first token of a row is not predicted
    assert lp.shape == (2,) and units == real + 2  # + one end token per recipe
    with torch.no_grad():
        loss = model.loss(batch)["loss"]
    assert math.isclose(float(-lp.sum() / units), float(loss), rel_tol=1e-5)
    longer = {"x": torch.cat([batch["x"], torch.zeros(2, 10, dtype=torch.long)], 1)}
    assert torch.allclose(model.log_prob(longer), lp, atol=1e-5)  # more padding changes nothing


def test_hidden_states_are_not_image_features():
    model, _ = small(layers=2)
    h, (hn, cn) = model.hidden_states(torch.tensor([[2, 3, 4]]))
    assert h.shape == (1, 3, 16) and hn.shape == cn.shape == (2, 1, 16)
    assert not LSTMLanguageModel.has_features()  # FID never takes a language model for a CNN


def test_book_preset_has_the_books_parameter_count():
    # Keras' LSTM has one bias vector per gate, PyTorch's two: +4 * 128 over the book's 2,407,248
    assert genzoo.create_model("lstm", preset="book").num_params() == 2_407_248 + 512


@pytest.mark.parametrize("args,message", [
    (["--prompt", "zyzzyva qwxp"], "only unknown words"),
    (["--set", "temperature=0"], "temperature must be > 0"),
    (["--set", "top_k=100000"], "larger than the vocabulary (300 tokens)"),
    (["--label", "3"], "input 'label' given, but sampler 'stateful' of family 'lstm' takes inputs: prompt"),
])
def test_bad_sampling_input_fails_in_one_line(run, args, message):
    res = invoke("sample", run.path, "--n", 1, *args)
    assert res.exit_code != 0
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_an_image_sampler_refuses_a_prompt(tmp_path, tiny):
    img = api.train("pixelcnn", "quick", tiny("pixelcnn", steps=1, **{"train.batch_size": 4}),
                    out=tmp_path / "img", progress=False)
    res = invoke("sample", img.path, "--n", 1, "--prompt", "recipe for")
    assert res.exit_code != 0 and "input 'prompt' given" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_sample_show_probs_prints_the_tables(run, tmp_path):
    res = invoke("sample", run.path, "--n", 2, "--prompt", "recipe for", "--show-probs",
                 "--set", "max_new_tokens=5", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert "--- probs ---" in res.output and "sample 0, prompt 'recipe for'" in res.output
    steps = [line for line in res.output.splitlines() if line.strip()[:1].isdigit()]
    assert 2 <= len(steps) <= 10 and all(line.count(".") >= 5 for line in steps)
    assert (tmp_path / "s-probs.txt").exists() and (tmp_path / "s.txt").exists()
