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
