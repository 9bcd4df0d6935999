"""Run folders written by an earlier genzoo (main before core v3, 2026-12-06) still load and
sample bit-identically: the refactor moved code, not behaviour or file formats.

tests/data/runs-v2 holds three tiny runs (pixelcnn, dcgan, gpt: 2 training steps each) with the
sample that version drew from each with ``sample(4, seed=3)``.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genzoo

RUNS = Path(__file__).parent / "data" / "runs-v2"


@pytest.mark.parametrize("name", ["pixelcnn", "dcgan", "gpt"])
def test_old_run_samples_bit_identically(name, tmp_path):
    run_dir = tmp_path / name
    shutil.copytree(RUNS / name, run_dir)  # loading may take a lock; never write in the checkout
    sample = genzoo.load_run(str(run_dir)).sample(4, seed=3)
    if name == "gpt":
        expected = json.loads((run_dir / "expected-sample.json").read_text())
        assert sample.texts == expected["texts"]
        assert sample.ids == expected["ids"]
    else:
        expected = load_file(run_dir / "expected-sample.safetensors")["images"]
        assert sample.images.shape == expected.shape
        assert torch.equal(sample.images, expected)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3"])
def test_loaded_run_refuses_a_seed_outside_the_generators_range(seed, tmp_path):
    from genzoo.errors import ConfigError
    shutil.copytree(RUNS / "pixelcnn", tmp_path / "run")
    run = genzoo.load_run(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"seed: expected an integer in \[0, 18446744073709551615\]"):
        run.sample(2, seed=seed)
