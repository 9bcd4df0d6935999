"""Image folders bigger than RAM: decoded once (worker processes) into a uint8 cache that is
memory-mapped and read per batch; the batches equal the in-memory path's; the cache is keyed on
the files' identities (size, mtime, ctime, inode: tests/test_data_exact.py), written atomically,
under a lock."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.core.data import DataConfig, StepBatches, load

N, SIZE = 3000, 48


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")
    return root


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_mapped_cache_keeps_rss_low_and_batches_equal_the_in_memory_path(folder, tmp_path):
    cfg = dict(name="folder", path=str(folder), size=SIZE, root=str(tmp_path / "root"))
    load(DataConfig(**cfg, mmap=True))  # decode once (worker processes)
    cache = list((tmp_path / "root" / "cache").iterdir())
    assert [p.suffix for p in cache if not p.name.endswith(".lock")] == [".npy"]
    assert not [p for p in cache if p.name.endswith(".tmp")]
    decoded = N * 3 * SIZE * SIZE
    rss, anon = status("VmRSS"), status("RssAnon")
    mapped = load(DataConfig(**cfg, mmap=True))
    batches = StepBatches(mapped, 64, seed=1)
    got = {s: batches(s)["x"].clone() for s in (0, 1, 7, 40)}
    assert mapped.mapped and len(mapped) == int(N * 0.9)
    # the memory that counts (anonymous, unreclaimable) stays small; mapped file pages are clean
    # page cache the kernel drops under pressure (fault-around maps ~64 KiB per touched row)
    assert status("RssAnon") - anon < decoded / 8, "the mapped set was copied into memory"
    assert status("VmRSS") - rss < decoded * 0.9
    memory = load(DataConfig(**cfg, mmap=False))
    assert not memory.mapped
    ref = StepBatches(memory, 64, seed=1)
    for s, x in got.items():
        assert torch.equal(x, ref(s)["x"]), s
    assert torch.equal(mapped.x[:10], memory.x[:10])


def test_changed_pixels_are_decoded_again(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    cfg = DataConfig(name="folder", path=str(folder), root=str(tmp_path / "root"), test_fraction=0.5)
    before = load(cfg, "train").x.clone()
    victim = sorted(folder.iterdir())[int(torch.randperm(6, generator=torch.Generator().manual_seed(0))[3])]
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(victim)  # same name, new pixels
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10 ** 9))
    after = load(cfg, "train").x
    assert not torch.equal(before, after) and int(after.max()) == 255
    assert len(list((tmp_path / "root" / "cache").glob("*.npy"))) == 2
