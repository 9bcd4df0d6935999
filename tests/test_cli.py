"""The CLI's exit codes and one-line messages for user mistakes, and the catalogue's honesty."""
import json

import pytest
from click.testing import CliRunner

import genzoo
from genzoo.cli import cli
from cli_checks import one_line_error


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_list_table_json_pattern_and_tags():
    res = invoke("list")
    assert res.exit_code == 0 and "pixelcnn" in res.output
    rows = json.loads(invoke("list", "*cnn*", "--json").output)
    assert {"name", "family", "chapter", "dataset", "params", "summary", "source"} <= set(rows[0])
    assert all("cnn" in r["name"] for r in rows)
    assert json.loads(invoke("list", "--tag", "no-such-tag", "--json").output) == []


@pytest.mark.parametrize("args,needles", [
    (["train", "pixelcnnn", "--steps", "1"], ["unknown model 'pixelcnnn'", "did you mean 'pixelcnn'"]),
    (["train", "pixelcnn", "--set", "blokcs=2"], ["unknown config key 'blokcs'", "did you mean blocks", "train: steps"]),
    (["train", "pixelcnn", "--set", "blocks=two"], ["bad value 'two' for blocks: expected an integer"]),
    (["train", "pixelcnn", "--set", "blocks"], ["expected KEY=VALUE"]),
    (["train", "pixelcnn", "--set", "model.lr=1"], ["unknown model key 'lr'", "valid model keys"]),
    (["train", "pixelcnn", "--preset", "huge"], ["unknown preset of 'pixelcnn' 'huge'", "book, quick"]),
    (["train", "pixelcnn", "--device", "tpu"], ["unknown device 'tpu'"]),
    (["train", "pixelcnn", "--data", "imagenet"], ["unknown dataset 'imagenet'"]),
    (["train", "pixelcnn", "--set", "levels=1"], ["levels must be >= 2"]),
    (["sample", "/no/such/run"], ["no run at /no/such/run"]),
    (["info", "vae"], ["unknown model 'vae'"]),
    (["sample", "/no/such/run", "--seed", "-1"], ["--seed", "[0, 18446744073709551615]"]),
    (["train", "pixelcnn", "--seed", str(2 ** 64)], ["seed"]),
    (["train", "pixelcnn", "--steps", "x"], ["Invalid value for '--steps'", "--help"]),
    (["sample"], ["Missing argument 'RUN'"]),
])
def test_user_mistakes_exit_nonzero_with_one_line(args, needles):
    one_line_error(invoke(*args), *needles)


def test_every_command_has_help_with_examples():
    for cmd in ("list", "info", "train", "run", "sample", "eval", "bench", "plugins", "data"):
        res = invoke(cmd, "--help")
        assert res.exit_code == 0, cmd
    for cmd in ("list", "info", "train", "run", "sample", "eval", "bench"):
        assert "Example" in invoke(cmd, "--help").output, cmd


def test_registered_params_match_the_real_models():
    """The `params` column is read from registry.yaml (no torch at list time); keep it honest."""
    for name in genzoo.list_models():
        entry = genzoo.registry().get(name)
        for preset, expected in entry.params.items():
            assert genzoo.create_model(name, preset=preset).num_params() == expected, (name, preset)


def test_every_model_has_quick_and_book_presets_and_a_known_dataset():
    reg = genzoo.registry()
    for entry in reg.list():
        if entry.plugin != "built-in":
            continue
        assert {"quick", "book"} <= set(entry.presets), entry.name
        reg.get_dataset(entry.dataset["name"])
        reg.get_family(entry.family)


def test_bench_writes_json_records(tmp_path):
    out = tmp_path / "bench.json"
    res = invoke("bench", "pixelcnn", "--preset", "quick", "--repeats", "2", "--n", "2",
                 "--batch-size", "8", "--steps", "2", "--json", str(out))
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    keys = {"model", "device", "metric", "setting", "median", "min", "max", "unit"}
    assert all(keys <= set(r) for r in records)
    metrics = {(r["metric"], r["setting"].split()[0]) for r in records}
    assert ("sample_latency", "sampler=naive") in metrics and ("sample_latency", "sampler=cached") in metrics
    assert all(r["min"] <= r["median"] <= r["max"] for r in records)
    from genzoo.core.bench import summary_markdown
    table = summary_markdown(records).splitlines()  # --summary: one row per model
    assert len(table) == 3 and table[2].startswith("| pixelcnn | 52,100 | 8 |")
    assert "naive " in table[2] and "cached " in table[2] and ("fp32" in table[2] or "bf16" in table[2])


def test_data_download_without_kaggle_credentials_explains_how_to_set_them(tmp_path, monkeypatch):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("data", "download", "lego-bricks", "--data-root", str(tmp_path)),
                   "no Kaggle credentials", "KAGGLE_USERNAME", "kaggle.json")
    res = invoke("data", "download", "mnist-5k")
    assert res.exit_code == 0 and "nothing to download" in res.output
