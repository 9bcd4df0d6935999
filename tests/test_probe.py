"""The fault suite of issue 21 §6/§7 for the classes that are the CLI's and the environment's:
every environment variable genzoo reads set to nonsense, seeds outside [0, 2^64 - 1] or not
integers, an allocation that fails, and a full disk while a sample is written. Each case ends in
one line naming what was wrong and what is valid, a non-zero exit code, and nothing
half-written (no *.tmp file, no run folder or a resumable one). Open-ended inputs are drawn by
hypothesis, bounded to 25 examples each."""
import builtins
import errno
import io
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cli_checks import one_line_error  # noqa: E402
from genzoo.cli import cli  # noqa: E402
from genzoo.core import env as envlib  # noqa: E402
from genzoo.errors import ConfigError, GenzooError  # noqa: E402

BOUNDED = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
TINY_TRAIN = ["--steps", "1", "--set", "filters=8", "--set", "blocks=1", "--set", "batch_size=4",
              "--set", "sample_every=0", "--no-progress", "--device", "cpu"]
# what an environment variable can hold (no NUL), stripped of what every reader accepts as unset
env_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                   min_size=1, max_size=24).filter(lambda s: s.strip())


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, prog_name="zoo")


def leftovers(root: Path) -> list[Path]:
    """Half-written files: temporaries of atomic writes and streamed archives."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def patch_loaded_run(monkeypatch, what, fn):
    """Replace how a loaded run samples (`what` = "sample") or writes ("write"): the plain
    method and its chunked form, where the run has one."""
    from genzoo.core import runner
    for name in (what, f"{what}_chunks"):
        if hasattr(runner.LoadedRun, name):
            monkeypatch.setattr(runner.LoadedRun, name, fn)


@pytest.fixture
def images(tmp_path):
    """A folder of 12 small grayscale PNGs: the cheapest data that goes through the data root
    and the decoded-image cache."""
    from PIL import Image
    import numpy as np
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import genzoo
    out = tmp_path_factory.mktemp("probe") / "run"
    genzoo.train("pixelcnn", steps=2, out=str(out), **{
        "model.filters": 8, "model.blocks": 1, "train.batch_size": 16, "train.sample_every": 0})
    return out


# -- the readers ---------------------------------------------------------------------------------

def _int_or_none(s: str) -> int | None:
    return int(s.strip()) if re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", s) else None


@BOUNDED
@given(env_text)
def test_env_int_takes_integer_literals_in_range_and_names_anything_else(value):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENZOO_PROBE_INT", value)
        n = _int_or_none(value)
        if n is not None and 0 <= n <= 1000:
            assert envlib.env_int("GENZOO_PROBE_INT", 7, 0, 1000, "bytes") == n
            return
        with pytest.raises(ConfigError) as e:
            envlib.env_int("GENZOO_PROBE_INT", 7, 0, 1000, "bytes")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("environment variable GENZOO_PROBE_INT=")
        assert "expected a whole number of bytes >= 0 and <= 1000" in msg and "default 7" in msg


@pytest.mark.parametrize("value", ["abc", "-5", "1e9", "1.5", "0x10", "9" * 40, "1_000", "١٢"])
def test_env_int_refuses_what_is_not_a_plain_integer(value, monkeypatch):
    monkeypatch.setenv("GENZOO_PROBE_INT", value)
    with pytest.raises(ConfigError, match="GENZOO_PROBE_INT="):
        envlib.env_int("GENZOO_PROBE_INT", 1, 0)


def assert_reads_on_or_off(variable: str, value: str, read) -> None:
    """With `variable` set to `value`, ``read()`` is True/False for the words genzoo knows,
    else one ConfigError naming the variable and the valid values."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(variable, value)
        word = value.strip().lower()
        if word in envlib.TRUE + envlib.FALSE:
            assert read() is (word in envlib.TRUE)
        else:
            with pytest.raises(ConfigError, match=rf"{variable}=.* expected 1 or 0"):
                read()


@BOUNDED
@given(env_text)
def test_env_bool_and_choice_name_the_variable_and_the_valid_values(value):
    assert_reads_on_or_off("GENZOO_PROBE_BOOL", value,
                           lambda: envlib.env_bool("GENZOO_PROBE_BOOL", None))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENZOO_PROBE_BOOL", value)
        word = value.strip().lower()
        if word in ("fast", "slow"):
            assert envlib.env_choice("GENZOO_PROBE_BOOL", "fast", ["fast", "slow"]) == word
        else:
            with pytest.raises(ConfigError, match="expected one of fast, slow"):
                envlib.env_choice("GENZOO_PROBE_BOOL", "fast", ["fast", "slow"])


def test_unset_or_blank_variables_mean_the_default(monkeypatch):
    monkeypatch.delenv("GENZOO_PROBE", raising=False)
    assert envlib.env_int("GENZOO_PROBE", 3) == 3 and envlib.env_bool("GENZOO_PROBE", True)
    assert envlib.env_names("GENZOO_PROBE") is None and envlib.env_path("GENZOO_PROBE") is None
    monkeypatch.setenv("GENZOO_PROBE", "  ")
    assert envlib.env_int("GENZOO_PROBE", 3) == 3 and envlib.env_choice("GENZOO_PROBE", "a", "ab") == "a"
    assert envlib.env_names("GENZOO_PROBE") == set()  # set but empty: none


# -- every variable genzoo reads, where it is used -----------------------------------------------

@BOUNDED
@given(env_text)
def test_genzoo_data_that_is_not_a_usable_folder_is_one_line(tmp_path_factory, value):
    from genzoo.core.data_config import data_root
    base = tmp_path_factory.mktemp("root")
    (base / "afile").write_text("x")
    for candidate in (value, f"{base}/afile", f"{base}/afile/{value.strip()}"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GENZOO_DATA", candidate)
            mp.chdir(base)
            try:
                root = data_root()
            except ConfigError as e:
                assert "\n" not in str(e) and "GENZOO_DATA=" in str(e), str(e)
                continue
            assert not root.exists() or root.is_dir()
            assert candidate == value  # the file and the path inside it are always refused


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_genzoo_data_under_a_folder_nobody_may_write_is_one_line(tmp_path, monkeypatch):
    from genzoo.core.data_config import data_root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("GENZOO_DATA", str(locked / "data"))
    with pytest.raises(ConfigError, match="cannot be made: no permission to write in"):
        data_root()


@pytest.mark.parametrize("var,value,needles", [
    ("GENZOO_DATA", "{file}", ["GENZOO_DATA=", "is a file, not a folder"]),
    ("GENZOO_DATA", "{file}/sub", ["GENZOO_DATA=", "which is a file"]),
    ("GENZOO_MMAP_BYTES", "abc", ["GENZOO_MMAP_BYTES='abc'"]),
    ("GENZOO_MMAP_BYTES", "-5", ["GENZOO_MMAP_BYTES='-5'"]),
    ("GENZOO_CPU_BF16", "maybe", ["GENZOO_CPU_BF16='maybe'", "expected 1 or 0"]),
    ("RANK", "abc", ["RANK='abc'"]),
    ("WORLD_SIZE", "abc", ["WORLD_SIZE='abc'"]),
    ("LOCAL_RANK", "abc", ["LOCAL_RANK='abc'"]),
])
def test_training_with_a_nonsense_variable_is_one_line_and_leaves_no_run(
        var, value, needles, images, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GENZOO_CPU_BF16", "GENZOO_MMAP_BYTES"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, value.format(file=tmp_path / "afile"))
    out = tmp_path / "run"
    res = invoke("train", "pixelcnn", *TINY_TRAIN, "--data", f"folder:{images}",
                 "--set", "data.channels=1", "--set", "train.amp=auto", "--out", str(out))
    one_line_error(res, *needles)
    assert not out.exists() and not leftovers(tmp_path)


def test_variables_a_command_does_not_use_do_not_stop_it(monkeypatch):
    """Read where used, never at import: `zoo --help` and `zoo list` work whatever these hold."""
    for var, value in (("GENZOO_MMAP_BYTES", "abc"), ("GENZOO_CPU_BF16", "maybe"),
                       ("GENZOO_DATA", "/dev/null"), ("GENZOO_DEBUG", "maybe")):
        monkeypatch.setenv(var, value)
    assert invoke("--help").exit_code == 0
    res = invoke("list", "--json")
    assert res.exit_code == 0 and "pixelcnn" in res.output


@BOUNDED
@given(env_text)
def test_genzoo_load_plugins_names_plugins_or_is_one_line(value):
    from genzoo.core import registry
    ok = all(re.fullmatch(r"[A-Za-z0-9_.\-]+", s.strip()) for s in value.split(",") if s.strip()) \
        and any(s.strip() for s in value.split(","))
    registry.reset()
    try:
        res = invoke("list", "--json", env={"GENZOO_LOAD_PLUGINS": value})
    finally:
        registry.reset()
    if ok:
        assert res.exit_code == 0 and "pixelcnn" in res.output, res.output
    else:
        one_line_error(res, "GENZOO_LOAD_PLUGINS=", "plugin names separated by commas")


def test_genzoo_load_plugins_with_only_commas_is_not_none_by_accident():
    from genzoo.core import registry
    registry.reset()
    try:
        one_line_error(invoke("list", env={"GENZOO_LOAD_PLUGINS": ",,"}),
                       "GENZOO_LOAD_PLUGINS=',,'", "it names no plugin", "set it empty for none")
    finally:
        registry.reset()


@BOUNDED
@given(env_text)
def test_genzoo_strict_plugins_is_on_or_off(value):
    from genzoo.core import plugins
    assert_reads_on_or_off("GENZOO_STRICT_PLUGINS", value, plugins.strict)


@BOUNDED
@given(env_text.filter(lambda s: s.strip().lower() not in envlib.TRUE + envlib.FALSE))
def test_genzoo_debug_nonsense_is_named_on_the_line_of_the_error(value):
    res = invoke("sample", "/no/such/run", env={"GENZOO_DEBUG": value})
    one_line_error(res, "no run at /no/such/run", "GENZOO_DEBUG=", "expected 1 or 0")


def test_genzoo_debug_shows_the_traceback_behind_a_one_line_error():
    res = invoke("sample", "/no/such/run", env={"GENZOO_DEBUG": "1"})
    assert res.exit_code != 0 and "no run at /no/such/run" in str(res.exception)


# -- seeds ---------------------------------------------------------------------------------------

SEED_MAX = 2 ** 64 - 1
outside = st.one_of(st.integers(max_value=-1), st.integers(min_value=SEED_MAX + 1),
                    st.integers(min_value=2 ** 64, max_value=10 ** 60))
not_integers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12).filter(lambda s: not re.fullmatch(r"\s*[+-]?[0-9_]+\s*", s)))


@BOUNDED
@given(outside)
def test_sample_seed_outside_uint64_is_one_line_and_writes_nothing(tiny_run, seed):
    before = sorted(tiny_run.rglob("*"))
    res = invoke("sample", str(tiny_run), "--n", "2", "--seed", str(seed))
    one_line_error(res, "--seed", f"[0, {SEED_MAX}]")
    assert sorted(tiny_run.rglob("*")) == before


def test_sample_seed_at_the_edges_of_uint64_works(tiny_run, tmp_path):
    for seed in (0, SEED_MAX):
        res = invoke("sample", str(tiny_run), "--n", "2", "--seed", str(seed),
                     "--out", str(tmp_path / f"s{seed}"))
        assert res.exit_code == 0, res.output


@BOUNDED
@given(not_integers.filter(lambda s: "\x00" not in s))
def test_a_seed_that_is_not_an_integer_is_one_line(tiny_run, text):
    one_line_error(invoke("sample", str(tiny_run), "--seed", text), "--seed")
    one_line_error(invoke("train", "pixelcnn", "--seed", text, "--steps", "1"), "--seed")
    res = invoke("train", "pixelcnn", "--set", f"seed={text}", "--steps", "1")
    one_line_error(res, "seed")


@BOUNDED
@given(st.one_of(outside, st.integers(min_value=2 ** 32, max_value=SEED_MAX)))
def test_train_seed_outside_its_range_is_one_line_and_makes_no_run(tmp_path_factory, seed):
    out = tmp_path_factory.mktemp("seed") / "run"
    for args in (["--seed", str(seed)], ["--set", f"seed={seed}"], ["--set", f"train.seed={seed}"]):
        res = invoke("train", "pixelcnn", *TINY_TRAIN, *args, "--out", str(out))
        one_line_error(res, "seed")
        assert not out.exists()


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 64, 10 ** 30, 1.5, "x", True])
def test_python_api_train_seed_is_checked(seed, tmp_path):
    import genzoo
    with pytest.raises(GenzooError, match="seed"):
        genzoo.train("pixelcnn", steps=1, out=str(tmp_path / "run"), seed=seed,
                     **{"model.filters": 8, "model.blocks": 1})
    assert not (tmp_path / "run").exists()


def test_check_seed():
    from genzoo.core.train_config import check_seed
    assert check_seed(0) == 0 and check_seed(SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 1.0, "3", None, False):
        with pytest.raises(ConfigError, match=rf"^bad value .* for --seed: expected an integer in \[0, {SEED_MAX}\]$"):
            check_seed(bad, "--seed")


# -- memory --------------------------------------------------------------------------------------

CPU_ALLOC = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
             "memory: you tried to allocate 3072000000 bytes. Error code 12 (Cannot allocate memory)")


def _oom_errors():
    import torch
    return [
        (RuntimeError(CPU_ALLOC), "not enough memory: tried to allocate 2.86 GiB"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a "
                                "total capacity of 79.10 GiB"),
         "not enough GPU memory: tried to allocate 20.00 GiB"),
        (MemoryError(), "not enough memory (MemoryError)"),
        (MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000000, 1000)"),
         "not enough memory: tried to allocate 7.45 GiB"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_sampling_out_of_memory_is_one_line_naming_the_size_and_what_to_lower(
        case, tiny_run, tmp_path, monkeypatch):
    error, needle = _oom_errors()[case]

    def fail(*args, **kwargs):
        raise error
    patch_loaded_run(monkeypatch, "sample", fail)
    res = invoke("sample", str(tiny_run), "--n", "64", "--out", str(tmp_path / "s"))
    one_line_error(res, needle, "lower --n")
    assert not list(tmp_path.glob("s*")) and not leftovers(tiny_run)


def test_training_out_of_memory_is_one_line_and_the_run_stays_resumable(tmp_path, monkeypatch):
    """Memory that runs out at step 3 of 4 (checkpoints every step): one line, and the run
    resumes from its last checkpoint to the end."""
    from genzoo.plugins.pixelcnn import PixelCNN
    real, calls = PixelCNN.loss, []

    def loss(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError(CPU_ALLOC)
        return real(self, batch)
    monkeypatch.setattr(PixelCNN, "loss", loss)
    out = tmp_path / "run"
    res = invoke("train", "pixelcnn", *TINY_TRAIN, "--steps", "4", "--set", "checkpoint_every=1",
                 "--out", str(out))
    one_line_error(res, "not enough memory: tried to allocate 2.86 GiB", "lower --batch-size")
    assert not leftovers(tmp_path)
    monkeypatch.setattr(PixelCNN, "loss", real)
    res = invoke("train", "--resume", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    import json
    assert json.loads((out / "trainer.json").read_text())["step"] == 4


@pytest.mark.slow
def test_a_real_allocation_failure_under_ulimit_is_one_line(tmp_path):
    """The probe's case: `ulimit -v` and a size far too big for it (30 GiB asked for, 6 GiB
    allowed) end in one line, not a RuntimeError traceback."""
    import subprocess
    import sys
    zoo = Path(sys.executable).with_name("zoo")
    cmd = (f"ulimit -v 6000000; exec {zoo} train pixelcnn --steps 1 --set filters=8 --set blocks=1 "
           f"--set batch_size=16 --set data.size=3000 --no-progress --out {tmp_path / 'run'}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0 and len(out.splitlines()) == 1, out
    assert "not enough memory: tried to allocate" in out and "lower --batch-size" in out, out
    assert not leftovers(tmp_path)


# -- a full or read-only disk --------------------------------------------------------------------

def _failing_writes(monkeypatch, under: Path, code: int):
    """Files opened for writing under `under` accept the open and fail on the write (the
    buffer's flush), as a full disk does."""
    real_open = builtins.open

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(code, os.strerror(code))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") \
                and Path(os.fspath(file)).resolve().is_relative_to(under.resolve()):
            raw = Full(os.fspath(file), mode.replace("b", "").replace("t", "") or "w")
            if "b" in mode:
                return io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
            return io.TextIOWrapper(io.BufferedWriter(raw), encoding=kwargs.get("encoding") or "utf-8")
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_sample_write_on_a_full_or_read_only_disk_is_one_line_naming_the_path(
        code, tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _failing_writes(monkeypatch, out, code)
    res = invoke("sample", str(tiny_run), "--n", "4", "--out", str(out / "grid"))
    one_line_error(res, str(out))
    assert "Traceback" not in res.output
    if code == errno.ENOSPC:
        assert "space" in res.output.lower()
    assert not leftovers(out) and not list(out.glob("grid*")), list(out.iterdir())


def test_os_errors_without_a_path_name_the_output_being_written(monkeypatch, tiny_run, tmp_path):
    """An ENOSPC raised with no file name (a flush, a library's own write) names the output
    the command was writing."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    patch_loaded_run(monkeypatch, "write", full)
    res = invoke("sample", str(tiny_run), "--n", "2", "--out", str(tmp_path / "g"))
    one_line_error(res, "No space left on device", str(tmp_path / "g"), "free some space")


# -- numbers and bugs ----------------------------------------------------------------------------

def test_an_overflow_from_a_users_number_is_one_line(monkeypatch, tiny_run):
    def overflow(*args, **kwargs):
        raise ValueError("Overflow when unpacking long long")
    patch_loaded_run(monkeypatch, "sample", overflow)
    one_line_error(invoke("sample", str(tiny_run), "--n", "2"), "a number is too large",
                   "Overflow when unpacking long")
    patch_loaded_run(monkeypatch, "sample", lambda *a, **k: 10.0 ** 400)
    one_line_error(invoke("sample", str(tiny_run), "--n", "2"), "a number is too large")


def test_a_bug_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, tiny_run):
    def bug(*args, **kwargs):
        raise ValueError("an internal shape mismatch")
    patch_loaded_run(monkeypatch, "sample", bug)
    res = invoke("sample", str(tiny_run), "--n", "2")
    assert res.exit_code == 1
    assert "Traceback" in res.output and "ValueError: an internal shape mismatch" in res.output
    assert res.output.strip().splitlines()[-1].startswith("zoo: this is a bug in genzoo")
    assert "GENZOO_DEBUG=1" in res.output


@pytest.mark.parametrize("args,needles", [
    (["train", "pixelcnn", "--steps", "many"], ["Invalid value for '--steps'", "zoo train --help"]),
    (["sample"], ["Missing argument 'RUN'", "zoo sample --help"]),
    (["--bogus"], ["No such option '--bogus'", "zoo --help"]),
    (["trian"], ["No such command 'trian'"]),
])
def test_usage_errors_are_one_line_with_where_to_look(args, needles):
    res = invoke(*args)
    one_line_error(res, *needles)
    assert res.exit_code == 2
