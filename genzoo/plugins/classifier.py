"""Image classifiers (Foster ch. 2): the book's multilayer perceptron and its convolutional net.

Not a generative model: chapter 2 builds the deep-learning vocabulary (dense layers, convolutions,
batch norm, dropout) on CIFAR-10 before any generation. In genzoo the trained CNN has a second
job: its penultimate layer is the offline feature space for FID and KID
(``genzoo.core.fid``), so a generated image is judged by a network that knows the dataset.

The family fits the Model interface as an image model without a likelihood
(``likelihood_unit = None``); ``zoo eval`` reports accuracy and writes a confusion matrix through
``evaluate_extra``. Its one sampler, ``dream``, shows what the network has learnt: it ascends the
class logit from grey noise (Simonyan et al. 2013, "class model visualisation").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError, DataError
from genzoo.family import Model, Sampler, batches, gaussian, pyplot, save_figure


@dataclass
class ClassifierConfig:
    arch: Literal["mlp", "cnn"] = "cnn"
    channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    class_names: list[str] = field(default_factory=list)  # from the data: for the confusion matrix
    hidden: list[int] = field(default_factory=lambda: [200, 150])  # MLP: the book's Dense(200), Dense(150)
    filters: list[int] = field(default_factory=lambda: [32, 32, 64, 64])  # CNN: strides 1, 2, 1, 2
    dense: int = 128  # CNN: the dense layer before the output; its activations are the FID features
    dropout: float = 0.5
    negative_slope: float = 0.3  # Keras' LeakyReLU default, which the book uses

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "cnn"):
            raise ValueError(f"arch must be 'mlp' or 'cnn', got {self.arch!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.channels < 1 or self.image_size < 1:
            raise ValueError("channels and image_size must be >= 1")
        if not self.filters or not self.hidden or min(self.filters + self.hidden) < 1 or self.dense < 1:
            raise ValueError("filters, hidden and dense need at least one width, each >= 1")


def conv_block(c_in: int, c_out: int, stride: int, slope: float) -> nn.Sequential:
    """The book's Conv2D(3x3, "same") -> BatchNormalization -> LeakyReLU. The conv keeps its
    bias as Keras does, so the parameter count is the book's (591,914 trainable + 640 batch-norm
    statistics = the 592,554 its summary prints)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(slope))


class Classifier(Model):
    Config = ClassifierConfig
    modality = "image"
    likelihood_unit = None

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        c = config
        flat = c.channels * c.image_size * c.image_size
        if c.arch == "mlp":
            # Flatten -> Dense(200, relu) -> Dense(150, relu); the output layer is `self.head`
            layers: list[nn.Module] = [nn.Flatten()]
            for width in c.hidden:
                layers += [nn.Linear(flat, width), nn.ReLU()]
                flat = width
            self.body = nn.Sequential(*layers)
            self.feature_dim = flat
        else:
            # four conv blocks, every second one halves the size; then Dense(128) -> BN ->
            # LeakyReLU -> Dropout(0.5), as in the book's CIFAR-10 CNN
            blocks, c_in, size = [], c.channels, c.image_size
            for i, width in enumerate(c.filters):
                stride = 2 if i % 2 else 1
                blocks.append(conv_block(c_in, width, stride, c.negative_slope))
                c_in, size = width, math.ceil(size / stride)
            self.body = nn.Sequential(*blocks, nn.Flatten(),
                                      nn.Linear(c_in * size * size, c.dense),
                                      nn.BatchNorm1d(c.dense), nn.LeakyReLU(c.negative_slope))
            self.feature_dim = c.dense
        self.dropout = nn.Dropout(c.dropout if c.arch == "cnn" else 0.0)
        self.head = nn.Linear(self.feature_dim, c.num_classes)

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        shape = getattr(data, "shape", None)
        out: dict[str, Any] = {}
        if shape:
            if len(shape) != 3 or shape[1] != shape[2]:
                raise DataError(f"the classifier needs square images, got {tuple(shape)}; "
                                "resize them with --set data.size=32")
            out.update(channels=int(shape[0]), image_size=int(shape[-1]))
        classes = list(getattr(data, "classes", []) or [])
        if classes:
            out.update(num_classes=len(classes), class_names=classes)
        return out

    def setup(self, data: Any) -> None:
        if getattr(data, "y", None) is None:
            raise DataError(f"dataset {getattr(data, 'name', '')!r} has no class labels to "
                            "learn; name an attribute with --set data.label=NAME")

    # -- network ------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (n, C, H, W) -> a feature vector per image, (n, D) with
        D = ``feature_dim``: the last hidden layer, which FID and KID compare (``Model.features``,
        the capability ``zoo eval --features RUN`` looks for)."""
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> class logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``Model.class_logits``: what the recognisability figure asks of a classifier."""
        return self(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "y" not in batch:
            raise DataError("the classifier needs labelled data (the batch has no 'y')")
        logits = self(batch["x"]).float()
        y = batch["y"]
        return {"loss": F.cross_entropy(logits, y),
                "accuracy": (logits.argmax(1) == y).float().mean()}

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """``zoo export``: images in [0, 1] (B, C, H, W) -> class logits (B, num_classes)."""
        x = torch.rand((2, *self.image_shape()), generator=torch.Generator().manual_seed(0))
        c, h, w = self.image_shape()
        names = ", ".join(self.config.class_names) or f"{self.config.num_classes} classes"
        return self.eval(), (x.to(self.device),), {
            "inputs": ["image"], "outputs": ["logits"],
            "what": f"classifier: images (B, {c}, {h}, {w}) in [0, 1] -> logits "
                    f"(B, {self.config.num_classes}) over {names}"}

    # -- zoo eval -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, data: Any, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(true labels, predicted labels) over a split, in eval mode."""
        was = self.training
        self.eval()
        ys, ps = [], []
        try:
            for batch in batches(data, batch_size, self.device):
                ys.append(batch["y"].cpu())
                ps.append(self(batch["x"]).argmax(1).cpu())
        finally:
            self.train(was)
        return torch.cat(ys), torch.cat(ps)

    def evaluate_extra(self, data: Any, out_dir: Path | None = None) -> dict[str, Any]:
        """Accuracy, per-class accuracy, and the confusion matrix as a PNG in `out_dir`."""
        if getattr(data, "y", None) is None:
            raise DataError("this split has no labels: cannot measure accuracy")
        y, p = self.predict(data)
        k = self.config.num_classes
        cm = torch.bincount(y * k + p, minlength=k * k).reshape(k, k)
        names = self.config.class_names or [str(i) for i in range(k)]
        out: dict[str, Any] = {"accuracy": float((y == p).float().mean())}
        per = cm.diag().float() / cm.sum(1).clamp_min(1)
        out["per_class_accuracy"] = {n: round(float(a), 4) for n, a in zip(names, per)}
        out["confusion_matrix"] = cm.tolist()
        if out_dir is not None:
            out["confusion_png"] = str(write_confusion(cm, names, Path(out_dir) / "confusion.png",
                                                       out["accuracy"]))
        return out


def write_confusion(cm: torch.Tensor, names: list[str], path: Path, accuracy: float) -> Path:
    plt = pyplot()
    k = len(names)
    rows = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(1.6 + 0.6 * k, 1.2 + 0.6 * k))
    ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black")
    short = [n if len(n) <= 12 else n[:11] + "." for n in names]
    ax.set_xticks(range(k), short, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {accuracy:.1%} ({int(cm.sum())} images)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


# -- sampler ------------------------------------------------------------------------------------

@dataclass
class DreamOptions:
    steps: int = 64
    lr: float = 0.05
    jitter: int = 1  # random shifts each step (pixels) keep the image from turning to noise

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")


class DreamSampler(Sampler):
    """Images the classifier calls class k: start from grey plus a little noise and ascend the
    class logit (pre-softmax, as Simonyan et al. do) by Adam on the pixels' logits. Without a
    label, consecutive images cycle through the classes."""

    name = "dream"
    Options = DreamOptions
    inputs = {"label": "class index to dream of"}
    needs_grad = True
    preview = {"steps": 16}

    def check(self, model: Classifier, inputs: dict[str, Any]) -> None:
        label = inputs.get("label")
        k = model.config.num_classes
        if label is not None and not 0 <= int(label) < k:
            names = model.config.class_names
            shown = " (" + ", ".join(f"{i}={c}" for i, c in enumerate(names)) + ")" if names else ""
            raise ConfigError(f"label {label} is out of range: valid labels are 0..{k - 1}{shown}")

    def sample(self, model: Classifier, n: int, generator: torch.Generator,
               label: int | None = None, **_: Any) -> torch.Tensor:
        o = self.options
        k = model.config.num_classes
        y = torch.full((n,), int(label)) if label is not None else torch.arange(n) % k
        y = y.to(model.device)
        noise = gaussian(generator, (n, *model.image_shape()), model.device)
        pixels = (0.1 * noise).requires_grad_(True)  # logits of the pixels
        opt = torch.optim.Adam([pixels], lr=o.lr)
        for _ in range(o.steps):
            x = torch.sigmoid(pixels)
            if o.jitter:
                dx, dy = (int(v) for v in torch.randint(-o.jitter, o.jitter + 1, (2,), generator=generator))
                x = torch.roll(x, (dy, dx), dims=(2, 3))
            score = model(x).gather(1, y[:, None]).sum()
            opt.zero_grad(set_to_none=True)
            (-score).backward()
            opt.step()
        return torch.sigmoid(pixels.detach())
