"""World models (ch. 12): the rollouts cache, the MDN-RNN, the CMA-ES controller's resumable
search, the video writer and the one-line errors. Real CarRacing-v3 episodes, a few dozen steps
each (the dev extra installs gymnasium[box2d] and cma); the end-to-end pipeline is slow-marked."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from genzoo.errors import ConfigError

gym = pytest.importorskip("gymnasium", reason="gymnasium is missing: pip install -e .[world]")
pytest.importorskip("Box2D", reason="Box2D is missing: pip install -e .[world]")
pytest.importorskip("cma", reason="cma is missing: pip install -e .[world]")

from genzoo.family import DataConfig, VideoSample  # noqa: E402
from genzoo.nn import world  # noqa: E402
from genzoo.plugins import rollouts  # noqa: E402
from genzoo.plugins import worldmodels as wm  # noqa: E402

STEPS = 24
CACHE_STEPS = 6  # the cache test only counts and compares episodes: a few steps each


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: torch's second intra-op thread only waits for the first. On a
    shared 2-core machine the waiting spins, and an LSTM step took 45 times the CPU (and the
    MDN-RNN test over a minute of wall time) with 2 threads instead of 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def entry(**options):
    return types.SimpleNamespace(name="rollouts-test", options={
        "env": "CarRacing-v3", "policy": "brownian", "episodes": 4, "max_steps": STEPS,
        "seed": 0, "envs": 1, **options})


def load(root, split="train", **options):
    cfg = DataConfig(name="rollouts-test", root=str(root), test_fraction=0.25)
    return rollouts.load(entry(**options), cfg, split, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load(tmp_path_factory.mktemp("rollouts"))


# -- the data source ----------------------------------------------------------------------------

def test_rollouts_hold_frames_actions_rewards_dones(data):
    assert data.num_episodes() == 3 and len(data) == 3 * STEPS  # one of 4 episodes is held out
    ep = data.episode(0)
    assert ep["frames"].shape == (STEPS, 3, 64, 64) and ep["frames"].dtype == torch.uint8
    assert ep["actions"].shape == (STEPS, 3) and ep["rewards"].shape == (STEPS,)
    assert ep["dones"].tolist() == [False] * (STEPS - 1) + [True]
    x = data.batch(torch.tensor([0, STEPS - 1, STEPS, 3 * STEPS - 1]))["x"]
    assert x.shape == (4, 3, 64, 64) and torch.equal(x[1], ep["frames"][-1])
    assert torch.equal(x[2], data.episode(1)["frames"][0])
    green = x[0].float().mean((1, 2))  # CarRacing: grass is green
    assert green[1] > green[0] and green[1] > green[2]


def test_cache_is_keyed_and_an_interrupted_collection_resumes(tmp_path, monkeypatch):
    def load(root, **options):  # short episodes: this test is about which ones are kept
        return globals()["load"](root, **{"max_steps": CACHE_STEPS, **options})
    whole = load(tmp_path / "whole", envs=2)  # worker processes; the resumed one plays in-process
    folder = whole.folder
    assert folder.name == f"CarRacing-v3-brownian-seed0-t{CACHE_STEPS}-64px"
    # killed after the first saved episode: it is kept, and the next run collects the rest
    real_save = rollouts.Collection.save
    calls = []

    def dying(self, i, *args):
        if calls:
            raise KeyboardInterrupt
        calls.append(i)
        real_save(self, i, *args)
    monkeypatch.setattr(rollouts.Collection, "save", dying)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path / "part")
    part_dir = tmp_path / "part" / folder.relative_to(tmp_path / "whole")
    assert sorted(p.name for p in part_dir.glob("ep_*")) == ["ep_000000"]
    kept = (part_dir / "ep_000000" / "frames.npy").stat().st_mtime_ns
    monkeypatch.setattr(rollouts.Collection, "save", real_save)
    part = load(tmp_path / "part")
    assert (part_dir / "ep_000000" / "frames.npy").stat().st_mtime_ns == kept  # not redone
    assert not list(part_dir.glob(".ep_*"))
    for k in range(whole.num_episodes()):  # the same episodes, whatever the workers or kills
        a, b = whole.episode(k), part.episode(k)
        assert all(torch.equal(a[f], b[f]) for f in rollouts.FILES)
    index = json.loads((part_dir / "index.json").read_text())
    assert index["env"] == "CarRacing-v3" and len(index["episodes"]) == 4
    # another seed or policy is another cache; a larger budget extends this one
    other = load(tmp_path / "whole", seed=1, episodes=2)
    assert other.folder != folder and other.folder.name.startswith("CarRacing-v3-brownian-seed1")
    random = load(tmp_path / "whole", policy="random", episodes=2)
    assert "random" in random.folder.name
    before = (folder / "ep_000003" / "frames.npy").stat().st_mtime_ns
    more = load(tmp_path / "whole", episodes=5)
    assert (folder / "ep_000003" / "frames.npy").stat().st_mtime_ns == before
    assert len(list(folder.glob("ep_*"))) == 5 and more.num_episodes() == 4


def test_bad_env_and_missing_extra_are_one_line(tmp_path, monkeypatch):
    cases = [({"env": "NoSuchEnv-v0"}, "unknown gymnasium env id 'NoSuchEnv-v0'"),
             ({"env": "CartPole-v1"}, "not an RGB image"),
             ({"policy": "drunk"}, "unknown rollout policy 'drunk'"),
             ({"episodes": 10**9}, "episodes must be an integer from 2 to"),
             ({"max_steps": 0}, "max_steps must be an integer from 1 to")]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            load(tmp_path, **options)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "rollouts").exists()
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install genzoo\[world\]"):
        load(tmp_path)


def test_cli_bad_env_is_one_line(tmp_path):
    from click.testing import CliRunner

    from genzoo.cli import cli
    res = CliRunner().invoke(cli, ["train", "worldmodel-carracing", "--data-root", str(tmp_path),
                                   "--set", "data.limit=1", "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "data.limit" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


# -- V and M ------------------------------------------------------------------------------------

def small_vae():
    """An untrained VAE made nearly deterministic (log-variance -12): its codes of real frames
    carry the frames' structure instead of unit noise."""
    torch.manual_seed(0)
    vae = wm.ConvVAE(wm.ConvVAEConfig(filters=(4, 8, 8, 8), latent_dim=8))
    with torch.no_grad():
        vae.to_z.bias[8:] = -12.0
        vae.to_z.weight[:8] *= 20  # codes spread wider than their noise
    return vae


def test_mdnrnn_loss_falls_on_real_sequences(data):
    vae = small_vae()
    seqs = wm.WorldModel.stage_data("mdnrnn", data, {"vae": vae})
    assert seqs.x.shape == (3, STEPS, 8) and seqs.actions.shape == (3, STEPS, 3)
    assert seqs.lengths.tolist() == [STEPS] * 3
    torch.manual_seed(0)
    m = wm.MDNRNN(wm.MDNRNNConfig(latent_dim=8, action_dim=3, hidden=32, mixtures=5, seq_len=16))
    batch = seqs.batch(torch.arange(3))
    first = float(m.evaluation_step(batch)["nll_per_step"])
    # Adam by hand: a torch.optim optimizer's first add_param_group imports torch._dynamo
    # (~1.3 CPU s, many seconds of wall time on a busy machine) for a few ms of training
    params = list(m.parameters())
    mom, var = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for t in range(1, 41):
        m.zero_grad()
        m.loss(batch)["loss"].backward()
        with torch.no_grad():
            for p, m1, m2 in zip(params, mom, var):
                m1.lerp_(p.grad, 0.1)
                m2.lerp_(p.grad ** 2, 0.001)
                p -= 0.01 * (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
    last = float(m.evaluation_step(batch)["nll_per_step"])
    assert last < first - 1.0, (first, last)


def test_mdn_sampling_at_zero_temperature_is_deterministic():
    torch.manual_seed(0)
    m = wm.MDNRNN(wm.MDNRNNConfig(latent_dim=6, action_dim=3, hidden=16))
    (logpi, mu, logsigma), _ = m.step(torch.randn(4, 6), torch.rand(4, 3))
    draws = [m.sample_mixture(logpi, mu, logsigma, 0.0, torch.Generator().manual_seed(s))
             for s in (0, 1, 2)]
    assert all(torch.equal(draws[0], d) for d in draws[1:])
    near = m.sample_mixture(logpi, mu, logsigma, 1e-8, torch.Generator().manual_seed(3))
    assert torch.allclose(near, draws[0], atol=1e-2)
    hot = [m.sample_mixture(logpi, mu, logsigma, 1.0, torch.Generator().manual_seed(s))
           for s in (0, 1)]
    assert not torch.equal(hot[0], hot[1])
    assert torch.equal(hot[0], m.sample_mixture(logpi, mu, logsigma, 1.0,
                                                torch.Generator().manual_seed(0)))


# -- C: CMA-ES ----------------------------------------------------------------------------------

def controller():
    return wm.Controller(wm.ControllerConfig(latent_dim=3, hidden=2, popsize=6, rollouts=1,
                                             max_steps=5, envs=1))


def fake_returns(vae, m, ctrl, xs, seeds, max_steps, envs):
    """A deterministic stand-in for the env: the return peaks at x = 0.3."""
    x = np.asarray(xs)
    return (-((x - 0.3) ** 2).sum(1) + 0.01 * seeds[0])[:, None].repeat(len(seeds), 1)


def generations(ctrl, n):
    out = []
    for _ in range(n):
        out.append(ctrl.training_step({}, {}, None))
        np.random.rand(7)  # something else drawing from numpy's global stream in between
    return out


def test_cma_state_round_trips_and_a_resumed_search_equals_an_uninterrupted_one(tmp_path,
                                                                                monkeypatch):
    from genzoo.core.artifacts import load_artifacts, save_artifacts
    monkeypatch.setattr(wm, "evaluate", fake_returns)
    whole = controller()
    whole.upstream = {"vae": None, "mdnrnn": None}
    logs = generations(whole, 5)
    assert logs[-1]["mean_return"] > logs[0]["mean_return"]
    assert {"loss", "mean_return", "best_return", "sigma"} <= set(logs[0])
    part = controller()
    part.upstream = {"vae": None, "mdnrnn": None}
    generations(part, 2)
    save_artifacts(part, tmp_path)  # what a checkpoint writes
    resumed = controller()
    resumed.upstream = {"vae": None, "mdnrnn": None}
    load_artifacts(resumed, tmp_path)
    assert resumed.returns.shape == (2, 6)
    rest = generations(resumed, 3)
    assert torch.equal(resumed.returns, whole.returns)
    assert np.array_equal(resumed.es.mean, whole.es.mean) and resumed.es.sigma == whole.es.sigma
    assert torch.equal(resumed.weight, whole.weight) and torch.equal(resumed.bias, whole.bias)
    assert [float(r["best_return"]) for r in rest] == [float(r["best_return"]) for r in logs[2:]]
    # a saved mean that the replay does not reach: one line, not a silently different search
    broken = controller()
    broken.load_artifacts({"cma_returns": part.returns, "cma_mean": part.saved_mean + 1,
                           "cma_sigma": torch.tensor([0.1], dtype=torch.float64)})
    with pytest.raises(Exception, match="could not be rebuilt"):
        broken.search()


def test_controller_drives_real_episodes_in_one_batch(data):
    vae = small_vae()
    m = wm.MDNRNN(wm.MDNRNNConfig(latent_dim=8, action_dim=3, hidden=8))
    c = wm.Controller(wm.ControllerConfig(latent_dim=8, hidden=8, popsize=2, rollouts=1,
                                          max_steps=6, envs=1, action_map=("tanh", "half", "clip")))
    xs = np.stack([np.zeros(c.size), np.full(c.size, 0.5)])
    r = wm.evaluate(vae, m, c, xs, [5], 6, 1)
    assert r.shape == (2, 1) and np.isfinite(r).all()
    a = c.act(torch.zeros(2, 8), torch.zeros(2, 8))
    assert a.tolist() == [[0.0, 0.5, 0.0]] * 2  # steer 0, half throttle, no brake


# -- the video modality -------------------------------------------------------------------------

def test_video_writer_writes_a_gif_and_a_wide_filmstrip(tmp_path):
    from PIL import Image

    from genzoo.core import sample as samplelib
    t = torch.linspace(0, 1, 10)
    frames = t.view(1, 10, 1, 1, 1).expand(3, 10, 3, 16, 16).clone()
    frames[1] = 1 - frames[1]
    paths = samplelib.write(VideoSample(frames, fps=5, captions=["a", "b", "c"]), tmp_path / "v")
    assert [p.name for p in paths] == ["v.gif", "v.png", "v.txt"]
    gif = Image.open(tmp_path / "v.gif")
    assert gif.n_frames == 10 and gif.info["duration"] == 200 and gif.size[0] >= 512
    strip = Image.open(tmp_path / "v.png")
    assert strip.size[0] >= 512 and strip.size[1] > strip.size[0] / 8 * 2  # three rows
    assert (tmp_path / "v.txt").read_text().splitlines() == ["[0] a", "[1] b", "[2] c"]
    with pytest.raises(ValueError, match=r"\(n, T, C in 1\|3, H, W\)"):
        samplelib.write(VideoSample(torch.rand(2, 3, 16, 16)), tmp_path / "bad")


def test_video_samples_join_and_archive(tmp_path):
    from genzoo.core import sample as samplelib
    parts = [VideoSample(torch.rand(10, 4, 3, 8, 8), captions=[f"c{i}" for i in range(10)])
             for _ in range(2)]
    joined = samplelib.concat(parts)
    assert joined.frames.shape == (20, 4, 3, 8, 8) and len(joined.captions) == 20
    paths, view = samplelib.write_stream(iter(parts), tmp_path / "many", 20)
    assert len(view) == VideoSample.view_limit
    rows = (tmp_path / "many.jsonl").read_text().splitlines()
    assert len(rows) == 20 and json.loads(rows[0]) == {"i": 0, "frames": 4, "caption": "c0"}


# -- the whole pipeline -------------------------------------------------------------------------

TINY = {"data.limit": 3, "vae.filters": "[4,8,8,8]", "vae.latent_dim": 8, "vae.steps": 4,
        "vae.batch_size": 8, "mdnrnn.hidden": 8, "mdnrnn.steps": 3, "mdnrnn.batch_size": 2,
        "controller.steps": 2, "controller.popsize": 3, "controller.max_steps": 5,
        "controller.envs": 1, "sample_n": 2}


@pytest.mark.slow
def test_pipeline_trains_resumes_inside_the_controller_and_samples(tmp_path):
    from genzoo import api
    from genzoo.core.registry import reset
    reset()
    over = {**TINY, "data.root": str(tmp_path / "data"), "data.name": "carracing-rollouts-small"}
    full = api.train("worldmodel-carracing", "quick", over, progress=False, out=tmp_path / "full")
    part = api.train("worldmodel-carracing", "quick", over, progress=False, out=tmp_path / "part",
                     stop_after=("controller", 1))
    api.resume(part.path, progress=False)
    a = json.loads((full.path / "components/controller/metrics.jsonl").read_text().splitlines()[1])
    b = json.loads((part.path / "components/controller/metrics.jsonl").read_text().splitlines()[1])
    assert a["mean_return"] == b["mean_return"] and a["best_return"] == b["best_return"]
    loaded = api.load_run(full.path)
    for name in ("dream", "reconstruct", "rollout"):
        s = loaded.sample(2, seed=0, sampler=name, **({"max_steps": 6} if name == "rollout" else {}))
        assert isinstance(s, VideoSample) and s.frames.ndim == 5
