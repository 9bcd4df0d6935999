"""Music (ch. 11): tokens parsed from real scores, the music transformer (causality, KV cache equal
to the reference, vocabularies as run artifacts, prompts), MuseGAN (shapes, ranges, what each
latent controls), the music writer (MIDI, piano roll, WAV) and bad input through the CLI."""
import json
import wave
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core.data import DataConfig, load
from genzoo.errors import ConfigError
from genzoo.nn import music
from genzoo.nn.music import MusicSample, duration_token, midi_of, parse_prompt
from genzoo.plugins.musegan import MuseGAN, MuseGANConfig, track_changes
from genzoo.plugins.music_transformer import MusicTransformer, MusicTransformerConfig
from cli_checks import one_line_error

music21 = pytest.importorskip("music21")

# a small transformer on the first 12 chorales of music21's corpus
TINY = {"embed_dim": 32, "heads": 2, "key_dim": 16, "ff_dim": 32, "dropout": 0.0,
        "data.limit": 12, "data.seq_len": 16, "context": 16, "batch_size": 8,
        "sample_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One data root for the module, so the chorales are parsed once."""
    return tmp_path_factory.mktemp("music-data")


@pytest.fixture()
def root(shared_root, monkeypatch):
    monkeypatch.setenv("GENZOO_DATA", str(shared_root))
    return shared_root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_root):
    mp = pytest.MonkeyPatch()
    mp.setenv("GENZOO_DATA", str(shared_root))
    try:
        out = tmp_path_factory.mktemp("mt") / "run"
        yield api.train("music-transformer", "quick", {"train.steps": 3, **TINY}, out=out,
                        progress=False)
    finally:
        mp.undo()


# -- tokens ------------------------------------------------------------------------------------

def test_note_names_durations_and_the_prompt_syntax():
    assert midi_of("C4") == 60 and midi_of("F#4") == 66 and midi_of("B-3") == midi_of("Bb3") == 58
    assert midi_of("rest") is None
    assert duration_token(1) == "1.0" and duration_token(0.5) == "0.5"
    assert duration_token(Fraction(1, 3)) == "1/3"
    assert parse_prompt("G4:1 Bb3:0.5 rest F#4:1/3 G:major 3/4TS") == [
        ("G4", "1.0"), ("B-3", "0.5"), ("rest", "1.0"), ("F#4", "1/3"), ("G:major", "0.0"),
        ("3/4TS", "0.0")]
    for bad in ("H4:1", "G4:x", "G4:0", ""):
        with pytest.raises(ConfigError):
            parse_prompt(bad)


def test_a_real_chorale_becomes_its_soprano_line_with_key_and_meter():
    from music21 import corpus
    notes, durs = music.score_tokens(corpus.parse("bach/bwv10.7"))
    assert notes[:3] == ["START", "G:minor", "4/4TS"] and durs[:3] == ["0.0"] * 3
    assert all(music.midi_of(n) is not None or n == "rest" for n in notes[3:])
    soprano = [p.nameWithOctave for p in corpus.parse("bach/bwv10.7").parts[0].flatten().pitches]
    assert notes[3:9] == soprano[:6]  # the top line of SATB is the soprano
    beats = sum(music.beats_of(d) for d in durs)
    assert beats % 4 == 0 or beats > 40  # whole 4/4 bars (plus the last held note)


def test_chorales_are_parsed_once_into_a_cache_and_split_by_piece(root):
    cfg = DataConfig(name="bach-chorales", limit=12, seq_len=16)
    train, test = load(cfg, "train"), load(cfg, "test")
    caches = list((root / "cache").glob("bach-chorales-music21-*.json"))
    assert len(caches) == 1 and len(json.loads(caches[0].read_text())["pieces"]) == 12
    assert train.pieces + test.pieces == 12 and test.pieces >= 1
    assert train.note_vocab == test.note_vocab and train.note_vocab[:2] == ["START", "rest"]
    b = train.batch(torch.arange(4))["x"]
    assert b.shape == (4, 17, 2) and int(b[..., 0].max()) < len(train.note_vocab)
    # held-out windows do not overlap: every held-out token is predicted once
    assert torch.all(test.starts.diff() == 16)


# -- the music transformer ---------------------------------------------------------------------

def tiny_transformer(**kw):
    torch.manual_seed(0)
    cfg = dict(note_vocab=20, duration_vocab=6, context=12, embed_dim=16, heads=2, key_dim=8,
               ff_dim=16, dropout=0.0)
    cfg.update(kw)
    return MusicTransformer(MusicTransformerConfig(**cfg)).eval()


def test_an_event_sees_only_earlier_events_and_the_cache_matches_the_full_pass():
    from genzoo.plugins.gpt import KVCache
    m = tiny_transformer().double()
    n, d = torch.randint(0, 20, (2, 10)), torch.randint(0, 6, (2, 10))
    full_n, full_d = m(n, d)
    n2 = n.clone()
    n2[:, 6:] = (n2[:, 6:] + 3) % 20
    out_n, _ = m(n2, d)
    assert torch.allclose(out_n[:, :6], full_n[:, :6]) and not torch.allclose(out_n[:, 6:], full_n[:, 6:])
    caches = [KVCache(12) for _ in m.blocks]
    a, _ = m(n[:, :5], d[:, :5], caches, 0)
    for t in range(5, 10):
        sn, sd = m(n[:, t:t + 1], d[:, t:t + 1], caches, t)
        assert torch.allclose(sn[:, 0], full_n[:, t]) and torch.allclose(sd[:, 0], full_d[:, t])


def test_loss_is_the_sum_of_both_heads_and_log_prob_counts_every_event():
    m = tiny_transformer()
    x = torch.stack([torch.randint(0, 20, (3, 9)), torch.randint(0, 6, (3, 9))], -1)
    out = m.loss({"x": x})
    assert torch.allclose(out["loss"], out["note_nll"] + out["duration_nll"])
    lp = m.log_prob({"x": x})
    assert lp.shape == (3,) and torch.allclose(-lp.sum() / m.likelihood_units({"x": x}), out["loss"])
    # untrained: about log(V_n) + log(V_d) nats per event
    assert abs(float(out["loss"].detach()) - (np.log(20) + np.log(6))) < 1.0


def test_trains_saves_vocabularies_and_samples_the_same_piece_for_a_seed(trained, tmp_path):
    loaded = api.load_run(trained.path)
    assert loaded.model.note_vocab[0] == "START" and loaded.model.duration_vocab[0] == "0.0"
    arts = json.loads((trained.path / "artifacts.json").read_text())
    assert arts["artifacts"]["vocabularies"]["notes"] == loaded.model.note_vocab
    # 40 events > the 16-event context: the window slides, cache refilled
    a = loaded.sample(3, seed=5, max_new_tokens=40)
    b = loaded.sample(3, seed=5, sampler="naive", max_new_tokens=40)
    assert a.tokens == b.tokens and a.sequences == b.sequences
    assert a.tokens != loaded.sample(3, seed=6, max_new_tokens=40).tokens
    for piece in a.sequences:
        assert all(0 <= n["pitch"] < 128 and n["duration"] > 0 for n in piece)
    g = loaded.sample(1, seed=0, inputs={"prompt": "G4:1 A4:0.5"}, max_new_tokens=5)
    assert g.tokens[0].startswith("START G4:1.0 A4:0.5 ")
    assert [n["pitch"] for n in g.sequences[0][:2]] == [67, 69]
    test = [m for m in trained.metrics() if m.get("split") == "test"]
    assert test and np.isfinite(test[-1]["loss"])


def test_the_writer_makes_midi_a_piano_roll_and_audio(tmp_path):
    import mido
    from PIL import Image
    s = MusicSample([[{"track": 0, "pitch": 67, "start": 0.0, "duration": 1.0},
                      {"track": 1, "pitch": 60, "start": 0.0, "duration": 2.0},
                      {"track": 0, "pitch": 69, "start": 1.0, "duration": 1.0}]],
                    tracks=["S", "B"], bpm=120)
    from genzoo.core.sample import write
    paths = write(s, tmp_path / "m")
    names = sorted(p.name for p in paths)
    assert names == ["m-0.mid", "m-0.png", "m-0.wav", "m.jsonl", "m.png"]
    mid = mido.MidiFile(str(tmp_path / "m-0.mid"))
    ons = [(t.name, m.note) for t in mid.tracks for m in t if m.type == "note_on" and m.velocity]
    assert sorted(ons) == [("B", 60), ("S", 67), ("S", 69)]
    assert abs(mid.length - 1.0) < 1e-6  # 2 beats at 120 bpm
    with Image.open(tmp_path / "m-0.png") as im:
        assert im.width >= 512
    with wave.open(str(tmp_path / "m-0.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        assert w.getframerate() == music.SAMPLE_RATE and len(audio) > music.SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio[: music.SAMPLE_RATE // 2].astype(float)))
    peak = np.argmax(spectrum) * 2  # bins of 2 Hz over half a second
    assert abs(peak - 261.6) < 4 or abs(peak - 392.0) < 4  # C4 and G4 sound


# -- MuseGAN -----------------------------------------------------------------------------------

def tiny_gan():
    torch.manual_seed(0)
    return MuseGAN(MuseGANConfig(temporal_width=32, bar_width=16, critic_width=8)).eval()


def test_musegan_shapes_range_and_binarised_pitches():
    m = tiny_gan()
    x = m(**m.latents(3, torch.Generator().manual_seed(0)))
    assert x.shape == (3, 4, 2, 16, 84) and float(x.detach().abs().max()) <= 1
    grid = m.binarise(x)
    assert grid.shape == (3, 32, 4) and 0 <= int(grid.min()) and int(grid.max()) < 84
    data = load(DataConfig(name="jsb-chorales-16th"), "train")
    real = m.roll(data.batch(torch.arange(2))["x"])
    assert real.shape == (2, 4, 2, 16, 84) and set(real.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(m.binarise(real), data.batch(torch.arange(2))["x"].long())  # no rests here
    assert m.critic(real).shape == (2,)


def test_style_changes_every_track_and_one_groove_mostly_its_own_track():
    m = tiny_gan()
    style = track_changes(m, "style", n=16)
    assert (style > 0.05 * style.max()).all()  # every voice moves
    for k in range(4):
        groove = track_changes(m, "groove", n=16, track=k)
        assert groove[k] / groove.sum() > 0.9  # measured: all of the change is in track k
        melody = track_changes(m, "melody", n=16, track=k)
        assert melody[k] / melody.sum() > 0.9


def test_musegan_trains_reloads_and_samples(tmp_path, tiny):
    run = api.train("musegan", "quick", tiny("musegan", steps=2), out=tmp_path / "run",
                    progress=False)
    rows = [m for m in run.metrics() if "split" not in m]
    assert len(rows) == 2 and all(np.isfinite(r["gp"]) for r in rows)
    loaded = api.load_run(run.path)
    a, b = loaded.sample(2, seed=0), loaded.sample(2, seed=0)
    assert a.sequences == b.sequences and a.tracks == ["S", "A", "T", "B"]
    v = loaded.sample(3, seed=0, vary="groove")
    assert len(v) == 3
    paths = loaded.write(a, tmp_path / "s")
    assert any(p.suffix == ".wav" for p in paths) and any(p.suffix == ".mid" for p in paths)


# -- bad input through the CLI -------------------------------------------------------------------

def test_bad_music_input_is_one_line(tmp_path, trained, root):
    r = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(r.invoke(cli, ["train", "music-transformer", "--data", f"folder:{empty}",
                                  "--steps", "1"]), "no MIDI or MusicXML files")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "song.mid").write_bytes(b"MThd not really a midi file")
    one_line_error(r.invoke(cli, ["train", "music-transformer", "--data", f"folder:{broken}",
                                  "--steps", "1"]), "cannot parse", "song.mid")
    run = str(trained.path)
    one_line_error(r.invoke(cli, ["sample", run, "--n", "1", "--prompt", "C9:1"]),
                   "not in this model's vocabulary")
    one_line_error(r.invoke(cli, ["sample", run, "--n", "1", "--prompt", "G4:7/11"]),
                   "duration")
    for key in ("temperature=0", "duration_temperature=-1"):
        one_line_error(r.invoke(cli, ["sample", run, "--n", "1", "--set", key]), "must be > 0")


def test_a_folder_of_midi_files_trains(tmp_path, root):
    folder = tmp_path / "midi"
    folder.mkdir()
    s = MusicSample([[{"track": 0, "pitch": 60 + (i * 7 + j * 5) % 12, "start": float(j),
                       "duration": 1.0} for j in range(30)] for i in range(3)])
    for i in range(3):
        music.write_midi(s, i, folder / f"tune{i}.mid")
    run = api.train("music-transformer", "quick", {"data.name": "folder", "data.path": str(folder),
                                                    "train.steps": 1, **{k: v for k, v in TINY.items()
                                                                         if k != "data.limit"}},
                    out=tmp_path / "run", progress=False)
    loaded = api.load_run(run.path)
    assert loaded.config["data"]["name"] == "music-folder"
    assert {"C4", "G4"} <= set(loaded.model.note_vocab)
