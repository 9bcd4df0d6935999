"""Data-parallel training under torchrun (gloo on CPU, loopback): two processes follow one process
with the same global batch and seed; rank 0 alone writes the run; a distributed run resumes."""
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.core import distributed
from genzoo.core.data import StepBatches
from genzoo.errors import ConfigError
from cli_checks import one_line_error
from tiny import cli_args

SETS = cli_args("pixelcnn")  # tests/tiny.py's pixelcnn, as `zoo train` arguments


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what torchrun gives each rank (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(before)


def zoo(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "genzoo", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=900)


def close(a, b, atol=1e-5):
    ta, tb = ckpt.load_tensors(a / ckpt.WEIGHTS), ckpt.load_tensors(b / ckpt.WEIGHTS)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=atol, rtol=1e-4), (k, (ta[k] - tb[k]).abs().max())


def test_rank_shares_make_up_the_global_batch():
    class Rows:
        def __len__(self):
            return 100

        def batch(self, index):
            return {"x": index}
    one = StepBatches(Rows(), 20, seed=3)
    shares = [StepBatches(Rows(), 20, seed=3, rank=r, world=4) for r in range(4)]
    for step in (0, 4, 5, 17):
        assert torch.equal(torch.cat([s(step)["x"] for s in shares]), one(step)["x"])
    with pytest.raises(Exception, match="does not split evenly over 3"):
        StepBatches(Rows(), 20, seed=3, world=3)


def test_two_processes_equal_one_and_rank_zero_alone_writes(tmp_path, tiny):
    res = zoo(["train", "pixelcnn", "--nproc", "2", "--steps", "4", *SETS, "--out", "dist",
               "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run:") == 1  # one report, from rank 0
    single = genzoo.train("pixelcnn", out=str(tmp_path / "single"), **tiny("pixelcnn", steps=4))
    dist_run = tmp_path / "dist"
    close(dist_run, single.path)
    state = json.loads((dist_run / ckpt.TRAINER_JSON).read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    # exactly one checkpoint: one set of files, nothing staged or left over, no duplicated logs
    assert not [p.name for p in dist_run.iterdir() if p.name.startswith(".checkpoint")
                or p.name.endswith(".tmp")]
    steps = [m["step"] for m in ckpt.Run(dist_run).metrics() if "split" not in m]
    assert steps == [2, 4]
    for a, b in zip(ckpt.Run(dist_run).metrics(), single.metrics()):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # a distributed run resumes (here in one process) to what one process would have reached
    api.resume(dist_run, steps=6, progress=False)
    single6 = genzoo.train("pixelcnn", out=str(tmp_path / "single6"), **tiny("pixelcnn", steps=6))
    close(dist_run, single6.path)


@pytest.mark.slow
def test_distributed_resume_and_a_gan_with_two_optimizers(tmp_path, tiny):
    res = zoo(["train", "pixelcnn", "--nproc", "2", "--steps", "2", *SETS, "--out", "dist",
               "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    res = zoo(["train", "--resume", "dist", "--steps", "4", "--nproc", "2", "--no-progress"],
              tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    single = genzoo.train("pixelcnn", out=str(tmp_path / "single"), **tiny("pixelcnn", steps=4))
    close(tmp_path / "dist", single.path)
    res = zoo(["train", "dcgan", "--nproc", "2", "--steps", "2", "--batch-size", "8", "--set",
               "sample_every=0", "--out", "gan", "--no-progress"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "gan" / ckpt.TRAINER_JSON).read_text())["step"] == 2
    assert len(json.loads((tmp_path / "gan" / ckpt.TRAINER_JSON).read_text())["optimizers"]) == 2


def test_nproc_above_what_the_machine_has_is_one_line(monkeypatch):
    cores, unit = distributed.nproc_limit("cpu")
    assert unit == ("CPU cores" if cores > 1 else "CPU core") and cores >= 1
    res = CliRunner().invoke(cli, ["train", "pixelcnn", "--device", "cpu", "--nproc", str(cores + 1),
                                   "--steps", "1"])
    one_line_error(res, f"--nproc {cores + 1} is more than the {cores} {unit}", "at most")
    one_line_error(CliRunner().invoke(cli, ["train", "pixelcnn", "--nproc", "0"]), "must be >= 1")
    # on CUDA the limit is the GPUs, whatever the cores
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.nproc_limit("auto") == (2, "GPUs")
    assert distributed.nproc_limit("cuda:1") == (2, "GPUs")
    distributed.check_nproc(2, "cuda")
    with pytest.raises(ConfigError, match=r"^--nproc 3 is more than the 2 GPUs of this machine "
                                          r"\(device cuda\); use at most 2$"):
        distributed.check_nproc(3, "cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="already runs under torchrun"):
        distributed.check_nproc(1)


def test_launch_hands_torchrun_the_command_without_nproc(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert distributed.launch(["train", "pixelcnn", "--nproc", "1", "--steps", "3",
                               "--nproc=1"], 1, device="cpu") == 0
    assert calls[0][1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                            "-m", "genzoo", "train", "pixelcnn", "--steps", "3"]
