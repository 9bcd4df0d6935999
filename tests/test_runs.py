"""Checkpoints round-trip bit-exactly, resume equals an uninterrupted run, bad files fail clearly."""
import json

import pytest
import torch
from click.testing import CliRunner

import genzoo
from genzoo import api
from genzoo.cli import cli
from genzoo.core import checkpoint as ckpt
from genzoo.errors import CheckpointError, TrainingDiverged

TINY = {"filters": 8, "blocks": 1, "sample_every": 0, "log_every": 5, "batch_size": 16}


def weights(path):
    return ckpt.load_tensors(path)


def test_weights_round_trip_bit_exactly(tmp_path):
    model = genzoo.create_model("pixelcnn", **{k: v for k, v in TINY.items() if k in ("filters", "blocks")})
    ckpt.save_weights(model, tmp_path / "w.safetensors")
    other = genzoo.create_model("pixelcnn", filters=8, blocks=1, seed=5)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    ckpt.load_weights(other, tmp_path / "w.safetensors")
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_compile_and_ddp_prefixes_are_stripped(tmp_path):
    model = genzoo.create_model("pixelcnn", filters=8, blocks=1)
    prefixed = {"_orig_mod.module." + k: v for k, v in model.state_dict().items()}
    ckpt.save_tensors(tmp_path / "w.safetensors", prefixed)
    ckpt.load_weights(model, tmp_path / "w.safetensors")


def test_mismatched_checkpoint_reports_all_problems_in_one_message(tmp_path):
    small = genzoo.create_model("pixelcnn", filters=8, blocks=1)
    big = genzoo.create_model("pixelcnn", filters=16, blocks=2)
    ckpt.save_weights(small, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="does not fit this model: missing .*shape mismatch"):
        ckpt.load_weights(big, tmp_path / "w.safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors_gives_a_clear_error(tmp_path, damage):
    model = genzoo.create_model("pixelcnn", filters=8, blocks=1)
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(model, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 10,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        ckpt.load_weights(model, path)


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_tensors(path, {"a": torch.ones(3)})

    def boom(p):
        p.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_write(path, boom)
    assert torch.equal(ckpt.load_tensors(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_run_folder_has_only_safetensors_and_json(tmp_path):
    run = genzoo.train("pixelcnn", out=str(tmp_path / "run"), **{"train.steps": 4, **TINY})
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "model.safetensors", "trainer.safetensors", "trainer.json",
            "metrics.jsonl", "samples", "loss.png"} <= names
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["model"]["filters"] == 8 and cfg["train"]["seed"] == 0 and "versions" in cfg
    assert (run.path / "samples" / "step_000004.png").exists()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = {"train.steps": 12, "lr": 3e-3, "schedule": "cosine", "ema_decay": 0.9, **TINY}
    full = api.train("pixelcnn", "quick", cfg, out=tmp_path / "full", progress=False)
    half = api.train("pixelcnn", "quick", cfg, out=tmp_path / "half", progress=False, stop_after=6)
    assert json.loads((half.path / "trainer.json").read_text())["step"] == 6
    api.resume(half.path, progress=False)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = weights(full.path / name), weights(half.path / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    steps = [m["step"] for m in half.metrics() if "split" not in m]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no duplicated log lines


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    runs = [api.train("pixelcnn", "quick", {"train.steps": 3, "seed": s, **TINY},
                      out=tmp_path / f"r{i}", progress=False) for i, s in enumerate([1, 1, 2])]
    w = [weights(r.path / "model.safetensors")["output.weight"] for r in runs]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])
    loaded = [api.load_run(r.path) for r in runs[:2]]
    assert torch.equal(loaded[0].sample(4, seed=3).images, loaded[1].sample(4, seed=3).images)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from genzoo.plugins.pixelcnn import PixelCNN
    real = PixelCNN.loss
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        out = real(self, batch)
        if calls["n"] > 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(PixelCNN, "loss", flaky)
    with pytest.raises(TrainingDiverged, match=r"loss became nan or inf between steps 5 and 6.*last good checkpoint \(step 4\)"):
        api.train("pixelcnn", "quick", {"train.steps": 8, "checkpoint_every": 2, **TINY},
                  out=tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "trainer.json").read_text())
    assert state["step"] == 4
    w = weights(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_cli_train_sample_resume_and_errors(tmp_path):
    r = CliRunner()
    out = tmp_path / "run"
    res = r.invoke(cli, ["train", "pixelcnn", "--steps", "3", "--out", str(out), "--no-progress",
                         "--set", "filters=8", "--set", "blocks=1", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["sample", str(out), "--n", "4", "--sampler", "naive", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.png").exists()
    res = r.invoke(cli, ["train", "--resume", str(out), "--steps", "5", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "trainer.json").read_text())["step"] == 5
    res = r.invoke(cli, ["eval", str(out)])
    assert res.exit_code == 0 and "bits_per_dim" in res.output

    res = r.invoke(cli, ["sample", str(out), "--label", "1"])
    assert res.exit_code == 1 and "unconditional model" in res.output
    res = r.invoke(cli, ["sample", str(out), "--set", "temprature=2"])
    assert res.exit_code == 1 and "valid keys: temperature, top_k, size" in res.output

    (out / "model.safetensors").write_bytes(b"broken")
    res = r.invoke(cli, ["sample", str(out)])
    assert res.exit_code == 1 and "corrupt or truncated checkpoint" in res.output
    assert "Traceback" not in res.output
    res = r.invoke(cli, ["sample", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no run at" in res.output
