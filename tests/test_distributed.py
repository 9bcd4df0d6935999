"""Data-parallel training under torchrun (gloo on CPU, loopback): two processes follow one process
with the same global batch and seed; rank 0 alone writes the run; a distributed run resumes."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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

    class Torchrun:  # subprocess.Popen's part that launch uses
        def __init__(self, cmd, **kwargs):
            calls.append((cmd, kwargs))

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0
    monkeypatch.setattr(distributed.subprocess, "Popen", Torchrun)
    assert distributed.launch(["train", "pixelcnn", "--nproc", "1", "--steps", "3",
                               "--nproc=1"], 1, device="cpu") == 0
    cmd, kwargs = calls[0]
    assert cmd[1:3] == ["-c", distributed._TORCHRUN]  # torch.distributed.run's main, no traceback
    assert cmd[3:] == ["--standalone", "--nproc-per-node=1", "-m", "genzoo", "train", "pixelcnn",
                       "--steps", "3"]
    if os.name == "posix":  # a session of its own (one Ctrl-C, passed on once), dies with us
        assert kwargs["start_new_session"] and kwargs["preexec_fn"] is not None


SETUP = "a distributed run needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, "RANK is set (0) but WORLD_SIZE is not"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set (2) but RANK is not"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "1e3"}, "WORLD_SIZE='1e3' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside WORLD_SIZE=2 (ranks are 0..1)"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK=-1 is outside WORLD_SIZE=2"),
    ({"LOCAL_RANK": "-3"}, "LOCAL_RANK=-3 is negative"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR is not set (WORLD_SIZE=2)"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost"}, "MASTER_PORT is not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "70000"},
     "MASTER_PORT=70000 is not a port (1..65535)"),
])
def test_an_incomplete_distributed_environment_is_one_line(monkeypatch, env, message):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        distributed.init("cpu")
    assert str(e.value).startswith(message) and SETUP in str(e.value)
    res = CliRunner().invoke(cli, ["train", "pixelcnn", *SETS, "--steps", "1", "--out", "run",
                                   "--no-progress"])
    one_line_error(res, message)
    assert not os.path.exists("run")  # refused before the run folder is made


def test_one_process_environments_are_accepted(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.world() == (0, 1, 0)
    monkeypatch.setenv("RANK", "")  # set but empty: unset
    assert distributed.world() == (0, 1, 0)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.world() == (0, 1, 0) and distributed.init("cpu") is False


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank, needle", [(0, "for its peers, who never came"),
                                          (1, "for rank 0 at 127.0.0.1:")])
def test_a_rank_whose_peers_never_come_stops_after_the_rendezvous_timeout(monkeypatch, rank,
                                                                          needle):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "1.5")
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        distributed.init("cpu")
    assert time.monotonic() - start < 15  # torch's default: 30 minutes, silently
    text = str(e.value)
    assert text.startswith(f"rank {rank} of 2 waited 1.5 s") and needle in text
    assert "GENZOO_DIST_TIMEOUT=SECONDS" in text and "\n" not in text
    assert not torch.distributed.is_initialized()


ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=12)


@settings(max_examples=25, deadline=None)
@given(st.fixed_dictionaries({}, optional={v: st.one_of(ENV_TEXT, st.integers(-3, 5).map(str))
                                           for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                     "MASTER_ADDR", "MASTER_PORT")}))
def test_any_distributed_environment_is_a_world_or_one_line(env):
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            mp.delenv(var, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        try:
            r, n, local = distributed.world()
        except ConfigError as e:
            assert "\n" not in str(e) and ("RANK" in str(e) or "WORLD_SIZE" in str(e)
                                           or "MASTER_" in str(e))
            return
        assert 0 <= r < n and local >= 0
        if n > 1:
            assert 1 <= int(os.environ["MASTER_PORT"]) <= 65535 and os.environ["MASTER_ADDR"]


@settings(max_examples=25, deadline=None)
@given(ENV_TEXT)
def test_any_rendezvous_timeout_is_seconds_or_one_line(value):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(distributed.TIMEOUT_ENV, value)
        try:
            seconds = distributed.rendezvous_timeout()
        except ConfigError as e:
            assert "\n" not in str(e) and "GENZOO_DIST_TIMEOUT" in str(e)
            return
        assert 0 < seconds <= 7 * 24 * 3600


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e9"])
def test_a_nonsense_rendezvous_timeout_is_one_line(monkeypatch, value):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match="GENZOO_DIST_TIMEOUT=.* must be a number of seconds"):
        distributed.rendezvous_timeout()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.rendezvous_timeout() == 90
    monkeypatch.delenv(distributed.TIMEOUT_ENV)
    assert distributed.rendezvous_timeout() == distributed.RENDEZVOUS_TIMEOUT == 60


class _Left(Exception):
    """os._exit, caught: the process would have ended here with `code`."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def test_a_torchrun_rank_leaves_through_os_exit_with_its_commands_exit_code(monkeypatch, capsys):
    """A rank skips the interpreter's shutdown (where gloo's threads aborted a finished rank about
    once in 40 runs), keeping its command's exit code and messages; one process is untouched."""
    def leave(code):
        raise _Left(code)
    monkeypatch.setattr(os, "_exit", leave)

    def exits(command):
        with pytest.raises(_Left) as left:
            distributed.run_rank(command)
        return left.value.code

    def fails(e):
        def command():
            raise e
        return command
    assert exits(lambda: None) == 0
    assert exits(fails(SystemExit(0))) == 0 and exits(fails(SystemExit(None))) == 0
    assert exits(fails(SystemExit(2))) == 2
    assert exits(fails(SystemExit("rank 1: bad"))) == 1
    assert "rank 1: bad" in capsys.readouterr().err
    assert exits(fails(RuntimeError("a bug"))) == 1
    assert "RuntimeError: a bug" in capsys.readouterr().err  # a bug keeps its traceback
    # `python -m genzoo` as torchrun starts it: a user mistake is still one line and exit code 2
    from genzoo import cli as cli_module
    monkeypatch.setattr(sys, "argv", ["zoo", "no-such-command"])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(_Left) as left:
        cli_module.main()
    assert left.value.code == 2 and "No such command" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: click's own exit, no os._exit
    with pytest.raises(SystemExit) as done:
        cli_module.main()
    assert done.value.code == 2
