"""Resources stay bounded (issue 21, section 1) and numbers that overflow give one line (section 6).

- ``zoo sample --n`` draws in batches (``draw_chunks``) and writes a view of the first 64 plus
  an archive of all, batch by batch: memory is flat in n, and n=16 is bit-identical to one call;
- integer settings take integer literals only; sizes have upper bounds; floats are finite;
- a token loop draws its uniforms a chunk at a time, the same numbers as up front;
- a rendered WAV is at most ``MAX_SECONDS`` long.
"""
import gc
import json
import shutil
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import genzoo
from cli_checks import one_line_error
from genzoo.cli import cli
from genzoo.core import sampler as samplerlib
from genzoo.core.config import INT_MAX, build, coerce
from genzoo.core.sample import (ImageSample, PointSample, TextSample, concat, head, write,
                                write_stream)
from genzoo.core.sampler import (DEFAULT_BATCH, MAX_NEW_TOKENS, Sampler, TokenOptions, draw,
                                 draw_chunks, uniforms)
from genzoo.errors import ConfigError
from genzoo.nn.autoregressive import generate, run_token_steps
from test_nn_autoregressive import BigramWalk  # the static bigram walk those tests use

RUNS = Path(__file__).parent / "data" / "runs-v2"


@pytest.fixture
def old_run(tmp_path):
    """A copy of one of the tiny pre-v3 runs (loading may take a lock: never in the checkout)."""
    def copy(name):
        shutil.copytree(RUNS / name, tmp_path / name)
        return tmp_path / name
    return copy


# -- sampling in batches --------------------------------------------------------------------------

class Model(torch.nn.Module):
    modality = "image"


class Counting(Sampler):
    """Images whose pixels are the generator's uniforms; records every batch size it is asked."""
    name = "counting"

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = []

    def sample(self, model, n, generator, **_):
        self.calls.append(n)
        return torch.rand(n, 1, 2, 2, generator=generator)


@pytest.mark.parametrize("n,batch,calls", [
    (16, None, [16]), (256, None, [256]), (1000, None, [256, 256, 256, 232]),
    (1000, 300, [300, 300, 300, 100]), (5, 1, [1] * 5)])
def test_the_sampler_is_never_asked_for_more_than_a_batch(n, batch, calls):
    s = Counting()
    out = draw(Model(), s, n, torch.Generator().manual_seed(0), batch_size=batch)
    assert s.calls == calls and len(out) == n


def test_batches_are_the_samples_of_one_call_where_the_stream_allows():
    """torch.rand on a CPU generator gives one stream whatever the pieces: batches joined in
    order equal one call (a sampler with randn may differ past one batch: a seed still fixes
    them). n <= the batch is one call, exactly as before batching."""
    one = Counting().sample(Model(), 1000, torch.Generator().manual_seed(3))
    for batch in (None, 7, 1000):
        got = draw(Model(), Counting(), 1000, torch.Generator().manual_seed(3), batch_size=batch)
        assert torch.equal(got.images, one), batch
    a = draw(Model(), Counting(), 16, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, Counting().sample(Model(), 16, torch.Generator().manual_seed(3)))


def test_n16_on_an_old_run_is_one_call_and_bit_identical(old_run):
    """The default path: 16 samples are one batch, so exactly what the sampler draws for 16."""
    loaded = genzoo.load_run(str(old_run("dcgan")))
    got = loaded.sample(16, seed=3)
    sampler = loaded.sampler()
    with torch.no_grad():
        want = sampler.sample(loaded.model.eval(), 16, torch.Generator().manual_seed(3))
    assert torch.equal(got.images, want.float())
    a, b = loaded.sample(600, seed=3, batch_size=64), loaded.sample(600, seed=3, batch_size=64)
    assert len(a) == 600 and torch.equal(a.images, b.images)  # a seed fixes batched samples too
    assert torch.equal(loaded.sample(600, seed=3).images[:16], got.images)  # same first batch start


def test_token_samplers_shrink_their_batch_as_rows_grow():
    class Tokens(Counting):
        Options = TokenOptions
    assert samplerlib.batch_size_for(Model(), Tokens()) == DEFAULT_BATCH
    long = Tokens(max_new_tokens=MAX_NEW_TOKENS)
    limit = samplerlib.TOKEN_BUDGET // MAX_NEW_TOKENS
    assert samplerlib.batch_size_for(Model(), long) == limit >= 16  # n=16 stays one batch
    assert samplerlib.batch_size_for(Model(), long, batch_size=4096) == limit
    draw(Model(), long, 100, torch.Generator())
    assert max(long.calls) == limit


@pytest.mark.parametrize("bad", [0, -1, samplerlib.MAX_BATCH + 1, True, 2.0])
def test_a_batch_size_out_of_range_is_one_line(bad):
    with pytest.raises(ConfigError, match="--batch-size. must be an integer from 1 to 16384"):
        draw(Model(), Counting(), 4, torch.Generator(), batch_size=bad)


def test_the_number_of_samples_is_bounded():
    for n in (0, samplerlib.MAX_SAMPLES + 1):
        with pytest.raises(ConfigError, match="number of samples must be from 1 to 10_000_000"):
            draw_chunks(Model(), Counting(), n, torch.Generator())


# -- writers: a view of the first 64, an archive of all, batch by batch ----------------------------

def test_writer_holds_a_batch_at_a_time_and_archives_every_sample(tmp_path):
    """Flat memory: while the archive fills, batches already written are freed (at most the
    view's batch and the one being written are alive)."""
    alive = []  # weak references to every batch's pixels
    most = 0
    g = torch.Generator().manual_seed(0)
    batches = []

    def produce():
        nonlocal most
        for _ in range(40):
            gc.collect()
            most = max(most, sum(r() is not None for r in alive))
            part = ImageSample(torch.rand(50, 3, 4, 4, generator=g))
            batches.append(part.images.clone())
            alive.append(weakref.ref(part.images))
            yield part
            del part
    paths, view = write_stream(produce(), tmp_path / "s", 2000)
    assert most <= 3, most
    assert [p.name for p in paths] == ["s.png", "s.npy"] and len(view) == 64
    stored = np.load(tmp_path / "s.npy")
    assert stored.shape == (2000, 4, 4, 3) and stored.dtype == np.uint8
    want = torch.cat(batches).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(stored, want.numpy())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_small_samples_write_exactly_what_they_did(tmp_path):
    """n <= 64: the view alone, no archive (the trainer's grids and zoo sample's default)."""
    assert [p.name for p in write(ImageSample(torch.rand(64, 1, 8, 8)), tmp_path / "a")] == \
        ["a.png"]
    t = TextSample(["x", "y"], [[1], [2]], "p")
    assert [p.name for p in write(t, tmp_path / "t")] == ["t.txt", "t.jsonl"]


def test_text_keeps_every_row_in_jsonl_and_the_first_64_in_txt(tmp_path):
    texts = [f"text {i}" for i in range(150)]
    parts = [TextSample(texts[i:i + 40], [[i]] * len(texts[i:i + 40]), "p")
             for i in range(0, 150, 40)]
    paths, view = write_stream(iter(parts), tmp_path / "t", 150)
    assert [p.name for p in paths] == ["t.txt", "t.jsonl"] and len(view) == 64
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["i"] for r in rows] == list(range(150)) and rows[149]["text"] == "text 149"
    assert (tmp_path / "t.txt").read_text().count("text ") == 64


def test_a_failed_batch_leaves_no_archive_and_no_temporary(tmp_path):
    def produce():
        for _ in range(3):
            yield ImageSample(torch.rand(50, 1, 4, 4))
        raise RuntimeError("sampler died")
    with pytest.raises(RuntimeError, match="sampler died"):
        write_stream(produce(), tmp_path / "s", 500)
    assert list(tmp_path.iterdir()) == []


def test_concat_and_head_keep_shared_fields():
    a, b = TextSample(["a"], [[1]], "p"), TextSample(["b", "c"], [[2], [3]], "p")
    ab = concat([a, b])
    assert ab.texts == ["a", "b", "c"] and ab.ids == [[1], [2], [3]] and ab.prompt == "p"
    assert head(ab, 2).texts == ["a", "b"] and head(ab, 2).prompt == "p"
    p = concat([PointSample(torch.zeros(2, 2)), PointSample(torch.ones(3, 2))])
    assert p.points.shape == (5, 2)

    @dataclass
    class Tracks(PointSample):  # a plugin's kind: a shared list as long as a batch stays shared
        names: list = None
    t = concat([Tracks(torch.zeros(2, 2), names=["x", "y"]), Tracks(torch.ones(2, 2), names=["x", "y"])])
    assert t.names == ["x", "y"] and len(t) == 4


def test_zoo_sample_batch_size_through_the_cli(old_run, tmp_path):
    run = str(old_run("dcgan"))
    r = CliRunner()
    res = r.invoke(cli, ["sample", run, "--n", "100", "--batch-size", "30",
                         "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npy").shape == (100, 16, 16, 1)
    one_line_error(r.invoke(cli, ["sample", run, "--batch-size", "0"]), "--batch-size", "16384")
    one_line_error(r.invoke(cli, ["sample", run, "--batch-size", "1e3"]), "--batch-size")


@pytest.mark.slow
def test_peak_memory_is_flat_in_n(old_run, tmp_path):
    """Peak RSS of `zoo sample` for 20,000 samples is that of 1,000 (within 60 MB)."""
    import subprocess
    run = str(old_run("dcgan"))
    probe = ("import resource, sys\nfrom genzoo.cli import cli\n"
             "try:\n    cli(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = []
    for n in (1000, 20000):
        out = subprocess.run([sys.executable, "-c", probe, "sample", run, "--n", str(n),
                              "--out", str(tmp_path / f"s{n}")], capture_output=True, text=True,
                             timeout=600)
        line = [x for x in out.stdout.splitlines() if x.startswith("RSS")]
        assert line, out.stdout + out.stderr
        peaks.append(int(line[0].split()[1]))
    assert peaks[1] - peaks[0] < 60_000, peaks  # kB


# -- integer literals, bounds and overflow --------------------------------------------------------

@dataclass
class Sizes:
    steps: int = 1
    lr: float = 1e-3
    top_k: int | None = None


@settings(max_examples=25, deadline=None)
@given(st.integers(-INT_MAX, INT_MAX), st.booleans())
def test_integer_literals_parse_exactly(i, underscores):
    text = f"{i:_}" if underscores else str(i)
    assert coerce("steps", text, int) == i
    assert build(Sizes, {"top_k": text}).top_k == i


@settings(max_examples=25, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # 2.0, 1e+16, -0.5
    st.integers(0, 99).map(lambda k: f"1e{k}"),
    st.sampled_from(["True", "false", "0x10", "1.", ".5", "1e9", "٣", "", "1__0", "_1"])))
def test_anything_but_an_integer_literal_is_refused(text):
    with pytest.raises(ConfigError, match="expected an integer literal"):
        coerce("max_new_tokens", text, int)


@pytest.mark.parametrize("value", [2.0, True, 1e9])
def test_python_floats_and_bools_are_not_integers(value):
    with pytest.raises(ConfigError, match="expected an integer literal"):
        build(Sizes, {"steps": value})


@settings(max_examples=25, deadline=None)
@given(st.integers(INT_MAX + 1, 10 ** 6000), st.sampled_from([int, float]), st.booleans())
def test_numbers_that_overflow_are_one_line(i, kind, as_text):
    if kind is float and i < 10 ** 309:
        i *= 10 ** 309  # a float holds up to 1.8e308
    value = str(i) if as_text and i.bit_length() < 14_000 else i
    with pytest.raises(ConfigError, match="number out of range") as e:
        coerce("steps", value, kind)
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


@pytest.mark.parametrize("text,why", [("1e999", "number out of range"), ("-1e400", "number out of range"),
                                      ("inf", "finite"), ("nan", "not nan")])
def test_floats_are_finite(text, why):
    with pytest.raises(ConfigError, match=why):
        build(Sizes, {"lr": text})


def test_max_new_tokens_is_bounded():
    assert TokenOptions(max_new_tokens=MAX_NEW_TOKENS).max_new_tokens == MAX_NEW_TOKENS
    for bad in (0, MAX_NEW_TOKENS + 1):
        with pytest.raises(ValueError, match="max_new_tokens must be from 1 to 100_000"):
            TokenOptions(max_new_tokens=bad)


def test_overflow_and_sizes_through_the_cli_are_one_line(old_run):
    r = CliRunner()
    run = str(old_run("gpt"))
    one_line_error(r.invoke(cli, ["sample", run, "--set", "max_new_tokens=1e9"]),
                   "max_new_tokens", "integer literal")
    one_line_error(r.invoke(cli, ["sample", run, "--set", "max_new_tokens=2.0"]), "max_new_tokens")
    one_line_error(r.invoke(cli, ["sample", run, "--set", "max_new_tokens=1000000"]),
                   "max_new_tokens must be from 1 to 100_000")
    one_line_error(r.invoke(cli, ["sample", run, "--set", "temperature=1e999"]),
                   "temperature", "number out of range")
    one_line_error(r.invoke(cli, ["sample", run, "--set", "top_k=" + "9" * 5000]),
                   "top_k", "number out of range")
    one_line_error(r.invoke(cli, ["train", "dcgan", "--set", "lr=1e999"]), "lr", "out of range")
    one_line_error(r.invoke(cli, ["train", "dcgan", "--set", "train.steps=" + "1" + "0" * 30]),
                   "steps", "out of range")
    one_line_error(r.invoke(cli, ["train", "dcgan", "--set", "train.steps=1e3"]),
                   "steps", "integer literal")


# -- token loops draw their uniforms per chunk -----------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(1, 5),
       st.integers(0, 2 ** 32))
def test_uniforms_drawn_in_pieces_are_those_drawn_at_once(pieces, n, seed):
    whole = uniforms(torch.Generator().manual_seed(seed), (sum(pieces), n), "cpu")
    g = torch.Generator().manual_seed(seed)
    parts = torch.cat([uniforms(g, (k, n), "cpu") for k in pieces])
    assert torch.equal(parts, whole)


@pytest.mark.parametrize("end", [None, 0])
@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_token_steps_drawn_per_chunk_make_the_tokens_of_uniforms_up_front(chunk, end):
    V, T = 12, 60
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(1)) * 2
    if end is not None:
        table[:, end] -= 2.5  # rows end now and then
    prompt = torch.tensor([[1, 2], [3, 4], [5, 5]])
    kw = {"temperature": 1.1, "top_k": 8, "end": end}
    before = BigramWalk(table, prompt, uniforms(torch.Generator().manual_seed(9), (T, 3), "cpu"),
                        **kw)
    made_before = run_token_steps(lambda m, k: [before.step() for _ in range(k)] and k, T, 8,
                                  before.done if end is not None else None)
    g = torch.Generator().manual_seed(9)
    walk = BigramWalk(table, prompt, T, generator=g, chunk=chunk, **kw)
    sizes = []

    def advance(made, most):
        sizes.append(most)
        for _ in range(most):
            walk.step()
        return most
    made = run_token_steps(advance, T, 8, walk.done if end is not None else None, walk)
    assert walk.u.shape[0] == min(chunk, T)  # the buffer, never T rows
    L = 2 + min(made, made_before)
    assert torch.equal(walk.tokens[:, :L], before.tokens[:, :L])
    want = generate(prompt, lambda seq: table[seq[:, -1]], torch.Generator().manual_seed(9), T,
                    **kw)
    assert torch.equal(walk.tokens[:, :want.shape[1]], want)
    assert all(s <= chunk for s in sizes)


def test_gpt_cached_sampler_crosses_uniform_chunks_like_the_reference(old_run):
    """Past 256 tokens the cached sampler has drawn its second chunk of uniforms: it still
    draws what nanoGPT's loop (one draw per step) draws."""
    loaded = genzoo.load_run(str(old_run("gpt")))
    opts = {"max_new_tokens": 700, "temperature": 0.7}
    cached = loaded.sample(3, seed=11, sampler="cached", **opts)
    naive = loaded.sample(3, seed=11, sampler="naive", **opts)
    assert cached.ids == naive.ids
    assert max(map(len, cached.ids)) > 300  # the second chunk was used


# -- a WAV is bounded -------------------------------------------------------------------------------

def test_a_wav_is_at_most_max_seconds(tmp_path):
    from genzoo.nn.music.render import MAX_SECONDS, SAMPLE_RATE, synthesize
    huge = [{"pitch": 60, "start": 0.0, "duration": 1e9, "track": 0},
            {"pitch": 64, "start": 1e7, "duration": 1.0, "track": 0}]
    audio = synthesize(huge, bpm=90.0)
    assert len(audio) <= MAX_SECONDS * SAMPLE_RATE + 1 and np.abs(audio).max() > 0
    short = [{"pitch": 60, "start": 0.0, "duration": 2.0, "track": 0}]
    assert len(synthesize(short, bpm=120.0)) == int((1.0 + 0.5) * SAMPLE_RATE) + 1
    assert len(synthesize(short, bpm=120.0, max_seconds=0.5)) == int(0.5 * SAMPLE_RATE) + 1
    with pytest.raises(ValueError, match="bpm"):
        synthesize(short, bpm=0.0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_static_token_samplers_draw_the_reference_tokens_across_uniform_chunks(device,
                                                                                monkeypatch):
    """Chunks of 16 steps over 60 tokens (as 256 over thousands): the stateful LSTM and cached
    GPT walks refill their uniform buffer three times (on CUDA between graph replays) and still
    draw the tokens of the one-draw-per-step reference."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from genzoo.core.text import Tokenizer
    from genzoo.nn import autoregressive
    from genzoo.plugins import gpt, lstm
    monkeypatch.setattr(autoregressive, "UNIFORM_CHUNK", 16)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    kw = {"max_new_tokens": 60, "top_k": 10}
    rnn = lstm.LSTMLanguageModel(lstm.LSTMConfig(vocab_size=50, embedding_dim=8, hidden_size=16,
                                                 pad_id=None)).to(device).double().eval()
    rnn.tokenizer = Tokenizer("word", ["", "[UNK]"] + [f"w{i}" for i in range(48)])
    a = lstm.StatefulSampler(**kw).sample(rnn, 3, g(), prompt="w1 w2").ids
    b = lstm.NaiveSampler(**kw).sample(rnn, 3, g(), prompt="w1 w2").ids
    assert a == b and len(a[0]) == 62
    model = genzoo.create_model("gpt", layers=1, heads=2, embed_dim=16, key_dim=8, ff_dim=32,
                                vocab=40, context=16, pad_id=None).to(device).double().eval()
    model.start_counts.fill_(1.0)
    a = gpt.CachedSampler(**kw).sample(model, 3, g()).ids
    b = gpt.NaiveSampler(**kw).sample(model, 3, g()).ids
    assert a == b and len(a[0]) == 61
