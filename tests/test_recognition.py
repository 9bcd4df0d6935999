"""The recognisability figure (genzoo.core.recognition): the confident fraction and class entropy
of a chapter-2 classifier's judgements, beside real images' ceiling."""
import math

import pytest
import torch
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli
from genzoo.core import recognition
from genzoo.errors import ConfigError


def test_scores_count_confident_images_and_the_spread_over_classes():
    sure = torch.tensor([[0.95, 0.05, 0.0], [0.0, 0.92, 0.08], [0.0, 0.05, 0.95]])
    s = recognition.scores(sure)
    assert s["confident"] == 1.0 and s["class_entropy"] == pytest.approx(1.0)
    assert s["histogram"] == [1, 1, 1]
    unsure = torch.tensor([[0.5, 0.5, 0.0]] * 4)
    s = recognition.scores(unsure)
    assert s["confident"] == 0.0 and s["class_entropy"] == 0.0  # one class: collapsed
    half = torch.tensor([[0.99, 0.01, 0.0]] * 2 + [[0.01, 0.99, 0.0]] * 2)
    assert recognition.scores(half)["class_entropy"] == pytest.approx(math.log(2) / math.log(3))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("judge") / "cnn"
    return api.train("cnn-mnist", "quick", {"train.steps": 120, "train.batch_size": 32,
                                           "train.sample_every": 0, "train.lr": 0.003},
                     out=out, progress=False).path


def test_a_trained_classifier_is_sure_of_real_digits_and_not_of_grey(classifier):
    judge = recognition.Judge(classifier)
    real = api.load_run(classifier).data("test").images()  # 500, every class
    grey = torch.full((50, 1, 16, 16), 0.5)  # another size: the judge resizes
    out = recognition.recognisability(grey, real, judge)
    assert out["recog_confident_real"] > 0.5 and out["recog_class_entropy_real"] > 0.9
    assert out["recog_class_entropy"] == 0.0  # identical images, one class
    assert out["recog_n"] == 50 and "p >= 0.9" in out["recog_protocol"]
    assert len(out["recog_histogram"]) == 10 and sum(out["recog_histogram"]) == 50


def test_zoo_eval_reports_recognisable_with_its_ceiling_and_protocol(classifier, tmp_path, tiny):
    gen = api.train("dcgan", "quick", tiny("dcgan", steps=2, **{"data.name": "mnist-5k"}),
                    out=tmp_path / "gen", progress=False)
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "recognisable",
                                 "--classifier", str(classifier), "--n-samples", "20"])
    assert r.exit_code == 0, r.output
    for key in ("recog_confident:", "recog_class_entropy:", "recog_confident_real:",
                "recognisable protocol:"):
        assert key in r.output
    ev = __import__("json").loads((gen.path / "eval.json").read_text())
    assert 0 <= ev["recog_confident"] <= 1 and ev["recog_n"] == 20
    r = CliRunner().invoke(cli, ["eval", str(gen.path), "--metrics", "recognisable",
                                 "--classifier", str(gen.path)])
    assert r.exit_code == 1 and "has no class logits" in r.output


def test_fid_and_recognisable_at_one_n_judge_one_draw(classifier, tmp_path, tiny, monkeypatch):
    """zoo eval --metrics fid,recognisable draws the samples once and scores both on them."""
    from genzoo.core import metrics
    gen = api.train("dcgan", "quick", tiny("dcgan", steps=2, **{"data.name": "mnist-5k"}),
                    out=tmp_path / "gen", progress=False)
    draws, real_draw = [], metrics.generated_images
    monkeypatch.setattr(metrics, "generated_images",
                        lambda loaded, n, seed: draws.append(n) or real_draw(loaded, n, seed))
    out = metrics.evaluate(str(gen.path), metrics=("fid", "recognisable"), n_samples=12,
                           features=str(classifier), classifier=str(classifier), save=False)
    assert draws == [12] and out["recog_n"] == 12 and out["fid_n_fake"] == 12
    assert math.isfinite(out["fid"])


def test_a_cropped_models_samples_are_judged_in_the_classifiers_frame(classifier, tmp_path, tiny,
                                                                     monkeypatch):
    """A 16x16 model of MNIST's centre 22x22 (data.crop) is judged on 28x28 digits with the
    crop undone, fake and real alike, not on a 16x16 crop stretched over the whole frame."""
    gen = api.train("dcgan", "quick", tiny("dcgan", steps=2, **{"data.name": "mnist-5k",
                                                                  "data.size": 16, "data.crop": 22,
                                                                  "data.pad": 0}),
                    out=tmp_path / "gen", progress=False)
    seen = []
    real_probs = recognition.Judge.probs
    monkeypatch.setattr(recognition.Judge, "probs",
                        lambda self, images, batch=256: seen.append(images) or real_probs(self, images))
    from genzoo.core import metrics
    out = metrics.evaluate(str(gen.path), metrics=("recognisable",), n_samples=8,
                       classifier=str(classifier), save=False)
    assert [tuple(x.shape) for x in seen] == [(8, 1, 28, 28), (8, 1, 28, 28)]
    fake, real = seen
    # the border outside the crop is the data's (near-black) ring, in both
    assert float(fake[..., :3, :].max()) < 0.02 and float(real[..., :3, :].max()) < 0.02
    assert 0 <= out["recog_confident_real"] <= 1
    assert "; crop 22 (back in the source's 28x28) undone)" in out["recog_protocol"]


def test_the_default_judge_is_the_cached_quick_classifier(monkeypatch, tmp_path):
    seen = {}

    def auto(dataset, search=None, say=None, train_overrides=None, what=""):
        seen.update(dataset=dataset, overrides=train_overrides)
        return tmp_path
    monkeypatch.setattr("genzoo.core.fid.auto_feature_run", auto)
    assert recognition.judge_run("mnist-5k", None, [tmp_path / "none"]) == tmp_path
    assert seen == {"dataset": "mnist-5k", "overrides": recognition.QUICK}
    with pytest.raises(ConfigError, match="no such run folder"):
        recognition.judge_run("mnist-5k", str(tmp_path / "missing"))
