"""Stopping: SIGINT and SIGTERM stop training at a step boundary with a checkpoint of the
completed steps only (a resume is then bit-identical to an uninterrupted run), one line and exit
code 128 + signal; a run killed before its first checkpoint starts over on the same --out; a full
disk while checkpointing is one line, leaves no staging behind and keeps the last checkpoint; under
``--nproc`` rank 0 saves on a signal and the workers die with their launcher (slow lane)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.core import faults
from genzoo.core.atomic import DiskFull
from genzoo.core.signals import Interrupted
from genzoo.core.train_config import StepContext
from tiny import cli_args, tiny

STEPS = 20
# the case: no checkpoint but the one a stop makes, a log line per step
DCGAN = tiny("dcgan", steps=STEPS, **{"train.checkpoint_every": 1000, "train.log_every": 1})


class Killed(BaseException):
    """SIGKILL in-process: nothing catches it, none of our cleanup code runs."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared machine: tiny models run faster on one thread
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def sigint_not_ignored():
    """A shell without job control starts background jobs (`pytest ... &`) with SIGINT ignored,
    and training rightly leaves an ignored signal ignored (nohup); these tests need Python's
    usual SIGINT handler whatever started them."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 20-step run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    genzoo.train("dcgan", out=str(out), **DCGAN)
    return out


def same_state(a: Path, b: Path) -> None:
    """Bit-identical weights and buffers (BatchNorm's counters included), optimizer and RNG state,
    and the same step."""
    for name in (ckpt.WEIGHTS, ckpt.TRAINER_TENSORS):
        ta, tb = ckpt.load_tensors(a / name), ckpt.load_tensors(b / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)
    assert json.loads((a / ckpt.TRAINER_JSON).read_text())["step"] == \
        json.loads((b / ckpt.TRAINER_JSON).read_text())["step"]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")
                  or p.name.startswith(".checkpoint"))


def signal_mid_step(monkeypatch, at: int, times: int = 1, signum: int = signal.SIGINT) -> None:
    """Send `signum` (`times` times) from inside step `at` (1-based), between the two optimizer
    updates of a GAN step (the discriminator's done, the generator's not): where Ctrl-C used to
    leave a half-done step in the checkpoint."""
    real = StepContext.optimize
    sent = []

    def optimize(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.step == at - 1 and not sent:
            sent.append(signum)
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return out
    monkeypatch.setattr(StepContext, "optimize", optimize)


def test_sigint_mid_step_saves_completed_steps_and_resumes_bit_identical(tmp_path, monkeypatch,
                                                                         reference):
    signal_mid_step(monkeypatch, at=8)
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as stop:
        genzoo.train("dcgan", out=str(run), **DCGAN)
    assert stop.value.signum == signal.SIGINT and stop.value.step == 8
    assert str(stop.value) == (f"stopped by SIGINT; the checkpoint of step 8 is kept (continue "
                               f"with: zoo train --resume {run})")
    # BatchNorm's counters: 8 steps' worth (the reference's per step, times 8), no half step
    done, full = ckpt.load_tensors(run / ckpt.WEIGHTS), ckpt.load_tensors(reference / ckpt.WEIGHTS)
    counters = [k for k in done if k.endswith("num_batches_tracked")]
    assert counters and all(int(done[k]) * STEPS == int(full[k]) * 8 for k in counters)
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 8
    assert [m["step"] for m in ckpt.Run(run).metrics()] == list(range(1, 9))
    monkeypatch.undo()
    genzoo.resume(str(run))
    same_state(run, reference)  # was: other weights, BatchNorm counters at 21
    assert leftovers(run) == []


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    signal_mid_step(monkeypatch, at=6, times=2)
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match=r"stopped at once by a second SIGINT; the checkpoint "
                                          r"of step 4 is kept"):
        genzoo.train("dcgan", out=str(run), **{**DCGAN, "train.checkpoint_every": 4})
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 4
    assert leftovers(run) == []


def zoo(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "genzoo", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          timeout=600)


DCGAN_CLI = cli_args("dcgan", steps=6, **{"train.checkpoint_every": 1000})


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_saves_a_resumable_checkpoint_with_one_line(tmp_path):
    res = zoo(["train", "dcgan", *DCGAN_CLI, "--out", "run", "--no-progress"], tmp_path,
              GENZOO_FAULT="step@3:SIGTERM")  # docker, systemd, slurm, Kubernetes
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-2000:]
    assert res.stderr.strip() == ("stopped by SIGTERM; the checkpoint of step 3 is kept (continue "
                                  "with: zoo train --resume run)")
    run = tmp_path / "run"
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 3
    genzoo.resume(str(run))
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 6
    assert leftovers(run) == []


def test_a_run_killed_before_its_first_checkpoint_starts_over_on_the_same_out(
        tmp_path, monkeypatch, capfd):
    over = tiny("dcgan", steps=4, **{"train.checkpoint_every": 1000})
    real = faults.fault

    def kill(where, step=None):
        if where == "step" and step == 2:
            raise Killed(where)
    monkeypatch.setattr(faults, "fault", kill)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        genzoo.train("dcgan", out=str(run), **over)
    assert (run / ckpt.CONFIG).exists() and not (run / ckpt.TRAINER_JSON).exists()
    (run / "notes.txt").write_text("mine")  # the user's file in --out stays
    monkeypatch.setattr(faults, "fault", real)
    with ckpt.RunLock(run):  # a live process still training it: refused, not started over
        res = CliRunner().invoke(cli, ["train", "dcgan", *cli_args("dcgan", steps=4),
                                       "--out", str(run), "--no-progress"])
        assert res.exit_code != 0 and "in use by another zoo process" in res.output
        assert len(res.output.strip().splitlines()) == 1
    capfd.readouterr()
    genzoo.train("dcgan", out=str(run), **over)
    err = capfd.readouterr().err
    assert f"{run} held a run stopped before its first checkpoint; starting it over" in err
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 4
    assert (run / "notes.txt").read_text() == "mine"
    # a run with a checkpoint is never started over
    with pytest.raises(genzoo.errors.CheckpointError, match="already holds a run; resume it"):
        genzoo.train("dcgan", out=str(run), **over)


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch):
    from genzoo.core import tensors
    run = tmp_path / "run"
    genzoo.train("dcgan", out=str(run), **tiny("dcgan", steps=2, **{"train.checkpoint_every": 2}))
    before = {n: (run / n).read_bytes() for n in (ckpt.WEIGHTS, ckpt.TRAINER_JSON)}
    real = tensors.save_file

    def full(tensor_dict, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 4096)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(tensors, "save_file", full)
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--steps", "4", "--no-progress"])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "no space left on the device of" in lines[0] and "(ENOSPC" in lines[0]
    assert "the checkpoint of step 2 is intact" in lines[0] and "Free space there" in lines[0]
    assert leftovers(run) == []  # no .checkpoint.tmp holding the space
    assert {n: (run / n).read_bytes() for n in before} == before
    with pytest.raises(DiskFull):
        genzoo.resume(str(run), steps=4)
    monkeypatch.setattr(tensors, "save_file", real)
    genzoo.resume(str(run), steps=4)  # space freed: it goes on
    assert json.loads((run / ckpt.TRAINER_JSON).read_text())["step"] == 4


# -- distributed (torchrun, gloo on CPU): slow -----------------------------------------------------
PIXELCNN_CLI = ["--set", "model.filters=8", "--set", "model.blocks=1", "--batch-size", "16",
                "--set", "sample_every=0", "--set", "log_every=1", "--set", "checkpoint_every=1000",
                "--no-progress", "--steps", "2000"]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def launch_and_wait_for_steps(tmp_path, steps=3):
    proc = subprocess.Popen([sys.executable, "-m", "genzoo", "train", "pixelcnn", *PIXELCNN_CLI,
                             "--nproc", "2", "--out", "run"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = tmp_path / "run" / ckpt.METRICS
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    return proc


def saved_where_it_stopped(run: Path) -> int:
    step = json.loads((run / ckpt.TRAINER_JSON).read_text())["step"]
    logged = [m["step"] for m in ckpt.Run(run).metrics()]
    assert 0 < step < 2000 and logged[-1] == step  # the last completed step, nothing after it
    assert leftovers(run) == []
    return step


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_distributed_run_saves_on_rank_0(tmp_path, signum):
    proc = launch_and_wait_for_steps(tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    step = saved_where_it_stopped(tmp_path / "run")
    name = signal.Signals(signum).name
    assert f"stopped by {name}; the checkpoint of step {step} is kept" in err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_torchrun_and_rank_0_saves(tmp_path):
    proc = launch_and_wait_for_steps(tmp_path)
    (agent,) = children(proc.pid)
    workers = children(agent)
    assert len(workers) == 2
    os.kill(agent, signal.SIGKILL)
    proc.communicate(timeout=120)
    deadline = time.time() + 60
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.5)
    assert not any(alive(w) for w in workers)  # was: they finished the run in the background
    saved_where_it_stopped(tmp_path / "run")
