"""The chapter-2 classifiers: book parameter counts, learning on embedded data, `zoo eval`'s
accuracy and confusion matrix, the dream sampler, and one-line errors."""
import json

import pytest
import torch
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli
from genzoo.core.factory import create_model


def test_book_parameter_counts():
    # the book's CIFAR-10 CNN summary: 592,554 params, 640 of them batch-norm statistics
    cnn = create_model("cnn-cifar10", "book")
    buffers = sum(b.numel() for n, b in cnn.named_buffers() if "running" in n)
    assert cnn.num_params() == 591_914 and cnn.num_params() + buffers == 592_554
    # the book's MLP: 3072*200+200 + 200*150+150 + 150*10+10
    assert create_model("mlp-cifar10", "book").num_params() == 646_260


def test_shapes_and_features():
    cnn = create_model("cnn-twemoji")
    x = torch.rand(4, 3, 32, 32)
    assert cnn(x).shape == (4, 8) and cnn.features(x).shape == (4, cnn.feature_dim)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "mlp"
    return api.train("mlp-mnist", "quick", {"train.steps": 80, "batch_size": 64, "sample_every": 0,
                                            "sample_n": 4, "log_every": 20}, out=out, progress=False)


def test_learns_and_eval_reports_accuracy_and_confusion(mlp_run):
    result = CliRunner().invoke(cli, ["eval", str(mlp_run.path)])
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output and "confusion_png:" in result.output
    saved = json.loads((mlp_run.path / "eval.json").read_text())
    assert saved["accuracy"] > 0.6  # 10 classes: chance is 0.1; 80 steps of the MLP reach ~0.8
    assert (mlp_run.path / "confusion.png").stat().st_size > 0
    cm = torch.tensor(saved["confusion_matrix"])
    assert cm.shape == (10, 10) and int(cm.sum()) == saved["examples"]
    assert abs(float(cm.diag().sum() / cm.sum()) - saved["accuracy"]) < 1e-6


def test_dream_sampler_label_and_bad_label(mlp_run, tmp_path):
    loaded = api.load_run(mlp_run.path)
    out = loaded.sample(3, seed=0, inputs={"label": 7}, steps=4)
    assert out.images.shape == (3, 1, 28, 28) and 0 <= float(out.images.min())
    longer = loaded.sample(3, seed=0, inputs={"label": 7}, steps=32)
    with torch.no_grad():  # ascending the class logit raises it
        assert loaded.model(longer.images)[:, 7].mean() > loaded.model(out.images)[:, 7].mean()
    r = CliRunner().invoke(cli, ["sample", str(mlp_run.path), "--label", "12", "--n", "2",
                                 "--out", str(tmp_path / "s")])
    assert r.exit_code != 0 and "label 12 is out of range" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_config_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["train", "cnn-mnist", "--steps", "1", "--set", "arch=resnet",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "bad value 'resnet' for arch" in r.output
    assert len(r.output.strip().splitlines()) == 1
