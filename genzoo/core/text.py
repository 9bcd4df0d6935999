"""Text as a first-class modality: tokenizers (word and character level), the text dataset, and
its loader (embedded files or Kaggle CSV/JSON columns).

The tokenizer is built from the training split only, deterministically, and saved with the run
(``Tokenizer.to_json``), so a loaded run decodes its own samples without the data.
"""
from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from genzoo.errors import ConfigError, DataError

PAD, UNK = "", "[UNK]"
_PUNCT = re.compile(f"([{re.escape(string.punctuation)}])")
_SPACE_BEFORE = re.compile(r" ([,.;:!?)\]}'%])")
_SPACE_AFTER = re.compile(r"([(\[{$]) ")


@dataclass
class Tokenizer:
    """``word``: the book's TextVectorization (lowercase, punctuation split into its own tokens,
    id 0 = padding, 1 = ``[UNK]``, the rest by frequency); ``char``: one id per character."""

    level: Literal["word", "char"]
    vocab: list[str]
    lowercase: bool = True
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.vocab)}

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, texts: list[str], level: str = "word", max_vocab: int = 10_000,
              lowercase: bool = True) -> "Tokenizer":
        if level not in ("word", "char"):
            raise ConfigError(f"unknown tokenizer {level!r}; valid: word, char")
        if level == "char":
            return cls("char", sorted(set("".join(texts))), lowercase=False)
        if max_vocab < 3:
            raise ConfigError(f"vocab_size must be >= 3 for a word tokenizer, got {max_vocab}")
        tmp = cls("word", [PAD, UNK], lowercase)
        counts = collections.Counter(t for text in texts for t in tmp.split(text))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: alphabetical
        return cls("word", [PAD, UNK] + [t for t, _ in ranked[: max_vocab - 2]], lowercase)

    # -- properties -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int | None:
        return 0 if self.level == "word" else None

    @property
    def unk_id(self) -> int | None:
        return 1 if self.level == "word" else None

    # -- text <-> ids -----------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        if self.level == "char":
            return list(text)
        if self.lowercase:
            text = text.lower()
        return _PUNCT.sub(r" \1 ", text).split()

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """`strict`: refuse unknown tokens (prompts) instead of mapping them to [UNK]."""
        out = []
        for tok in self.split(text):
            i = self._index.get(tok)
            if i is None:
                if strict or self.unk_id is None:
                    raise ConfigError(f"{tok!r} is not in the vocabulary ({len(self)} "
                                      f"{self.level}s learned from the training data)")
                i = self.unk_id
            out.append(i)
        return out

    def decode(self, ids: list[int] | Any) -> str:
        toks = [self.vocab[int(i)] for i in ids if 0 <= int(i) < len(self.vocab)]
        if self.level == "char":
            return "".join(toks)
        text = " ".join(t for t in toks if t != PAD)
        return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))

    def token(self, i: int) -> str:
        return self.vocab[i] if 0 <= i < len(self.vocab) else "?"

    def encode_prompt(self, prompt: str) -> list[int]:
        """A prompt's ids; a word or character outside the vocabulary is refused, naming every
        one (never dropped: the model would continue a different text than the one asked for,
        and [UNK] would make it continue an unknown word), with close vocabulary words."""
        if self.level == "char":
            bad = sorted({c for c in prompt if c not in self._index})
            if bad:
                raise ConfigError(f"prompt has characters outside the vocabulary: {bad!r}")
            return self.encode(prompt)
        toks = self.split(prompt)
        unknown = list(dict.fromkeys(t for t in toks if t not in self._index))
        if unknown:
            import difflib
            words = [w for w in self.vocab[2:] if w]
            close = {u: difflib.get_close_matches(u, words, n=1, cutoff=0.6) for u in unknown[:8]}
            hints = [f"{u!r} -> {c[0]!r}" for u, c in close.items() if c]
            shown = ", ".join(repr(u) for u in unknown[:8]) + (
                f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
            msg = (f"unknown words in prompt: {shown} (not in the run's {len(self):,}-word "
                   "vocabulary learned from its training data)")
            if len(unknown) == len(set(toks)):
                msg += "; the prompt has only unknown words"
            if hints:
                msg += f"; close: {', '.join(hints)}"
            raise ConfigError(msg)
        return [self._index[t] for t in toks]

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "vocab": self.vocab, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Tokenizer":
        """A saved tokenizer, checked: level word or char, a vocabulary of distinct strings
        (a word vocabulary starts with padding and [UNK]), lowercase a boolean."""
        if not isinstance(obj, dict):
            raise DataError(f"corrupt tokenizer JSON: expected an object, found "
                            f"{type(obj).__name__}")
        level, vocab = obj.get("level"), obj.get("vocab")
        lowercase = obj.get("lowercase", True)
        if level not in ("word", "char"):
            raise DataError(f"corrupt tokenizer JSON: level {level!r}; valid: word, char")
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise DataError("corrupt tokenizer JSON: vocab must be a list of strings")
        if len(set(vocab)) != len(vocab):
            dup = next(t for i, t in enumerate(vocab) if t in vocab[:i])
            raise DataError(f"corrupt tokenizer JSON: vocab holds {dup!r} twice")
        if level == "word" and vocab[:2] != [PAD, UNK]:
            raise DataError(f"corrupt tokenizer JSON: a word vocabulary starts with padding "
                            f"{PAD!r} and {UNK!r}, found {vocab[:2]!r}")
        if not isinstance(lowercase, bool):
            raise DataError(f"corrupt tokenizer JSON: lowercase must be true or false, found "
                            f"{lowercase!r}")
        return cls(level, list(vocab), lowercase)


@dataclass
class TextData:
    """Token rows (N, seq_len + 1): inputs are ``x[:, :-1]``, targets ``x[:, 1:]``. Documents
    (recipes, reviews) are one row each, cut or padded with ``pad_id``; a plain corpus
    (Shakespeare) is cut into consecutive windows."""

    rows: Any  # long tensor (N, seq_len + 1)
    tokenizer: Tokenizer
    name: str = ""
    modality: str = "text"

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    @property
    def seq_len(self) -> int:
        return int(self.rows.shape[1]) - 1

    def batch(self, index: Any) -> dict[str, Any]:
        return {"x": self.rows[index]}

    def to_device(self, batch: dict[str, Any], device: Any) -> dict[str, Any]:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def to(self, device: Any) -> "TextData":
        self.rows = self.rows.to(device)
        return self

    def texts(self, n: int = 3) -> list[str]:
        return [self.tokenizer.decode(r) for r in self.rows[:n].tolist()]


# -- reading documents --------------------------------------------------------------------------

def _fill(template: str, record: dict[str, Any]) -> str | None:
    """``"Recipe for {title} | {directions}"``: lists are joined with " | "; a record missing a
    field (or with an empty one) is skipped, as the book filters incomplete recipes."""
    values = {}
    for key in re.findall(r"{(\w+)}", template):
        v = record.get(key)
        if isinstance(v, list):
            v = " | ".join(str(s).strip() for s in v if str(s).strip())
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v):
            return None
        values[key] = str(v).strip()
    return template.format(**values)


def read_text_exactly(path: Path | Any) -> str:
    """A data file as UTF-8 text (a leading byte-order mark is dropped); bytes that are not
    UTF-8 are a one-line DataError naming the file, the line, the column and the byte offset."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line}, "
                        f"column {column} (byte offset {e.start}); save it as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _json_error(path: Any, e: json.JSONDecodeError, line: int | None = None) -> DataError:
    where = f"line {line}, column {e.colno}" if line is not None else \
        f"line {e.lineno}, column {e.colno}"
    return DataError(f"{path} is not valid JSON{' Lines' if line is not None else ''}: {e.msg} at "
                     f"{where}")


def read_documents(path: Path | Any, fmt: str, template: str | None) -> list[str]:
    """Documents from a .txt (one corpus), .jsonl / .json (records) or .csv (rows) file. A file
    that is not UTF-8, or not valid JSON / CSV, is a one-line DataError naming where it broke."""
    import csv
    import io
    if fmt not in ("txt", "jsonl", "json", "csv"):
        raise DataError(f"unknown text format {fmt!r}; valid: txt, jsonl, json, csv")
    raw = read_text_exactly(path)
    if fmt == "txt":
        return [raw]
    if fmt == "jsonl":
        records = []
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise _json_error(path, e, i) from None
                except RecursionError:
                    raise DataError(f"{path} is not valid JSON Lines: nested too deeply at "
                                    f"line {i}") from None
    elif fmt == "json":
        try:
            records = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _json_error(path, e) from None
        except RecursionError:
            raise DataError(f"{path} is not valid JSON: nested too deeply") from None
        if isinstance(records, dict):
            records = list(records.values())
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a list (or an object) of records, found "
                            f"{type(records).__name__}")
    else:
        reader = csv.DictReader(io.StringIO(raw))
        try:
            records = list(reader)
        except csv.Error as e:
            raise DataError(f"{path} is not valid CSV: {e} at line {reader.line_num}") from None
    if not template:
        raise DataError(f"{path}: records need a template, e.g. 'Recipe for {{title}} | {{directions}}'")
    docs = [d for d in (_fill(template, r) for r in records if isinstance(r, dict)) if d]
    if not docs:
        raise DataError(f"{path}: no record has every field of the template {template!r}")
    return docs


def _source_file(spec: Any, cfg: Any) -> Path | Any:
    """The dataset's file: inside the package, or in a Kaggle download."""
    loc = spec.location
    if loc.startswith("kaggle:"):
        from genzoo.core import kaggle
        from genzoo.core.data_config import data_root
        slug = loc[len("kaggle:"):]
        folder = kaggle.download(slug, data_root(cfg.root)) if cfg.download else \
            kaggle.dataset_dir(slug, data_root(cfg.root))
        name = spec.options.get("file")
        found = sorted(Path(folder).glob(f"**/{name}")) if name else []
        if not found:
            raise DataError(f"{slug}: no file {name!r} under {folder}")
        return found[0]
    return resources.files("genzoo.data").joinpath(loc)


def _split_documents(docs: list[str], split: str, fraction: float) -> list[str]:
    if len(docs) == 1:  # one corpus: the last `fraction` of it is the test split
        text = docs[0]
        cut = int(len(text) * (1 - fraction))
        return [text[:cut]] if split == "train" else [text[cut:]]
    from genzoo.core.datasets import split_index
    idx = split_index(len(docs), split, fraction)
    return [docs[i] for i in idx.tolist()]


def load_text(spec: Any, cfg: Any, split: str) -> TextData:
    """The ``text`` source. Options: ``format`` (txt, jsonl, json, csv), ``template`` for records,
    ``tokenizer`` (word or char; ``--set data.tokenizer=char`` overrides)."""
    import torch
    opts = spec.options
    path = _source_file(spec, cfg)
    fmt = opts.get("format") or Path(str(spec.location)).suffix.lstrip(".") or "txt"
    docs = read_documents(path, fmt, opts.get("template"))
    if cfg.limit:
        docs = docs[: cfg.limit]
    level = cfg.tokenizer or opts.get("tokenizer", "word")
    train_docs = _split_documents(docs, "train", cfg.test_fraction)
    tok = Tokenizer.build(train_docs, level, cfg.vocab_size)
    chosen = train_docs if split == "train" else _split_documents(docs, "test", cfg.test_fraction)
    L = cfg.seq_len + 1
    if len(docs) == 1:  # a corpus: consecutive windows of L tokens, overlapping by one
        ids = torch.tensor(tok.encode(chosen[0]), dtype=torch.long)
        n = (len(ids) - 1) // cfg.seq_len
        if n < 1:
            raise DataError(f"{spec.name} ({split}) has {len(ids)} tokens, fewer than "
                            f"seq_len + 1 = {L}; lower data.seq_len")
        rows = ids[: n * cfg.seq_len + 1].unfold(0, L, cfg.seq_len)
    else:
        if tok.pad_id is None:
            raise DataError("documents need a word tokenizer (character-level needs a corpus)")
        rows = torch.full((len(chosen), L), tok.pad_id, dtype=torch.long)
        for i, doc in enumerate(chosen):
            ids = tok.encode(doc)[:L]
            rows[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return TextData(rows.contiguous(), tok, spec.name)
