"""The files ``zoo new-plugin NAME`` writes: a third-party genzoo plugin that installs and trains
as it is (the README's independent-pixels baseline, renamed). ``{name}`` is the plugin's name
(``my-pixels``), ``{module}`` its package (``genzoo_my_pixels``), ``{family}`` the family and
``{Model}`` the model class. Plain strings, so the package needs no data files."""

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "genzoo-{name}"
version = "0.1.0"
description = "A genzoo plugin: the {family} family and the {name}-fashion model"
requires-python = ">=3.10"
dependencies = ["genzoo>={genzoo_version}"]

[project.optional-dependencies]
test = ["pytest>=7"]

# genzoo finds the plugin through this entry point: `zoo list` shows its models
[project.entry-points.genzoo]
{family} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]
'''

README = '''# genzoo-{name}

A [genzoo](https://pypi.org/project/genzoo/) plugin, made by `zoo new-plugin {name}`: the
`{family}` family (every pixel an independent categorical: the baseline PixelCNN has to beat) and
one model, `{name}-fashion`, on the Fashion-MNIST images that ship with genzoo.

```bash
pip install -e .          # or: pip install -e '.[test]'
zoo list '{name}*'        # source: genzoo-{name}
zoo run {name}-fashion    # train (seconds) and sample
pytest tests              # the plugin's own test
```

Files:
- `{module}/plugin.py`: the hooks that register the family and the model. It names code as
  `"module:attr"` strings, so `zoo list` imports no torch.
- `{module}/model.py`: the family: a config dataclass, the `Model` (its `loss` and `log_prob`) and
  a `Sampler`. It imports only `genzoo.family`, genzoo's public SDK.
- `tests/test_{module}.py`: trains a few steps and samples.

Change the network in `model.py`, add presets in `plugin.py`; `zoo info {name}-fashion` shows the
result.
'''

INIT = '''"""genzoo-{name}: a genzoo plugin (see plugin.py and model.py)."""
'''

PLUGIN = '''"""The hooks genzoo calls (entry point group ``genzoo``, see pyproject.toml). Code is named as
"module:attr" strings, so `zoo list` and `zoo info` never import torch."""
from genzoo.family import hookimpl


@hookimpl
def register_families(register):
    register("{family}", model="{module}.model:{Model}",
             samplers={{"prior": "{module}.model:{Model}Sampler"}},
             default_sampler="prior",
             summary="Every pixel an independent categorical (a baseline)")


@hookimpl
def register_models(register):
    register("{name}-fashion", family="{family}",
             summary="Independent categorical per pixel on Fashion-MNIST (16x16, 4 levels)",
             dataset={{"name": "fashion-mnist-1k", "size": 16}},
             presets={{"quick": {{"train": {{"steps": 300, "lr": 0.05}}}},
                      "book": {{"train": {{"steps": 2000, "lr": 0.05}}}}}},
             tags=["baseline", "likelihood"])
'''

MODEL = '''"""The {family} family: a config, the network and its loss, a sampler. Imports only
genzoo.family (genzoo's public SDK) and torch."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.family import ConfigError, Model, Sampler, categorical


@dataclass
class {Model}Config:
    image_size: int = 16
    channels: int = 1
    levels: int = 4  # intensities per pixel

    def __post_init__(self):
        if self.levels < 2:
            raise ConfigError(f"levels must be >= 2, got {{self.levels}}")


class {Model}(Model):
    """Every pixel an independent categorical over `levels` intensities."""

    Config = {Model}Config

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.logits = nn.Parameter(torch.zeros(c.levels, c.channels, c.image_size, c.image_size))

    @classmethod
    def config_from_data(cls, data):
        return {{"channels": data.shape[0], "image_size": data.shape[-1]}}

    def targets(self, x):
        return (x * self.config.levels).long().clamp(0, self.config.levels - 1)

    def loss(self, batch):
        target = self.targets(batch["x"])
        logits = self.logits.expand(target.shape[0], *self.logits.shape)
        return {{"loss": F.cross_entropy(logits, target)}}

    def log_prob(self, batch):  # nats per image; `zoo eval` reports bits/dim from it
        x = batch["x"]
        logp = F.log_softmax(self.logits, dim=0).expand(x.shape[0], *self.logits.shape)
        return logp.gather(1, self.targets(x)[:, None]).flatten(1).sum(1)


class {Model}Sampler(Sampler):
    name = "prior"

    def sample(self, model, n, generator, **inputs):
        logits = model.logits.movedim(0, -1).expand(n, *model.logits.shape[1:], -1)
        return categorical(logits, generator).float() / (model.config.levels - 1)
'''

TEST = '''"""The plugin trains and samples like a built-in model (pip install -e '.[test]'; pytest)."""
import genzoo


def test_{module}_trains_and_samples(tmp_path):
    run = genzoo.train("{name}-fashion", out=str(tmp_path / "run"),
                       **{{"train.steps": 30, "train.sample_every": 0}})
    losses = [m["loss"] for m in run.metrics() if "split" not in m]
    assert losses[-1] < losses[0]
    images = genzoo.load_run(str(run.path)).sample(4, seed=0).images
    assert images.shape == (4, 1, 16, 16)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "{module}/__init__.py": INIT,
    "{module}/plugin.py": PLUGIN,
    "{module}/model.py": MODEL,
    "tests/test_{module}.py": TEST,
}
