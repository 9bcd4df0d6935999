"""Captioned images for text-to-image models (CLIP, latent diffusion; Foster ch. 13).

``CaptionData`` is an ``ImageData`` whose every image has one or more captions (alternative
wordings of the same content, all images the same number of them). Batches carry the captions as
strings (``batch["captions"]``: one tuple of alternatives per image); the model tokenizes them
with its own word tokenizer, built from the training captions by ``caption_tokenizer`` and saved
with the run, so a run reads prompts without the data.

Captions come from what genzoo ships (the templates here: "a handwritten seven", "a photo of a
sneaker", twemoji names and categories) or from a folder's ``captions.jsonl``
(``read_captions_jsonl``: one ``{"file": NAME, "caption": TEXT}`` per line).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genzoo.errors import DataError
from genzoo.family import DataConfig, ImageData, Tokenizer, load_image_folder, split_index

__all__ = ["CaptionData", "DIGIT_WORDS", "digit_captions", "fashion_captions", "emoji_captions",
           "caption_tokenizer", "tokenize", "read_captions_jsonl", "caption_folder", "CAPTION_FILE"]

CAPTION_FILE = "captions.jsonl"
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_TEMPLATES = ("a handwritten {}", "the digit {}", "a drawing of the number {}")
FASHION_WORDS = {"T-shirt/top": "t-shirt", "Trouser": "pair of trousers", "Pullover": "pullover",
                 "Dress": "dress", "Coat": "coat", "Sandal": "sandal", "Shirt": "shirt",
                 "Sneaker": "sneaker", "Bag": "bag", "Ankle boot": "ankle boot"}
FASHION_TEMPLATES = ("a photo of a {}", "a picture of a {}", "a {}")
EMOJI_TEMPLATES = ("{name}", "{a} {category} emoji", "{name}, {a} {category} emoji")


@dataclass
class CaptionData(ImageData):
    """uint8 images with captions: ``captions[i]`` is image i's tuple of alternative captions.
    ``class_prompts`` (one per class, when the images have classes) is what zero-shot
    classification and prompt accuracy ask for; ``groups`` names sets of classes scored apart
    (``{"mnist": [0..9], "fashion": [10..19]}``)."""

    captions: list[tuple[str, ...]] = field(default_factory=list)
    class_prompts: list[str] = field(default_factory=list)
    groups: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.captions) != len(self.x):
            raise DataError(f"{len(self.captions)} captions for {len(self.x)} images")
        widths = {len(c) for c in self.captions}
        if len(widths) > 1 or 0 in widths:
            raise DataError("every image needs the same number (>= 1) of alternative captions")

    @property
    def alternatives(self) -> int:
        return len(self.captions[0]) if self.captions else 1

    def batch(self, index: Any) -> dict[str, Any]:
        out = super().batch(index)
        rows = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        out["captions"] = [self.captions[i] for i in rows]
        return out

    def limited(self, limit: int | None) -> "CaptionData":
        """The first `limit` images (all when None)."""
        if not limit or limit >= len(self):
            return self
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        self.x, self.captions = self.x[:limit], self.captions[:limit]
        self.y = self.y[:limit] if self.y is not None else None
        self.attributes = self.attributes[:limit] if self.attributes is not None else None
        return self


def digit_captions(labels: list[int]) -> tuple[list[tuple[str, ...]], list[str]]:
    """MNIST: each digit in three wordings; the class prompt is "a handwritten seven"."""
    caps = [tuple(t.format(DIGIT_WORDS[y]) for t in DIGIT_TEMPLATES) for y in labels]
    return caps, [DIGIT_TEMPLATES[0].format(w) for w in DIGIT_WORDS]


def fashion_captions(labels: list[int], classes: list[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Fashion-MNIST: "a photo of a sneaker" and two other wordings."""
    words = [FASHION_WORDS.get(c, c.lower()) for c in classes]
    caps = [tuple(t.format(words[y]) for t in FASHION_TEMPLATES) for y in labels]
    return caps, [FASHION_TEMPLATES[0].format(w) for w in words]


def emoji_captions(names: list[str], labels: list[int], categories: list[str]
                   ) -> tuple[list[tuple[str, ...]], list[str]]:
    """Twemoji: the emoji's name ("red apple"), its category ("a food & drink emoji"), and
    both ("red apple, a food & drink emoji"); the class prompt is the category one."""
    cats = [c.lower() for c in categories]
    art = ["an" if c[:1] in "aeiou" else "a" for c in cats]
    caps = [tuple(t.format(name=n.lower(), category=cats[y], a=art[y]) for t in EMOJI_TEMPLATES)
            for n, y in zip(names, labels)]
    return caps, [EMOJI_TEMPLATES[1].format(category=c, a=a) for c, a in zip(cats, art)]


def caption_tokenizer(captions: list[tuple[str, ...]], max_vocab: int = 10_000) -> Tokenizer:
    """genzoo's word tokenizer (id 0 padding, 1 [UNK]) over every alternative of `captions`:
    deterministic, so the same training captions give the same vocabulary."""
    return Tokenizer.build([c for alts in captions for c in alts], "word", max_vocab)


def tokenize(tokenizer: Tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """Texts -> (B, length) ids, padded with 0 and cut at `length`; unknown words -> [UNK]."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)[:length]
        if ids:
            out[i, :len(ids)] = torch.tensor(ids)
    return out


def read_captions_jsonl(folder: Path) -> dict[str, tuple[str, ...]]:
    """A folder's ``captions.jsonl``: one JSON object per line naming an image (``file``,
    ``file_name`` or ``image``: the name, or a path relative to the folder) and its caption
    (``caption`` or ``text``: a string, or a list of alternatives). Images keep as many
    alternatives as the most any has (shorter lists repeat). One line per mistake."""
    path = folder / CAPTION_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    table: dict[str, list[str]] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {no}: not JSON ({e.msg})") from None
        name = next((row.get(k) for k in ("file", "file_name", "image") if isinstance(row, dict)
                     and k in row), None)
        text = next((row.get(k) for k in ("caption", "text") if isinstance(row, dict)
                     and k in row), None)
        if not isinstance(name, str) or not name:
            raise DataError(f"{path}, line {no}: no image name (a \"file\" key)")
        alts = [text] if isinstance(text, str) else text
        if not isinstance(alts, list) or not alts or not all(isinstance(a, str) and a.strip()
                                                             for a in alts):
            raise DataError(f"{path}, line {no}: \"caption\" must be a non-empty string or a "
                            "list of them")
        table[name] = alts
    if not table:
        raise DataError(f"{path} has no captions")
    width = max(len(v) for v in table.values())
    return {k: tuple(v[i % len(v)] for i in range(width)) for k, v in table.items()}


def caption_folder(folder: Path, cfg: DataConfig, split: str, options: dict[str, Any],
                   name: str = "folder") -> CaptionData:
    """A folder of images with a ``captions.jsonl`` (``--data folder:PATH``) as CaptionData:
    the images decoded (and cached) as any image folder, each given its captions; an image the
    file does not caption is one line naming it."""
    from genzoo.core.image_folder import IMAGE_SUFFIXES  # the folder loader's own file list
    table = read_captions_jsonl(folder)
    data = load_image_folder(folder, cfg, split, options, name)
    files = sorted(p for p in folder.glob(options.get("glob", "**/*"))
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    if cfg.limit:
        files = files[: cfg.limit]
    rows = split_index(len(files), split, cfg.test_fraction).tolist()
    captions = []
    for i in rows:
        rel = files[i].relative_to(folder).as_posix()
        alts = table.get(rel) or table.get(files[i].name)
        if alts is None:
            raise DataError(f"{folder / CAPTION_FILE} has no caption for {rel} "
                            f"({len(table)} captions for {len(files)} images)")
        captions.append(alts)
    width = max(len(c) for c in captions)
    captions = [tuple(c[i % len(c)] for i in range(width)) for c in captions]
    out = CaptionData(data.x, None, [], None, [], name, captions=captions)
    out.mapped, out.pad_px, out.frame = data.mapped, data.pad_px, data.frame
    return out
