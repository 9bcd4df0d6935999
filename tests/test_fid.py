"""FID and KID (genzoo.core.fid): zero on identical sets, growing with added noise, the
feature network resolved from a classifier run, and `zoo eval --metrics fid,kid,nll`."""
import json

import pytest
import torch
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli
from genzoo.core.factory import create_model
from genzoo.core.fid import (ImageFeatures, family_serves_as_features, fid_kid, find_feature_run,
                             resolve_features)
from genzoo.errors import ConfigError

pytest.importorskip("torchmetrics")


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(0)
    net = create_model("cnn-fashion").eval()  # random weights: a fixed, dataset-blind embedding
    return ImageFeatures(net.features, net.image_shape(), net.feature_dim, "random cnn", net)


@pytest.fixture(scope="module")
def images():
    from genzoo.core.data import DataConfig, load
    return load(DataConfig(name="fashion-mnist-1k"), "train").images()[:200]


def test_fid_of_a_set_with_itself_is_zero(features, images):
    out = fid_kid(images, images.clone(), features, subsets=10)
    assert out["fid"] < 1e-2 and abs(out["kid"]) < 1e-3


def test_fid_and_kid_grow_with_noise(features, images):
    g = torch.Generator().manual_seed(0)
    noisy = [(images + s * torch.randn(images.shape, generator=g)).clamp(0, 1)
             for s in (0.05, 0.15, 0.3, 0.6)]
    scores = [fid_kid(images, x, features, subsets=20) for x in noisy]
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


def test_features_adapt_channels_and_size(features):
    colour = torch.rand(3, 3, 64, 64)
    assert features(colour).shape == (3, features.num_features)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    quick = {"train.steps": 2, "batch_size": 8, "sample_every": 0, "sample_n": 2, "log_every": 1}
    cls = api.train("cnn-fashion", "quick", quick, out=root / "cnn", progress=False)
    gen = api.train("pixelcnn", "quick", quick, out=root / "pixelcnn", progress=False)
    return cls, gen


def test_eval_fid_kid_nll_through_the_cli(runs):
    cls, gen = runs
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "fid,kid,nll",
                                 "--n-samples", "12", "--features", str(cls.path)])
    assert r.exit_code == 0, r.output
    for key in ("fid:", "kid:", "bits_per_dim:", "protocol:"):
        assert key in r.output
    saved = json.loads((gen.path / "eval.json").read_text())
    assert saved["fid_n_fake"] == 12 and saved["fid_n_real"] == 100 and saved["fid"] > 0
    assert "12 samples" in saved["protocol"] and "100 test images of fashion-mnist-1k" in saved["protocol"]


def test_auto_features_find_the_classifier_run_beside(runs):
    cls, gen = runs
    assert find_feature_run("fashion-mnist-1k", [gen.path.parent]) == cls.path
    feats = resolve_features("auto", "fashion-mnist-1k", [gen.path.parent])
    assert str(cls.path) in feats.name or feats.name.startswith("Inception")


def test_missing_features_and_bad_metrics_are_one_line(runs, tmp_path):
    _, gen = runs
    with pytest.raises(ConfigError, match="zoo train cnn-mnist"):
        resolve_features(None, "mnist-5k", [tmp_path])
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "fid,sharpness"])
    assert r.exit_code != 0 and "unknown metric 'sharpness'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_the_feature_network_is_found_by_capability_not_by_name():
    # image features (Model.features on an image model) qualify; a text model's hidden states
    # (the LSTM) do not, nor does a model without features or a family not installed
    assert family_serves_as_features("classifier")
    for family in ("lstm", "pixelcnn", "dcgan", "no-such-family", None):
        assert not family_serves_as_features(family), family
