"""FID and KID (genzoo.core.fid): zero on identical sets, growing with added noise, the
feature network resolved from a classifier run, and `zoo eval --metrics fid,kid,nll`."""
import json

import pytest
import torch
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli
from genzoo.core.factory import create_model
from genzoo.core import fid
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
    # celeba has no registered classifier to train: the line says which datasets have one
    with pytest.raises(ConfigError, match=r"no registered classifier .*covered: .*fashion-mnist-1k"):
        resolve_features(None, "celeba", [tmp_path])
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "fid,sharpness"])
    assert r.exit_code != 0 and "unknown metric 'sharpness'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_the_feature_network_is_found_by_capability_not_by_name():
    # image features (Model.features on an image model) qualify; a text model's hidden states
    # (the LSTM) do not, nor does a model without features or a family not installed
    assert family_serves_as_features("classifier")
    for family in ("lstm", "pixelcnn", "dcgan", "no-such-family", None):
        assert not family_serves_as_features(family), family


# -- FID with no setup: the registered classifier trained once and cached; Inception downloaded
# once; nothing here downloads or trains more than a few tiny steps

TINY_FEATURES = {"train.steps": 2, "train.batch_size": 8, "train.sample_every": 0,
                 "train.checkpoint_every": 2, "train.seed": 0}


@pytest.fixture
def tiny_auto(monkeypatch):
    """A bounded auto-train config, no Inception weights, and a count of trainings."""
    from genzoo.core import runner
    monkeypatch.setattr(fid, "AUTO_TRAIN", dict(TINY_FEATURES))
    monkeypatch.setattr(fid, "inception_weights", lambda: None)
    trained = []
    real = runner.train

    def counting(name, *a, **k):
        trained.append(name)
        return real(name, *a, **k)
    monkeypatch.setattr(runner, "train", counting)
    return trained


def test_eval_trains_the_registered_classifier_once_and_reuses_it(runs, tmp_path, tiny_auto):
    import shutil
    _, gen = runs
    alone = tmp_path / "alone" / "pixelcnn"  # no classifier run beside it, none in ./runs
    shutil.copytree(gen.path, alone)
    args = ["eval", str(alone), "--metrics", "fid", "--n-samples", "8"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "no feature network for fashion-mnist-1k: training cnn-fashion once" in r.output
    assert "trained the fashion-mnist-1k feature network in" in r.output
    assert tiny_auto == ["cnn-fashion"]
    cached = list(fid.feature_cache().iterdir())
    names = [p.name for p in cached if not p.name.startswith(".")]
    assert len(names) == 1 and names[0].startswith("cnn-fashion-fashion-mnist-1k-1x28-pad0-")
    assert names[0].endswith("-genzoo" + __import__("genzoo").__version__)
    assert str(fid.feature_cache()) in json.loads((alone / "eval.json").read_text())["protocol"]
    r = CliRunner().invoke(cli, args)  # a hit: no training, the same network
    assert r.exit_code == 0 and "training" not in r.output, r.output
    assert tiny_auto == ["cnn-fashion"]
    assert "protocol: features: cnn-fashion run" in r.output


def test_the_cache_key_names_dataset_transform_config_and_version(monkeypatch):
    from genzoo.core.registry import registry
    entry = registry().get("cnn-twemoji")
    key = fid.feature_key(entry, TINY_FEATURES)
    assert key.startswith("cnn-twemoji-twemoji-3x32-pad0-") and key.endswith("-genzoo" + fid_version())
    assert fid.feature_key(entry, TINY_FEATURES) == key  # stable
    assert fid.feature_key(entry, {**TINY_FEATURES, "data.size": 16}).startswith(
        "cnn-twemoji-twemoji-3x16-")
    assert fid.feature_key(entry, {**TINY_FEATURES, "train.steps": 3}) != key
    import genzoo._version
    monkeypatch.setattr(genzoo._version, "__version__", "9.9.9")
    assert fid.feature_key(entry, TINY_FEATURES).endswith("-genzoo9.9.9")
    assert [e.name for e in fid.feature_models("mnist-5k")] == ["cnn-mnist", "mlp-mnist"]


def fid_version():
    import genzoo
    return genzoo.__version__


def test_a_cache_hit_trains_nothing_and_a_half_folder_is_no_hit(tiny_auto, monkeypatch):
    from genzoo.core.registry import registry
    target = fid.feature_cache() / fid.feature_key(registry().get("cnn-fashion"), TINY_FEATURES)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"")
    (target / "trainer.json").write_text(json.dumps({"complete": False}))  # killed mid-training
    assert fid.auto_feature_run("fashion-mnist-1k") == target
    assert tiny_auto == ["cnn-fashion"] and fid._finished(target)  # retrained, moved into place
    assert fid.auto_feature_run("fashion-mnist-1k", say=pytest.fail) == target  # a hit, silent
    assert tiny_auto == ["cnn-fashion"]
    assert not [p for p in fid.feature_cache().iterdir() if ".tmp-" in p.name]


def test_concurrent_evals_train_once(tiny_auto):
    import threading
    got, errors = [], []

    def one():
        try:
            got.append(fid.auto_feature_run("fashion-mnist-1k", say=lambda line: None))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 2 and got[0] == got[1] and fid._finished(got[0])
    assert tiny_auto == ["cnn-fashion"]


def test_inception_offline_is_one_line_and_a_cached_file_is_used(monkeypatch, runs):
    import sys
    import types
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    assert fid.inception_weights() is None or not str(fid.inception_weights()).startswith(
        str(fid.feature_cache()))
    real_inception_weights = fid.inception_weights
    monkeypatch.setattr(fid, "inception_weights", lambda: None)
    with pytest.raises(ConfigError, match=r"cannot download the InceptionV3 weights from "
                                          r"https://github.com/toshas/torch-fidelity/.*offline\?"):
        fid.download_inception()
    assert not list(fid.feature_cache().glob("*.part"))  # nothing half-written left
    _, gen = runs
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "fid", "--features",
                                 "inception", "--n-samples", "4"])
    assert r.exit_code == 1 and "offline?" in r.output
    assert len([l for l in r.output.splitlines() if l.startswith("Error")]) == 1
    # a file already in the cache is what --features inception uses; nothing is fetched (undo
    # only this test's patches: a bare monkeypatch.undo() would also drop the isolated data
    # root and write into the checkout)
    monkeypatch.setattr(fid, "inception_weights", real_inception_weights)
    monkeypatch.delitem(sys.modules, "torch_fidelity", raising=False)
    cached = fid.inception_cached()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"weights")
    assert fid.inception_weights() == cached and fid.download_inception() == cached


def test_the_download_is_checked_and_renamed_into_place(monkeypatch):
    import io
    import urllib.request

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(b"not the weights"))
    with pytest.raises(ConfigError, match="is not weights-inception"):
        fid.download_inception()
    assert not fid.inception_cached().exists()
    import hashlib
    payload = b"x"
    monkeypatch.setattr(fid, "INCEPTION_SHA256_PREFIX", hashlib.sha256(payload).hexdigest()[:8])
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(payload))
    assert fid.download_inception().read_bytes() == payload
