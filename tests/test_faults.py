"""Faults: a checkpoint is one consistent step whatever moment a kill hits; edited or mixed
checkpoint files are detected; one writer per run; non-finite weights are never saved.

Kills are simulated in-process at every fault point of a save (the on-disk state is exactly what a
SIGKILL leaves: nothing between the point and the process' death runs) and done for real, with
SIGKILL on a ``python -m genzoo train`` subprocess, at a few points (all of them in the slow lane).
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.core import faults
from genzoo.errors import CheckpointError, TrainingDiverged

STEPS = 6
TINY = {"filters": 8, "blocks": 1, "sample_every": 0, "log_every": 2, "checkpoint_every": 2,
        "batch_size": 16}
CLI_TINY = ["--set", "filters=8", "--set", "blocks=1", "--set", "sample_every=0",
            "--set", "log_every=2", "--set", "checkpoint_every=2", "--batch-size", "16"]
# every point of a save, in order, and a kill between two checkpoints ("step")
POINTS = ["save:begin", "save:weights", "save:staged", "save:committed", "save:moving",
          "save:done", "step"]
FAST = ("save:weights", "save:committed", "step")  # dropped, rolled forward, between saves


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing catches it, no cleanup code of ours runs."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the machine is shared: one intra-op thread is ~10x faster for these tiny models than two
    # threads fighting other processes for two cores (subprocesses get OMP_NUM_THREADS=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    genzoo.train("pixelcnn", out=str(out), **{"train.steps": STEPS, **TINY})
    return out


def same_run(a: Path, b: Path) -> None:
    """Bit-identical weights and trainer state (optimizer, RNG), the same metrics."""
    for name in (ckpt.WEIGHTS, ckpt.TRAINER_TENSORS):
        ta, tb = ckpt.load_tensors(a / name), ckpt.load_tensors(b / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)
    drop = ("time", "samples_per_s")
    ma = [{k: v for k, v in m.items() if k not in drop} for m in ckpt.Run(a).metrics()]
    mb = [{k: v for k, v in m.items() if k not in drop} for m in ckpt.Run(b).metrics()]
    assert ma == mb
    assert json.loads((a / ckpt.TRAINER_JSON).read_text())["step"] == STEPS


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")
                  or p.name.startswith(".checkpoint"))


@pytest.mark.parametrize("point", [p if p in FAST else pytest.param(p, marks=pytest.mark.slow)
                                   for p in POINTS])
def test_resume_after_a_kill_at_any_point_is_bit_identical(tmp_path, monkeypatch, reference, point):
    real = faults.fault

    def kill(where, step=None):
        if where == point and step == 4:
            raise Killed(where)
    monkeypatch.setattr(faults, "fault", kill)  # every save and step calls faults.fault
    with pytest.raises(Killed):
        genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": STEPS, **TINY})
    monkeypatch.setattr(faults, "fault", real)
    api.resume(tmp_path / "run", progress=False)
    same_run(tmp_path / "run", reference)
    assert leftovers(tmp_path / "run") == []


def zoo(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "genzoo", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          timeout=600)


def _sigkill_then_resume(tmp_path, reference, fault):
    res = zoo(["train", "pixelcnn", "--steps", str(STEPS), *CLI_TINY, "--out", "run",
               "--no-progress"], tmp_path, GENZOO_FAULT=fault)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    api.resume(tmp_path / "run", progress=False)
    same_run(tmp_path / "run", reference)
    assert leftovers(tmp_path / "run") == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_between_checkpoint_files_resumes_bit_identical(tmp_path, reference):
    # the case: weights of the new step written, trainer state not yet
    _sigkill_then_resume(tmp_path, reference, "save:weights@4")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_every_point_resumes_bit_identical(tmp_path, reference, point):
    _sigkill_then_resume(tmp_path, reference, f"{point}@4")


def test_edited_or_mixed_checkpoint_is_detected(tmp_path):
    run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": 4, **TINY, "checkpoint_every": 2})
    state_path = run.path / ckpt.TRAINER_JSON
    original = state_path.read_text()
    r = CliRunner()
    for step in (100000, 3, 2):  # trainer.json edited: ahead, behind, one checkpoint back
        state = json.loads(original)
        state["step"] = step
        state_path.write_text(json.dumps(state))
        res = r.invoke(cli, ["train", "--resume", str(run.path), "--no-progress"])
        assert res.exit_code != 0 and "inconsistent checkpoint" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    state_path.write_text(original)
    for bad in ("-1", "null", '"x"'):
        state_path.write_text(original.replace('"step": 4', f'"step": {bad}'))
        with pytest.raises(CheckpointError, match="damaged"):
            api.resume(run.path, progress=False)
    state_path.write_text(original)
    # weights from another step copied in: load_run refuses too
    other = genzoo.train("pixelcnn", out=str(tmp_path / "other"), **{"train.steps": 2, **TINY})
    (run.path / ckpt.WEIGHTS).write_bytes((other.path / ckpt.WEIGHTS).read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors holds step 2"):
        api.load_run(run.path)


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": 2, **TINY})
    before = (run.path / ckpt.METRICS).read_text()
    with ckpt.RunLock(run.path):  # a live trainer holds the run
        res = CliRunner().invoke(cli, ["train", "--resume", str(run.path), "--steps", "4",
                                       "--no-progress"])
        assert res.exit_code != 0 and "in use by another zoo process (pid" in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert (run.path / ckpt.METRICS).read_text() == before
    # a lock file left by a killed process (pid gone, no flock held) does not block
    (run.path / ckpt.LOCK).write_text(json.dumps({"pid": 2 ** 22 + 7, "host": "x"}))
    api.resume(run.path, steps=4, progress=False)
    steps = [m["step"] for m in run.metrics() if "split" not in m]
    assert steps == sorted(set(steps))  # no duplicated metrics lines


def test_non_finite_weights_are_never_saved(tmp_path):
    from genzoo.core.trainer import Trainer
    run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": 2, **TINY})
    good = (run.path / ckpt.WEIGHTS).read_bytes()
    loaded = api.load_run(run.path)
    data = loaded.data()
    from genzoo.core.config import build
    from genzoo.core.trainer import TrainConfig
    trainer = Trainer(loaded.model, data, build(TrainConfig, {**loaded.config["train"], "steps": 4}),
                      run, progress=False)
    trainer.restore()
    with torch.no_grad():
        next(loaded.model.parameters()).fill_(float("inf"))
    trainer.step = 3
    with pytest.raises(TrainingDiverged, match="nan or inf by step 3; not saved.*step 2"):
        trainer.save()
    assert (run.path / ckpt.WEIGHTS).read_bytes() == good
    assert leftovers(run.path) == []


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": 2, **TINY})
    finally:
        os.umask(old)
    for name in (ckpt.WEIGHTS, ckpt.TRAINER_JSON, ckpt.CONFIG):
        assert (run.path / name).stat().st_mode & 0o777 == 0o640, name
