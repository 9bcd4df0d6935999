"""amp=auto on CPUs: bf16 autocast where the CPU has bf16 matrix units (AMX), fp32 elsewhere;
a short bf16 run's loss curve matches fp32's; MuseGAN (a gradient penalty's double backward)
trains finite under bf16 autocast."""
import math

import pytest
import torch

from genzoo import api
from genzoo.core import train_config
from genzoo.core.train_config import StepContext, cpu_bf16_matmul

CPU = torch.device("cpu")


@pytest.mark.parametrize("flag, want", [("1", torch.bfloat16), ("0", None)])
def test_auto_follows_the_cpu(monkeypatch, flag, want):
    monkeypatch.setenv("GENZOO_CPU_BF16", flag)
    assert StepContext(CPU, "auto", None).dtype == want
    assert StepContext(CPU, "none", None).dtype is None
    assert StepContext(CPU, "bf16", None).dtype == torch.bfloat16


def test_detection_reads_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("GENZOO_CPU_BF16", raising=False)
    monkeypatch.setattr(train_config, "_CPU_BF16", None)
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert cpu_bf16_matmul() == (" amx_bf16" in flags)


def test_bf16_loss_curve_matches_fp32(tmp_path):
    # PixelCNN quick, 40 steps of 32 images: the bf16 curve stays close to fp32's at every
    # logged step: within 1% (measured: 0.08% at most); the loss itself falls by ~30%
    curves = {}
    for amp in ("none", "bf16"):
        run = api.train("pixelcnn", "quick", {"train.steps": 40, "batch_size": 32, "amp": amp,
                                              "sample_every": 0, "log_every": 5, "warmup_steps": 5},
                        out=tmp_path / amp, progress=False)
        curves[amp] = [m["loss"] for m in run.metrics() if "split" not in m]
    fp32, bf16 = curves["none"], curves["bf16"]
    assert len(fp32) == len(bf16) == 8
    assert fp32[-1] < 0.8 * fp32[0]
    rel = [abs(a - b) / a for a, b in zip(fp32, bf16)]
    assert max(rel) < 0.01, rel


@pytest.mark.parametrize("preset", ["quick", "book"])
def test_musegan_trains_at_amp_auto(preset):
    # its gradient penalty runs in fp32 inside autocast (genzoo.nn.gan), so it no longer needs
    # the fp32 override it once had
    assert api.plan("musegan", preset).train.amp == "auto"


def test_musegan_steps_under_bf16_autocast_are_finite(tmp_path, tiny, monkeypatch):
    from genzoo.nn.gan import gradient_penalty
    from genzoo.plugins import musegan
    seen = []

    def spy(critic, real, fake):
        gp = gradient_penalty(critic, real, fake)
        seen.append((torch.is_autocast_enabled("cpu"), fake.dtype, gp.dtype))
        return gp

    monkeypatch.setattr(musegan, "gradient_penalty", spy)
    run = api.train("musegan", "quick", tiny("musegan", steps=3, **{"train.amp": "bf16"}),
                    out=tmp_path / "run", progress=False)
    # the critic's steps ran under bf16 autocast (bf16 fakes); the penalty came back in fp32
    assert seen and set(seen) == {(True, torch.bfloat16, torch.float32)}
    rows = [m for m in run.metrics() if "split" not in m]
    assert len(rows) == 3
    for key in ("c_loss", "g_loss", "wasserstein", "gp"):
        assert all(math.isfinite(r[key]) for r in rows), (key, rows)
