"""`zoo eval RUN --data NAME|folder:PATH`: a run scored on another dataset through its own
transform (size, channels), saved apart from its own figures; bad names and other modalities are
one line."""
import json

import pytest
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tiny import tiny
    root = tmp_path_factory.mktemp("runs")
    px = api.train("pixelcnn", "quick", tiny("pixelcnn", steps=2), out=root / "px", progress=False)
    cls = api.train("cnn-fashion", "quick", {"train.steps": 2, "train.batch_size": 8,
                                             "train.sample_every": 0}, out=root / "cnn",
                    progress=False)
    return px.path, cls.path


def test_a_grey_28px_run_scored_on_colour_64px_emoji(runs):
    px, _ = runs
    r = CliRunner().invoke(cli, ["eval", str(px), "--data", "twemoji", "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "dataset: twemoji" in r.output and "bits_per_dim:" in r.output
    saved = json.loads((px / "eval-twemoji.json").read_text())
    assert saved["dataset"] == "twemoji" and saved["examples"] > 100
    assert saved["bits_per_dim"] > 0
    assert not (px / "eval.json").exists()  # the run's own figures stay its own
    assert f"saved:    {px / 'eval-twemoji.json'}" in r.output


def test_a_classifier_scored_on_another_dataset_of_ten_classes(runs):
    _, cls = runs
    r = CliRunner().invoke(cli, ["eval", str(cls), "--data", "mnist-5k"])
    assert r.exit_code == 0, r.output
    saved = json.loads((cls / "eval-mnist-5k.json").read_text())
    assert 0 <= saved["accuracy"] <= 1 and saved["examples"] == 500
    assert (cls / "eval-mnist-5k" / "confusion.png").is_file()
    r = CliRunner().invoke(cli, ["eval", str(cls), "--data", "twemoji"])
    assert r.exit_code == 1 and "8 classes" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_an_image_folder(runs, tmp_path):
    import numpy as np
    from PIL import Image
    px, _ = runs
    folder = tmp_path / "held out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    r = CliRunner().invoke(cli, ["eval", str(px), "--data", f"folder:{folder}"])
    assert r.exit_code == 0, r.output
    saved = json.loads((px / "eval-folder-held_out.json").read_text())
    assert saved["examples"] >= 1 and saved["bits_per_dim"] > 0


@pytest.mark.parametrize("data, message", [
    ("no-such-set", "unknown dataset 'no-such-set'; for this image model: "),
    ("tinyshakespeare", "tinyshakespeare is text data, but pixelcnn models image"),
    ("folder:", "needs a PATH"),
])
def test_bad_data_is_one_line(runs, data, message):
    px, _ = runs
    r = CliRunner().invoke(cli, ["eval", str(px), "--data", data])
    assert r.exit_code == 1 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    if data == "no-such-set":
        assert "mnist-5k" in r.output and "folder:PATH" in r.output and "recipes" not in r.output


@pytest.mark.slow  # ~12 s of CPU: a 1.1M-character corpus tokenized by words twice
def test_a_word_model_scored_on_another_corpus_through_its_own_tokenizer(tmp_path):
    from tiny import tiny
    run = api.train("lstm", "quick", tiny("lstm", steps=2), out=tmp_path / "lstm", progress=False)
    r = CliRunner().invoke(cli, ["eval", str(run.path), "--data", "tinyshakespeare"])
    assert r.exit_code == 0, r.output
    saved = json.loads((run.path / "eval-tinyshakespeare.json").read_text())
    assert saved["dataset"] == "tinyshakespeare" and saved["perplexity"] > 1
    r = CliRunner().invoke(cli, ["eval", str(run.path), "--data", "twemoji"])
    assert r.exit_code == 1 and "twemoji is image data, but lstm models text" in r.output
