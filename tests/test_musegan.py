"""MuseGAN's pitch ranges (measured from the data, saved as an artifact, never left in a sample,
absent from older runs) and the figures ``zoo eval`` reports for it (issue 23)."""
import json

import pytest
import torch

from genzoo import api
from genzoo.core.data import DataConfig, load
from genzoo.core.metrics import evaluate
from genzoo.plugins.musegan import (MuseGAN, MuseGANConfig, grid_figures, mean_pairwise_distance,
                                    note_runs, voice_ranges)


def tiny_gan(**kw):
    torch.manual_seed(0)
    return MuseGAN(MuseGANConfig(temporal_width=32, bar_width=16, critic_width=8, **kw)).eval()


@pytest.fixture(scope="module")
def chorales():
    return load(DataConfig(name="jsb-chorales-16th"), "train")


def test_voice_ranges_are_the_datas(chorales):
    ranges = voice_ranges(chorales.x)
    assert ranges == [[60, 81], [52, 74], [46, 69], [36, 66]]  # S, A, T, B; rests (-1) ignored
    assert voice_ranges(torch.tensor([[[-1, 40], [50, 41]]])) == [[50, 50], [40, 41]]


def test_setup_restricts_every_voice_to_its_range(chorales):
    m = tiny_gan()
    m.setup(chorales)
    assert m.artifacts()["pitch_range"] == [[60, 81], [52, 74], [46, 69], [36, 66]]
    x = m(**m.latents(16, torch.Generator().manual_seed(0)))
    for k, (lo, hi) in enumerate(m.pitch_range):
        outside = torch.ones(84, dtype=torch.bool)
        outside[lo: hi + 1] = False
        assert (x[:, k, ..., outside] == -1).all()  # silent outside the range
        assert (x[:, k, ..., lo: hi + 1] > -1).any()
    grid = m.binarise(x)
    for k, (lo, hi) in enumerate(m.pitch_range):
        assert lo <= int(grid[..., k].min()) and int(grid[..., k].max()) <= hi
    # the real rolls are unchanged by the mask: real notes are inside by construction
    real = m.roll(chorales.batch(torch.arange(4))["x"])
    assert torch.equal(m.binarise(real), chorales.batch(torch.arange(4))["x"].long())


def test_full_range_and_runs_without_the_artifact_keep_all_84_pitches(chorales):
    a, b = tiny_gan(pitch_range="full"), tiny_gan()
    a.setup(chorales)
    assert a.pitch_range is None and "pitch_range" not in a.artifacts()
    b.load_artifacts({"tracks": ["S", "A", "T", "B"]})  # a run saved before issue 23
    assert b.pitch_range is None and bool(b.pitch_mask.all())
    z = b.latents(4, torch.Generator().manual_seed(1))
    assert torch.equal(b(**z), b.generator(**z))  # the old forward, bit for bit
    assert torch.equal(b.binarise(b(**z)), b(**z).argmax(-1).permute(0, 2, 3, 1).reshape(4, 32, 4))
    with pytest.raises(ValueError, match="pitch_range"):
        MuseGANConfig(pitch_range="narrow")
    with pytest.raises(ValueError, match="outside"):
        b.set_pitch_range([[0, 90]] * 4)


def test_note_runs_pairwise_distance_and_figures():
    grid = torch.tensor([[[60, 48], [60, 48], [62, -1], [62, -1]]])  # (1, 4 steps, 2 voices)
    pitch, length, track = note_runs(grid)
    assert pitch.tolist() == [60, 62, 48] and length.tolist() == [2, 2, 2]
    assert track.tolist() == [0, 0, 1]
    same = grid.expand(5, -1, -1)
    assert mean_pairwise_distance(same) == 0.0  # a collapsed batch
    other = grid.clone()
    other[0, 0, 0] = 59
    assert mean_pairwise_distance(torch.cat([grid, other])) == pytest.approx(1 / 8)


def test_real_pieces_score_like_real_pieces(chorales):
    """The figures' noise floor: held-out pieces against the training data."""
    held = load(DataConfig(name="jsb-chorales-16th"), "test").x.long()
    f = grid_figures(held[:128], chorales.x.long(), held[128:256], voice_ranges(chorales.x),
                     ["S", "A", "T", "B"])
    assert min(f["in_range_fraction"].values()) > 0.99
    assert 0.9 < f["pairwise_distance_ratio"] < 1.1
    assert f["note_length_hist_tv"] < 0.1 and max(f["pitch_hist_tv"].values()) < 0.15
    collapsed = grid_figures(held[:1].expand(64, -1, -1), chorales.x.long(), held[:64],
                             voice_ranges(chorales.x), ["S", "A", "T", "B"])
    assert collapsed["pairwise_distance_ratio"] == 0


def test_a_trained_run_keeps_its_ranges_and_zoo_eval_reports_the_figures(tmp_path, tiny):
    run = api.train("musegan", "quick", tiny("musegan", steps=2, **{"model.eval_n": 16}),
                    out=tmp_path / "run", progress=False)
    saved = json.loads((run.path / "artifacts.json").read_text())["artifacts"] \
        if (run.path / "artifacts.json").exists() else None
    loaded = api.load_run(run.path)
    ranges = loaded.model.pitch_range
    assert ranges is not None and (saved is None or saved["pitch_range"] == ranges)
    s = loaded.sample(4, seed=0)
    for piece in s.sequences:
        for note in piece:
            lo, hi = ranges[note["track"]]
            assert lo <= note["pitch"] <= hi
    out = evaluate(str(run.path), split="test", save=False)
    assert set(out["in_range_fraction"]) == {"S", "A", "T", "B"}
    assert out["in_range_fraction_min"] == 1.0 and out["pieces"] == 16
    assert out["pairwise_distance_real"] > 0.5 and out["pairwise_distance_ratio"] is not None
    assert 0 <= out["note_length_hist_tv"] <= 1
    assert len(out["note_length_hist"]["generated"]) == 32


def test_minibatch_std_critic_reads_the_batch_spread_and_keeps_the_keys():
    from genzoo.nn.gan import gradient_penalty
    plain, mb = tiny_gan(), tiny_gan(minibatch_std=True)
    assert plain.critic.state_dict().keys() == mb.critic.state_dict().keys()  # old runs load
    x = torch.rand(6, 4, 2, 16, 84) * 2 - 1
    one = mb.critic(x)
    assert one.shape == (6,)
    same = x[:1].expand(6, -1, -1, -1, -1)  # a collapsed batch: spread 0, a different score
    assert not torch.allclose(mb.critic(same)[0], one[0], rtol=1e-3, atol=0)
    assert torch.allclose(plain.critic(same), plain.critic(x[:1]).expand(6), rtol=1e-4, atol=0)
    gp = gradient_penalty(mb.critic, x, torch.rand_like(x))
    assert torch.isfinite(gp)


def test_critic_onsets_reads_where_each_voice_changes_pitch(chorales):
    """critic_onsets: Critic.changes is 1 where a voice takes a new pitch and 0 where it holds
    one, across the bar line too, so two rolls with the same pitches in a different rhythm reach
    the critic through it; the plain critic's keys and scores are unchanged by the option."""
    from genzoo.nn.gan import gradient_penalty
    from genzoo.plugins.musegan import Critic
    m = tiny_gan(critic_onsets=8)
    grid = chorales.x[:6].long()  # (6, 32 steps, 4 voices)
    roll = m.roll(grid)
    assert roll.shape == (6, 4, 2, 16, 84)
    change = Critic.changes(roll)
    assert change.shape == (6, 4, 32)
    moved = torch.zeros(6, 4, 32)
    moved[:, :, 1:] = (grid[:, 1:] != grid[:, :-1]).transpose(1, 2).float()
    assert torch.equal(change, moved)
    cut = grid.clone()
    cut[:, 1::2] = cut[:, 0::2] + 1  # the same onsets on the beat, a new pitch every 16th
    assert Critic.changes(m.roll(cut))[:, :, 1::2].eq(1).all()
    score = m.critic(roll)
    assert score.shape == (6,) and torch.isfinite(score).all()
    assert torch.isfinite(gradient_penalty(m.critic, roll, m.roll(cut)))
    plain = tiny_gan()
    keys = set(m.critic.state_dict()) - set(plain.critic.state_dict())
    assert keys and all(k.startswith("onsets.") for k in keys)  # only the stream is new
    assert set(plain.critic.state_dict()) <= set(m.critic.state_dict())
    assert m.critic.net[-3].in_features == plain.critic.net[-3].in_features + 8
    with pytest.raises(ValueError, match="critic_onsets must be 0"):
        MuseGANConfig(critic_onsets=-1)
    with pytest.raises(ValueError, match="critic_onsets must be 0"):
        MuseGANConfig(critic_onsets=True)  # a width, not a switch


def test_resize_time_upsampling_keeps_the_shapes_and_holds_notes_longer():
    """time_upsample=resize (nearest upsampling + a 3-step convolution): the same piano-roll
    shape, fewer note changes than the book's transposed convolutions at init, and a run saved
    without the key (the book's layers) still loads into the default config."""
    from dataclasses import asdict
    notes = {}
    for kind in ("transpose", "resize"):
        m = tiny_gan(time_upsample=kind)
        x = m(**m.latents(32, torch.Generator().manual_seed(0)))
        assert x.shape == (32, 4, 2, 16, 84) and x.abs().max() <= 1
        notes[kind] = len(note_runs(m.binarise(x))[1]) / (32 * 4 * 2)  # notes per voice per bar
    assert notes["transpose"] > 12 and notes["resize"] < 0.75 * notes["transpose"]
    old = tiny_gan()  # the state of a run saved before the option (its config has no key)
    saved = {k: v for k, v in asdict(old.config).items() if k != "time_upsample"}
    new = MuseGAN(MuseGANConfig(**saved))
    new.load_state_dict(old.state_dict())  # strict: the same keys and shapes
    assert new.config.time_upsample == "transpose"
    resize = tiny_gan(time_upsample="resize")
    with pytest.raises(RuntimeError):  # a different layer: never silently half-loaded
        resize.load_state_dict(old.state_dict())
    with pytest.raises(ValueError, match="time_upsample"):
        MuseGANConfig(time_upsample="linear")


def test_tied_time_taps_start_as_copies_and_load_like_the_books_layers():
    """time_upsample=tied: the book's transposed convolutions with their two time taps equal at
    init, so every note starts 8 16ths long (the dense layer's 2 steps per bar, copied); the
    same state-dict keys and shapes as the book's, both ways; training can pull the taps apart."""
    tied, book = tiny_gan(time_upsample="tied"), tiny_gan()
    x = tied(**tied.latents(32, torch.Generator().manual_seed(0)))
    assert x.shape == (32, 4, 2, 16, 84)
    roll = x.view(32, 4, 2, 2, 8, 84)
    assert torch.equal(roll, roll[:, :, :, :, :1].expand_as(roll))  # constant over each half bar
    assert int(note_runs(tied.binarise(x))[1].min()) >= 8
    assert tied.state_dict().keys() == book.state_dict().keys()
    tied.load_state_dict(book.state_dict())
    book.load_state_dict(tiny_gan(time_upsample="tied").state_dict())
    m = tiny_gan(time_upsample="tied").train()
    layer = m.generator.bar_generators[0].net[0]
    w0 = layer.weight.detach().clone()
    m(**m.latents(8, torch.Generator().manual_seed(0)))[:, :, :, :4].sum().backward()
    with torch.no_grad():
        layer.weight -= 0.1 * layer.weight.grad
    assert torch.equal(w0[:, :, 0], w0[:, :, 1])
    assert not torch.equal(layer.weight[:, :, 0], layer.weight[:, :, 1])  # free to differ


def test_softmax_output_sounds_one_pitch_per_step_inside_the_range(chorales):
    """output=softmax: each voice's step is a distribution over its pitches (as 2 p - 1), none
    outside the voice's range, with the tanh model's state dict; the notes are the argmax."""
    m, book = tiny_gan(output="softmax"), tiny_gan()
    assert m.state_dict().keys() == book.state_dict().keys()
    m.load_state_dict(book.state_dict())
    m.setup(chorales)
    m.train()  # batch statistics: an untrained model's running ones leave its logits ~1e-7 apart
    z = m.latents(8, torch.Generator().manual_seed(0))
    x = m(**z)
    assert x.shape == (8, 4, 2, 16, 84) and x.min() >= -1 and x.max() <= 1
    p = (x + 1) / 2
    assert torch.allclose(p.sum(-1), torch.ones(8, 4, 2, 16), atol=1e-5)
    for k, (lo, hi) in enumerate(m.pitch_range):
        assert (x[:, k, ..., :lo] == -1).all() and (x[:, k, ..., hi + 1:] == -1).all()
    logits = m.generator(**z)  # no tanh: the logits
    inside = logits.masked_fill(~m.pitch_mask[None, :, None, None, :], float("-inf"))
    assert torch.equal(m.binarise(x), inside.argmax(-1).permute(0, 2, 3, 1).reshape(8, 32, 4))
    with pytest.raises(ValueError, match="output"):
        MuseGANConfig(output="sigmoid")


def test_resize8_writes_8th_notes_and_position_bias_knows_each_steps_place():
    """time_upsample=resize8: the last doubling copies each 8th to its two 16ths, so no note
    starts off the 8th grid; position_bias adds a zero-initialised bias per step after each
    doubling (the bar's 4, 8, 16 steps), changing nothing at init."""
    m = tiny_gan(time_upsample="resize8").train()
    x = m(**m.latents(16, torch.Generator().manual_seed(0)))
    assert x.shape == (16, 4, 2, 16, 84)
    assert torch.equal(x[..., 0::2, :], x[..., 1::2, :])  # 16ths in pairs
    assert set(note_runs(m.binarise(x))[1].tolist()) <= set(range(2, 33, 2))
    pos = tiny_gan(time_upsample="resize8", position_bias=True).train()
    shapes = [tuple(v.shape) for k, v in pos.generator.bar_generators[0].named_parameters()
              if k.endswith("position")]
    assert shapes == [(32, 4, 1), (16, 8, 1), (16, 16, 1)]
    plain = {k: v for k, v in pos.state_dict().items() if not k.endswith("position")}
    assert plain.keys() == m.state_dict().keys()
    torch.manual_seed(1)
    z = m.latents(8, torch.Generator().manual_seed(1))
    m.load_state_dict(plain)
    assert torch.allclose(pos(**z), m(**z), atol=1e-6)  # zero biases: the same bars at init
    with torch.no_grad():
        pos.generator.bar_generators[0].net[6].position[:, 5] += 1.0  # one step's place
    y = pos(**z)
    assert not torch.allclose(y[:, 0], m(**z)[:, 0]) and torch.allclose(y[:, 1:], m(**z)[:, 1:])
    with pytest.raises(ValueError, match="position_bias"):
        MuseGANConfig(position_bias=True)  # the book's transposed convolutions


def test_dense_steps_4_writes_the_bars_beats_and_drops_the_first_doubling():
    """dense_steps=4: the dense layer writes the 4 beats (each its own slice of its output),
    then 4 -> 8 -> 16 steps; with resize8 the 16ths still come in pairs."""
    m = tiny_gan(time_upsample="resize8", position_bias=True, dense_steps=4).train()
    x = m(**m.latents(16, torch.Generator().manual_seed(0)))
    assert x.shape == (16, 4, 2, 16, 84)
    assert torch.equal(x[..., 0::2, :], x[..., 1::2, :])
    bar = m.generator.bar_generators[0]
    assert bar.dense[0].out_features == 4 * 2 * 16  # 4 beats x 2 * bar_width channels
    shapes = [tuple(v.shape) for k, v in bar.named_parameters() if k.endswith("position")]
    assert shapes == [(16, 8, 1), (16, 16, 1)]  # no half-note -> beat doubling
    # a beat's slice of the dense output reaches its own 8ths, not a beat two away
    with torch.no_grad():
        z = torch.randn(4, 4 * 32)
        h = bar.dense(z).view(-1, 32, 4, 1)
        bar.eval()
        base = bar.net(h)[:, 0]
        h2 = h.clone()
        h2[:, :, 0] += 1.0
        moved = (bar.net(h2)[:, 0] - base).abs().amax(dim=(0, 2))  # per 16th
    assert moved[:4].min() > 0 and moved[12:].max() == 0
    with pytest.raises(ValueError, match="dense_steps must be 2, 4 or 8"):
        MuseGANConfig(dense_steps=3)
