"""Data read exactly (issue 21, section 5, and the data files of section 6): every PIL mode an
image folder accepts decodes as a reference conversion says (16-bit scaled, not clipped; alpha
composited on white); the image cache notices a replaced image whose size and mtime were put
back; decode workers die with a killed parent and its temporary goes at the next start; unknown
prompt words are refused by name; hand-edited run files (a dtype, an artifact key, another
model's weights) are one line naming the file and the key; data files that are not UTF-8, JSON
or CSV are one line naming the file and where they broke."""
import csv
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genzoo import api
from genzoo.cli import cli
from genzoo.core.data import DataConfig, load
from genzoo.core.image_folder import remove_stale_temporaries, to_8bit
from genzoo.core.text import Tokenizer, read_documents
from genzoo.errors import CheckpointError, ConfigError, DataError
from genzoo.nn.music import parse_prompt
from genzoo.plugins.datasets import read_attribute_csv
from cli_checks import one_line_error

RNG = np.random.default_rng(21)
REPO = Path(__file__).resolve().parents[1]


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


# -- every PIL mode against a reference conversion ------------------------------------------------

def grey_to(mode: str, g: np.ndarray) -> np.ndarray:
    """Reference (H, W) grey -> (H, W, C) of `mode`."""
    return g[..., None] if mode == "L" else np.repeat(g[..., None], 3, axis=2)


def rgb_to(mode: str, rgb: np.ndarray) -> np.ndarray:
    """Reference (H, W, 3) -> `mode`; L is ITU-R 601 luma (what Pillow computes)."""
    if mode == "RGB":
        return rgb
    return np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The stated background: transparent pixels are composited on white."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.floor(rgb * a + 255 * (1 - a) + 0.5)


def cases() -> dict[str, tuple[Image.Image, callable]]:
    """mode -> (an 8x8 image, reference(target mode) -> expected (H, W, C) uint8 values)."""
    u16 = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
    i32 = RNG.integers(0, 65536, (8, 8)).astype(np.int32)
    f32 = RNG.random((8, 8)).astype(np.float32)
    u8 = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    bits = RNG.integers(0, 2, (8, 8)).astype(bool)
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 4, (8, 8), dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.flatten().tolist())
    pt = p.copy()
    pt.info["transparency"] = 2  # palette entry 2 is transparent
    pt_alpha = np.where(index == 2, 0, 255)
    cmyk = u8.astype(np.float64) / 255
    scale16 = lambda v: np.round(v.astype(np.float64) / 257)  # noqa: E731 - round(v * 255 / 65535)
    return {
        "1": (Image.fromarray(bits), lambda m: grey_to(m, bits * 255)),
        "L": (Image.fromarray(u8[..., 0]), lambda m: grey_to(m, u8[..., 0])),
        "RGB": (Image.fromarray(u8[..., :3]), lambda m: rgb_to(m, u8[..., :3])),
        "I;16": (Image.fromarray(u16), lambda m: grey_to(m, scale16(u16))),
        "I;16B": (Image.frombytes("I;16B", (8, 8), u16.astype(">u2").tobytes()),
                  lambda m: grey_to(m, scale16(u16))),
        "I": (Image.fromarray(i32), lambda m: grey_to(m, scale16(i32))),
        "F": (Image.fromarray(f32), lambda m: grey_to(m, np.round(f32.astype(np.float64) * 255))),
        "P": (p, lambda m: rgb_to(m, palette[index])),
        "P+transparency": (pt, lambda m: rgb_to(m, on_white(palette[index], pt_alpha))),
        "LA": (Image.fromarray(u8[..., :2], "LA"),
               lambda m: grey_to(m, on_white(u8[..., :1], u8[..., 1])[..., 0])),
        "RGBA": (Image.fromarray(u8, "RGBA"), lambda m: rgb_to(m, on_white(u8[..., :3], u8[..., 3]))),
        "CMYK": (Image.frombytes("CMYK", (8, 8), u8.tobytes()),
                 lambda m: rgb_to(m, np.round(255 * (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:])))),
    }


CASES = cases()


@pytest.mark.parametrize("target", ["RGB", "L"])
@pytest.mark.parametrize("source", list(CASES))
def test_every_accepted_mode_decodes_as_its_reference(source, target):
    im, reference = CASES[source]
    got = np.asarray(to_8bit(im, target)).astype(np.int64)
    got = got[..., None] if got.ndim == 2 else got
    want = reference(target)
    assert got.shape == want.shape
    # colour -> luma and CMYK go through Pillow's fixed-point arithmetic: within one level
    colour = source in ("RGB", "P", "P+transparency", "RGBA")
    tolerance = 1 if source == "CMYK" or (target == "L" and colour) else 0
    assert np.abs(got - want).max() <= tolerance, (source, target)


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    """The issue's case: 20 16-bit PNGs; Pillow's own conversion turned 19 of them white."""
    folder = tmp_path / "deep"
    folder.mkdir()
    raw = RNG.integers(0, 65536, (20, 8, 8), dtype=np.uint16)
    for i, a in enumerate(raw):
        Image.fromarray(a).save(folder / f"{i:02d}.png")
    assert Image.open(folder / "00.png").mode == "I;16"
    data = load(DataConfig(name="folder", path=str(folder), channels=1, limit=20,
                           test_fraction=0.05), "train")
    idx = [int(i) for i in __import__("genzoo.core.datasets", fromlist=["x"]).split_index(
        20, "train", 0.05)]
    want = torch.from_numpy(np.round(raw[idx].astype(np.float64) / 257).astype(np.uint8))
    assert torch.equal(data.x[:, 0], want)
    assert int((data.x == 255).flatten(1).all(1).sum()) == 0  # no image turned white


def test_saved_files_of_each_mode_decode_as_in_memory(tmp_path):
    """What Pillow writes and reads back (PNG, GIF with a transparent colour, 1-bit) goes through
    the same exact path as an image in memory."""
    folder = tmp_path / "modes"
    folder.mkdir()
    for name in ("1", "L", "RGB", "I;16", "P", "LA", "RGBA"):
        CASES[name][0].save(folder / f"{name.replace(';', '_')}.png")
    CASES["P+transparency"][0].save(folder / "pt.gif", transparency=2)
    data = load(DataConfig(name="folder", path=str(folder), limit=None, test_fraction=0.1))
    n = len(data) + len(load(DataConfig(name="folder", path=str(folder), test_fraction=0.1),
                             "test"))
    assert n == 8 and data.x.dtype == torch.uint8 and data.x.shape[1:] == (3, 8, 8)
    for path in sorted(folder.iterdir()):
        key = "P+transparency" if path.suffix == ".gif" else path.stem.replace("_", ";")
        with Image.open(path) as im:
            got = np.asarray(to_8bit(im, "RGB")).astype(np.int64)
        assert np.abs(got - CASES[key][1]("RGB")).max() == 0, key


@pytest.mark.parametrize("values,needle", [
    (np.full((8, 8), 2.0, np.float32), "float pixels from 2 to 2; float images must hold values in [0, 1]"),
    (np.full((8, 8), np.nan, np.float32), "float images must hold values in [0, 1]"),
    (np.full((8, 8), 70000, np.int32), "only 16-bit values (0..65535)"),
    (np.full((8, 8), -1, np.int32), "32-bit integer pixels from -1 to -1"),
])
def test_pixels_without_a_known_8_bit_scale_are_one_line(tmp_path, values, needle):
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(values).save(folder / "a.png", format="TIFF")  # Pillow reads by content
    with pytest.raises(DataError) as e:
        load(DataConfig(name="folder", path=str(folder)))
    assert needle in one_line(e.value) and str(folder / "a.png") in str(e.value)
    left = [p.name for p in (tmp_path / "data-root" / "cache").iterdir()]
    assert not [n for n in left if n.endswith((".npy", ".tmp"))], left  # nothing half-written


def test_a_jpeg_orientation_tag_is_applied(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (16, 8), (200, 10, 10)).save(folder / "a.jpg", exif=exif)
    data = load(DataConfig(name="folder", path=str(folder)))
    assert data.x.shape[2:] == (16, 8)  # displayed upright: 8 wide, 16 high


# -- the image cache keys on what a content change cannot keep ---------------------------------

def bmp(path: Path, value: int) -> None:
    """An 8x8 BMP: its size depends only on its dimensions, so a new one has the same size."""
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format="BMP")


@pytest.mark.parametrize("how", ["replaced", "rewritten in place"])
def test_an_image_changed_with_its_size_and_mtime_put_back_is_decoded_again(tmp_path, how):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        bmp(folder / f"{i}.bmp", 10 * i)
    cfg = DataConfig(name="folder", path=str(folder), test_fraction=0.25)
    full = lambda: torch.cat([load(cfg, "train").x, load(cfg, "test").x])  # noqa: E731
    before = full()
    victim = folder / "2.bmp"
    st = victim.stat()
    if how == "replaced":
        bmp(tmp_path / "new.bmp", 255)
        os.replace(tmp_path / "new.bmp", victim)
    else:
        data = (tmp_path / "probe.bmp")
        bmp(data, 255)
        with open(victim, "r+b") as f:  # the same inode
            f.write(data.read_bytes())
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    after_st = victim.stat()
    assert (after_st.st_size, after_st.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = full()
    assert not torch.equal(before, after) and int(after.max()) == 255
    assert sorted(int(v) for v in after[:, 0, 0, 0]) == [0, 10, 10 * 3, 255]


# -- decode workers die with their parent; stale temporaries go -----------------------------------

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_decode_worker_dies_when_its_parent_is_killed(tmp_path):
    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from genzoo.core.image_folder import _worker_init
        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
            print(pool.submit(os.getpid).result(), flush=True)
            pool.submit(time.sleep, 120)  # a long decode
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    (tmp_path / "parent.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "parent.py")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    worker = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the decode worker outlived its killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_decode_killed_midway_leaves_no_worker_and_the_next_start_removes_its_temporary(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    tiny_png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny_png, format="PNG")
    for i in range(2000):  # the size at which worker processes decode
        (folder / f"{i:04d}.png").write_bytes(tiny_png.getvalue())
    root = tmp_path / "root"
    mark = f"genzoo-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "GENZOO_FAULT": "decode:chunk@0", "GENZOO_TEST_MARK": mark}
    code = ("from genzoo.core.data import DataConfig, load; "
            f"load(DataConfig(name='folder', path={str(folder)!r}, root={str(root)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in (root / "cache").glob(".*.tmp"))
    assert len(left) == 1 and left[0].endswith(".tmp")  # the kill left its temporary

    def marked() -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if mark.encode() in (d / "environ").read_bytes() and _alive(int(d.name)):
                        pids.append(int(d.name))
                except OSError:
                    pass
        return pids
    deadline = time.monotonic() + 10
    while marked() and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = marked()
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "decode workers outlived the killed run"
    data = load(DataConfig(name="folder", path=str(folder), root=str(root)))
    assert len(data) == 1800
    assert not list((root / "cache").glob(".*.tmp"))
    assert len(list((root / "cache").glob("*.npy"))) == 1


def test_only_temporaries_nobody_writes_are_removed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = cache / ".folder-aaaa.npy.999999.tmp"
    live = cache / ".folder-bbbb.npy.123.tmp"
    other = cache / ".notes.json.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"x")
    fd = os.open(cache / "folder-bbbb.npy.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a decode of bbbb in progress (this fd: "another process")
    try:
        removed = remove_stale_temporaries(cache)
    finally:
        os.close(fd)
    assert removed == [dead] and live.exists() and other.exists() and not dead.exists()


def test_nonsense_in_the_mmap_threshold_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    bmp(folder / "a.bmp", 1)
    bmp(folder / "b.bmp", 2)
    monkeypatch.setenv("GENZOO_MMAP_BYTES", "lots")
    with pytest.raises(ConfigError) as e:
        load(DataConfig(name="folder", path=str(folder)))
    assert "GENZOO_MMAP_BYTES='lots' is not valid: expected a whole number of bytes" in \
        one_line(e.value)


# -- prompts: unknown words are refused by name ---------------------------------------------------

VOCAB_TEXT = "recipe for tea with milk and honey . stir the pot , boil the water"
WORDS = Tokenizer.build([VOCAB_TEXT]).vocab[2:]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text("abcxyzq", min_size=1, max_size=8)),
                min_size=1, max_size=8))
def test_a_prompt_is_encoded_whole_or_refused_naming_each_unknown_word(words):
    tok = Tokenizer.build([VOCAB_TEXT])
    prompt = " ".join(words)
    unknown = [w for w in tok.split(prompt) if w not in tok.vocab]
    if not unknown:
        ids = tok.encode_prompt(prompt)
        assert [tok.vocab[i] for i in ids] == tok.split(prompt)  # nothing dropped
        return
    with pytest.raises(ConfigError) as e:
        tok.encode_prompt(prompt)
    msg = one_line(e.value)
    assert msg.startswith("unknown words in prompt: ")
    assert f"the run's {len(tok)}-word vocabulary" in msg
    for w in list(dict.fromkeys(unknown))[:8]:
        assert repr(w) in msg


def test_an_unknown_word_is_refused_with_a_close_word():
    tok = Tokenizer.build([VOCAB_TEXT])
    with pytest.raises(ConfigError) as e:
        tok.encode_prompt("recipe for honee")
    assert one_line(e.value) == ("unknown words in prompt: 'honee' (not in the run's 16-word "
                                 "vocabulary learned from its training data); close: 'honee' -> "
                                 "'honey'")


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    from tiny import tiny
    return api.train("gpt", "quick", tiny("gpt", steps=2), out=tmp_path_factory.mktemp("g") / "run",
                     progress=False)


def test_the_cli_names_the_unknown_prompt_words(gpt_run):
    res = CliRunner().invoke(cli, ["sample", str(gpt_run.path), "--n", "1", "--prompt",
                                   "recipe for xyzzy plugh"])
    one_line_error(res, "unknown words in prompt: 'xyzzy', 'plugh'", "-word vocabulary")


@settings(max_examples=25, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_a_music_prompt_parses_or_is_one_config_error(prompt):
    try:
        events = parse_prompt(prompt)
    except ConfigError as e:
        one_line(e)
        return
    assert events and all(isinstance(n, str) and isinstance(d, str) for n, d in events)


@pytest.mark.parametrize("prompt,needle", [
    ("G4:1e400", "out of range: from 1/64 to 64 quarter notes"),
    ("G4:1e-400", "out of range"),
    ("foo4/4TS", "time signature 'foo4/4TS' is not one"),
])
def test_music_prompt_numbers_that_overflow_are_one_line(prompt, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse_prompt(prompt)


# -- hand-edited run files ------------------------------------------------------------------------

def rewrite(path: Path, edit) -> None:
    """Rewrite a safetensors file through `edit(tensors)`, keeping its metadata (the step)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)


def copy_run(run, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(".lock", "*.lock"))
    return dest


def test_weights_of_the_wrong_dtype_are_one_line(gpt_run, tmp_path):
    run = copy_run(gpt_run, tmp_path)
    key = sorted(load_file(run / "model.safetensors"))[0]
    rewrite(run / "model.safetensors", lambda t: t.update({key: t[key].double()}))
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    msg = one_line(e.value)
    assert str(run / "model.safetensors") in msg
    assert msg.endswith(f"does not fit this model: dtype mismatch {key} float64 vs float32 "
                        "(the file's vs the model's)")


def test_a_missing_or_retyped_artifact_is_one_line(gpt_run, tmp_path):
    run = copy_run(gpt_run, tmp_path)
    rewrite(run / "artifacts.safetensors", lambda t: t.pop("start_counts"))
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    assert one_line(e.value) == (f"{run / 'artifacts.safetensors'} lacks the artifact "
                                 "'start_counts' (expected a float32 tensor): the run is damaged "
                                 "or was edited; restore it from a copy")
    shutil.copy(gpt_run.path / "artifacts.safetensors", run / "artifacts.safetensors")
    rewrite(run / "artifacts.safetensors", lambda t: t.update(start_counts=t["start_counts"].long()))
    with pytest.raises(CheckpointError, match="artifact 'start_counts' is a int64 tensor, "
                                              "expected a float32 tensor"):
        api.load_run(run)


def test_an_optional_artifact_deleted_by_hand_is_one_line(gpt_run, tmp_path):
    """A GPT built from config has no tokenizer until it loads one, so only the run's own list
    of what it saved tells that the tokenizer was deleted."""
    run = copy_run(gpt_run, tmp_path)
    obj = json.loads((run / "artifacts.json").read_text())
    assert obj["keys"] == ["start_counts", "tokenizer"]
    del obj["artifacts"]["tokenizer"]
    (run / "artifacts.json").write_text(json.dumps(obj))
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    assert one_line(e.value) == (
        f"{run}: the run saved the artifact 'tokenizer' (its artifact files list it) but "
        "neither artifacts.safetensors nor artifacts.json holds it: the files were edited or "
        "mixed from different runs; restore the run from a copy")


def test_an_artifact_the_model_does_not_save_is_one_line(gpt_run, tmp_path):
    run = copy_run(gpt_run, tmp_path)
    obj = json.loads((run / "artifacts.json").read_text())
    obj["artifacts"]["vocabularies"] = {"notes": [], "durations": []}  # a music model's
    (run / "artifacts.json").write_text(json.dumps(obj))
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    assert "holds 'vocabularies', which GPT does not save" in one_line(e.value)


def test_a_corrupt_tokenizer_is_one_line_naming_the_run(gpt_run, tmp_path):
    run = copy_run(gpt_run, tmp_path)
    obj = json.loads((run / "artifacts.json").read_text())
    obj["artifacts"]["tokenizer"]["vocab"][5] = 7
    (run / "artifacts.json").write_text(json.dumps(obj))
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    assert "vocab must be a list of strings" in one_line(e.value) and str(run) in str(e.value)


def test_another_models_weights_with_the_step_stamp_changed_are_one_line(gpt_run, tmp_path):
    from genzoo.core.tensors import save_weights
    from genzoo.plugins.gpt import GPT, GPTConfig
    run = copy_run(gpt_run, tmp_path)
    other = GPT(GPTConfig(vocab=500, context=24, layers=1, heads=2, embed_dim=16, key_dim=8,
                          ff_dim=32))  # another GPT's weights, stamped with this run's step
    step = json.loads((run / "trainer.json").read_text())["step"]
    save_weights(other, run / "model.safetensors", {"genzoo_step": str(step)})
    with pytest.raises(CheckpointError) as e:
        api.load_run(run)
    msg = one_line(e.value)
    assert "does not fit this model: shape mismatch" in msg and "(the file's vs the model's)" in msg


# -- data files that are not UTF-8, JSON or CSV ----------------------------------------------------

@pytest.mark.parametrize("fmt,body,needle", [
    ("txt", b"first line\nsecond \xff line\n", "is not UTF-8 text: byte 0xff at line 2, column 8 "
                                                "(byte offset 18)"),
    ("json", b'[{"a": "x"},\n {"a": "y",}]', "is not valid JSON: Expecting property name enclosed "
                                            "in double quotes at line 2, column 12"),
    ("jsonl", b'{"a": "x"}\n{"a": "y"}\n{"a": \n', "is not valid JSON Lines: Expecting value at "
                                                  "line 3, column 7"),
    ("csv", b'a\n"' + b"x" * 200_000 + b'"\n', "is not valid CSV: field larger than field limit"),
    ("json", b'"just a string"', "expected a list (or an object) of records, found str"),
    ("json", b"[" * 100_000, "nested too deeply"),
])
def test_data_files_that_are_not_utf8_json_or_csv_are_one_line(tmp_path, fmt, body, needle):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(body)
    with pytest.raises(DataError) as e:
        read_documents(path, fmt, "{a}")
    msg = one_line(e.value)
    assert msg.startswith(str(path)) and needle in msg, msg


def test_a_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'\xef\xbb\xbf[{"a": "x"}]')
    assert read_documents(path, "json", "{a}") == ["x"]


def wine_reviews(root: Path, body: bytes) -> None:
    folder = root / "kaggle" / "zynicide__wine-reviews"
    folder.mkdir(parents=True)
    (folder / "winemag-data-130k-v2.json").write_bytes(body)
    (folder / ".complete").write_text("")


def test_a_kaggle_json_that_is_not_json_is_one_line_through_the_cli(tmp_path):
    wine_reviews(tmp_path / "root", b'{"0": {"country": "Italy", "description": "dry\xe9"}}')
    res = CliRunner().invoke(cli, ["train", "gpt", "--data", "wine-reviews", "--data-root",
                                   str(tmp_path / "root"), "--steps", "1"])
    one_line_error(res, "winemag-data-130k-v2.json is not UTF-8 text: byte 0xe9 at line 1")


@pytest.mark.parametrize("rows,needle", [
    (b"image_id,Smiling\n000001.jpg,1\n000002.jpg,1,-1\n", "line 3: 2 values for 1 attributes"),
    (b"image_id,Smiling\n000001.jpg,yes\n", "line 2: Smiling is 'yes'; valid: 1, -1, 0, true, false"),
    (b"image_id,Smiling\n000001.jpg,\xff1\n", "is not UTF-8 text: byte 0xff at line 2"),
])
def test_an_attribute_table_that_is_not_exact_is_one_line(tmp_path, rows, needle):
    path = tmp_path / "list_attr_celeba.csv"
    path.write_bytes(rows)
    with pytest.raises(DataError) as e:
        read_attribute_csv(path)
    msg = one_line(e.value)
    assert str(path) in msg and needle in msg, msg


def test_an_attribute_table_reads_exactly(tmp_path):
    path = tmp_path / "list_attr_celeba.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        csv.writer(f).writerows([["image_id", "Smiling", "Bald"], ["a/000001.jpg", "1", "-1"],
                                 ["000002.jpg", " -1", "true"], []])
    assert read_attribute_csv(path) == (["Smiling", "Bald"], {"000001.jpg": [True, False],
                                                             "000002.jpg": [False, True]})


# -- file names ----------------------------------------------------------------------------------

NAME = st.text(st.characters(codec="utf-8", exclude_characters="/\\\0",
                             exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None)
@given(st.lists(NAME, min_size=2, max_size=3, unique_by=lambda n: n.lower()))
def test_images_of_any_name_decode(tmp_path_factory, names):
    folder = tmp_path_factory.mktemp("names") / "imgs"
    folder.mkdir()
    for i, name in enumerate(names):
        try:
            bmp(folder / f"{name}.png", 40 * i + 1)  # BMP bytes, .png name: read by content
        except OSError:  # a name this file system refuses (too long in bytes): not our case
            return
    root = folder.parent / "root"
    data = load(DataConfig(name="folder", path=str(folder), root=str(root), test_fraction=0.4))
    assert len(data) + len(load(DataConfig(name="folder", path=str(folder), root=str(root),
                                           test_fraction=0.4), "test")) == len(names)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bytes file names")
def test_a_file_name_that_is_not_utf8_decodes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    bmp(folder / "a.bmp", 1)
    bmp(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.bmp")), 2)
    data = load(DataConfig(name="folder", path=str(folder), test_fraction=0.5))
    assert len(data) == 1
