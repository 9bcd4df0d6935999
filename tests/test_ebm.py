import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core.sampler import draw
from genzoo.plugins.ebm import EBM, EBMConfig, LangevinSampler, langevin


def small(**kw) -> EBM:
    """A seeded two-conv EBM on 16x16 images with a 64-image buffer (training runs use the
    `tiny` fixture: 10 Langevin steps, a 256-image buffer, batches of 32)."""
    torch.manual_seed(0)
    return EBM(EBMConfig(image_size=16, filters=[8, 16], dense=16, buffer_size=64, **kw))


def test_the_books_network_has_the_books_parameter_count():
    model = genzoo.create_model("ebm", preset="book")
    assert model.num_params() == 76_993  # convs 16/32/64/64 (5x5 then 3x3, stride 2), dense 64, 1
    assert model.score(torch.zeros(2, 1, 32, 32)).shape == (2,)


def test_langevin_steps_lower_the_energy_of_a_batch_on_average():
    model = small()
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = model.energy(x).mean()
    out, frames = model.run_langevin(x, steps=20, generator=g, record={0, 10, 20})
    with torch.no_grad():
        energies = [float(model.energy(f).mean()) for f in frames]
    assert len(frames) == 3 and torch.equal(frames[0], x)
    assert energies[0] == pytest.approx(float(before))
    assert energies[2] < energies[1] < energies[0]
    assert out.min() >= -1 and out.max() <= 1


def test_langevin_leaves_no_parameter_gradients():
    model = small()
    model.negatives(8, torch.device("cpu"))  # the training path (buffer + Langevin)
    assert all(p.grad is None for p in model.parameters())
    sample = draw(model, LangevinSampler(steps=5), 4, torch.Generator().manual_seed(0))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert sample.images.shape == (4, 1, 16, 16)
    assert 0 <= float(sample.images.min()) and float(sample.images.max()) <= 1


def test_replay_buffer_takes_fresh_noise_and_wraps_around():
    model = small(fresh=0.5)
    for _ in range(3):
        model.negatives(24, torch.device("cpu"))
    # the first call also seeds the buffer with one batch of noise, as the book does
    assert model.replay_count == 64 and model.replay_head == (24 + 24 * 3) % 64
    art = model.artifacts()
    other = small(fresh=0.5)  # same weights (seed 0), an empty buffer
    other.load_artifacts(art)
    assert torch.equal(other.replay, model.replay)
    a = model.negatives(8, torch.device("cpu"))
    b = other.negatives(8, torch.device("cpu"))
    assert torch.equal(a, b)  # buffer + generator restored: the same next negatives


def test_sampling_is_reproducible_and_shows_chains():
    model = small()
    s1 = draw(model, LangevinSampler(steps=6, frames=4), 3, torch.Generator().manual_seed(1),
              {"show": ("chain",)})
    s2 = draw(model, LangevinSampler(steps=6, frames=4), 3, torch.Generator().manual_seed(1))
    assert torch.equal(s1.images, s2.images)
    chain = s1.extras["chain"]
    assert chain.images.shape == (3 * 4, 1, 16, 16) and chain.nrow == 4
    assert torch.equal(chain.images[3::4], s1.images)  # the last column is the final state


def test_sample_start_buffer_continues_the_persistent_chains():
    model = small(sample_start="buffer")
    empty = draw(model, LangevinSampler(steps=1), 2, torch.Generator().manual_seed(0))
    assert empty.images.shape == (2, 1, 16, 16)  # an empty buffer falls back to noise (previews)
    model.negatives(32, torch.device("cpu"))  # fills 32 slots of the buffer
    buffer = model.replay[:model.replay_count]
    tiny_step = dict(steps=1, step_size=1e-6, noise=0.0)  # moves no pixel visibly
    x = draw(model, LangevinSampler(**tiny_step), 4, torch.Generator().manual_seed(0)).images * 2 - 1
    nearest = torch.cdist(x.flatten(1), buffer.flatten(1)).min(dim=1).values
    assert nearest.max() < 0.05  # each sample is a buffer entry continued by one step (to rounding)
    # start=noise given to the sampler overrides the model's default
    x = draw(model, LangevinSampler(start="noise", **tiny_step), 4,
             torch.Generator().manual_seed(7)).images * 2 - 1  # not the buffer's own seed 0
    assert torch.cdist(x.flatten(1), buffer.flatten(1)).min(dim=1).values.min() > 1.0
    with pytest.raises(ValueError, match="sample_start"):
        EBMConfig(sample_start="replay")


@pytest.mark.parametrize("options,word", [({"steps": 0}, "steps"), ({"step_size": -1.0}, "step_size"),
                                          ({"noise": -0.1}, "noise"), ({"frames": 1}, "frames")])
def test_bad_sampler_options_are_refused(options, word):
    with pytest.raises(Exception, match=word):
        LangevinSampler(**options)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tiny import tiny  # tests/tiny.py, as the `tiny` fixture (function-scoped) gives it
    out = tmp_path_factory.mktemp("ebm") / "run"
    return api.train("ebm", "quick", tiny("ebm", steps=30), out=out, progress=False)


def test_energy_of_data_falls_below_energy_of_noise_after_a_short_run(run):
    logs = [m for m in run.metrics() if "split" not in m]
    assert {"energy_real", "energy_fake", "energy_gap"} <= set(logs[-1])
    test = [m for m in run.metrics() if m.get("split") == "test"][0]
    assert test["energy_real"] < test["energy_noise"]
    loaded = api.load_run(run.path)
    data = loaded.data("test").images()[:64] * 2 - 1
    noise = torch.rand(64, *data.shape[1:]) * 2 - 1
    with torch.no_grad():
        assert loaded.model.energy(data).mean() < loaded.model.energy(noise).mean()


def test_weights_and_buffer_round_trip_through_save_and_load(run):
    saved = load_file(str(run.path / "artifacts.safetensors"))
    weights = load_file(str(run.path / "model.safetensors"))
    loaded = api.load_run(run.path)
    state = loaded.model.state_dict()
    assert weights.keys() == state.keys()
    for k in weights:
        assert torch.equal(state[k], weights[k]), k
    # the saved weights are trained, not the init a fresh model (the run's seed) starts from,
    # so the equality above is a real load
    torch.manual_seed(loaded.config["train"]["seed"])
    initial = EBM(loaded.model.config).state_dict()
    assert all(not torch.equal(weights[k], initial[k]) for k in weights)
    count = int(saved["replay_state"][0])
    assert count == 256 and loaded.model.replay_count == count  # 30 batches of 32 fill 256
    assert torch.equal(loaded.model.replay[:count], saved["replay"])
    assert torch.equal(loaded.model.generator.get_state(), saved["replay_rng"])


def test_resume_is_bit_exact_buffer_included(tmp_path, tiny):
    cfg = tiny("ebm", steps=8, **{"model.buffer_size": 64})
    full = api.train("ebm", "quick", cfg, out=tmp_path / "full", progress=False)
    half = api.train("ebm", "quick", cfg, out=tmp_path / "half", progress=False, stop_after=4)
    assert json.loads((half.path / "trainer.json").read_text())["step"] == 4
    api.resume(half.path, progress=False)
    for name in ("model.safetensors", "artifacts.safetensors"):
        a, b = load_file(str(full.path / name)), load_file(str(half.path / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def _one_line_error(result, word):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], result.output


def test_cli_show_chain_writes_the_chain_grid(run, tmp_path):
    result = CliRunner().invoke(cli, ["sample", str(run.path), "--n", "4", "--set", "steps=12",
                                      "--set", "frames=4", "--show-chain", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").exists() and (tmp_path / "s-chain.png").exists()
    assert "0, 4, 8, 12" in result.output


def test_cli_bad_input_gives_one_line(run):
    r = CliRunner()
    _one_line_error(r.invoke(cli, ["sample", str(run.path), "--set", "steps=0"]), "steps")
    _one_line_error(r.invoke(cli, ["sample", str(run.path), "--set", "step_size=-2"]), "step_size")
    _one_line_error(r.invoke(cli, ["sample", str(run.path), "--show-probs"]), "probs")
    _one_line_error(r.invoke(cli, ["train", "ebm", "--set", "langevin_steps=0", "--no-progress"]),
                    "langevin_steps")
    _one_line_error(r.invoke(cli, ["train", "ebm", "--set", "alpha=-1", "--no-progress"]), "alpha")
