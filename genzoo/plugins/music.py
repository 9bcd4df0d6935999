"""Music datasets (Foster ch. 11): what the music transformer and MuseGAN train on.

- Token datasets: the Bach chorales inside music21's corpus (parsed once into a cached JSON token
  file under the data root) and any folder of MIDI / MusicXML files, as the book's two aligned
  streams of note and duration tokens (parsing: ``genzoo.nn.music.parse``).
- The JSB chorales on a 16th-note grid (MuseGAN's data), four voices as MIDI pitches.

Notation, rendering and parsing live in ``genzoo.nn.music``. ``write_music`` (the ``music``
writer that registry.yaml names as ``genzoo.plugins.music:write_music``) and the notation names
older code imports from here are re-exported.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.errors import DataError
from genzoo.family import (DataConfig, Dataset, TensorData, atomic_write, data_root,
                           split_index)
from genzoo.nn.music import (MAX_RENDERED, REST, SAMPLE_RATE, SCORE_SUFFIXES, START,
                             TOKENS_VERSION, ZERO, MusicSample, beats_of, duration_token,
                             midi_of, name_of, notes_from_grid, notes_from_tokens, parse_file,
                             parse_prompt, require_music21, score_tokens, write_midi,
                             write_music)

__all__ = [
    # datasets
    "MusicTokens", "build_vocab", "tokens_dataset", "load_bach_chorales", "load_score_folder",
    "PianoRollData", "load_jsb_grid",
    # re-exported from genzoo.nn.music (registry.yaml names write_music here)
    "write_music", "write_midi", "MusicSample", "START", "REST", "ZERO", "midi_of", "name_of",
    "duration_token", "beats_of", "parse_prompt", "notes_from_tokens", "notes_from_grid",
    "score_tokens", "parse_file", "MAX_RENDERED", "SAMPLE_RATE",
]


# -- parsing once, cached -------------------------------------------------------------------------

def _parse_cached(files: list[Path], cache: Path, what: str) -> list[dict[str, Any]]:
    """Parse every file once; the tokens go to a JSON file under the data root (atomic write),
    which later runs read instead."""
    if cache.exists():
        try:
            pieces = json.loads(cache.read_text(encoding="utf-8"))["pieces"]
            if isinstance(pieces, list) and len(pieces) == len(files) and all(
                    isinstance(p, dict) and isinstance(p.get("notes"), list)
                    and isinstance(p.get("durations"), list) for p in pieces):
                return pieces
        except (ValueError, KeyError, TypeError, OSError, RecursionError):
            pass  # a damaged cache: parse again
    if len(files) >= 20:  # a wait worth announcing (the chorales: a minute or more)
        print(f"parsing {len(files)} {what} with music21, once (cached in {cache}) ...",
              file=sys.stderr, flush=True)
    pieces = []
    for path in files:
        notes, durs = parse_file(path)
        pieces.append({"name": path.name, "notes": notes, "durations": durs})
    body = json.dumps({"version": TOKENS_VERSION, "pieces": pieces})
    atomic_write(cache, lambda p: p.write_text(body, encoding="utf-8"))
    return pieces


def _key(*parts: Any) -> str:
    # surrogateescape: file names that are not UTF-8 (bytes on Linux) are keyed, not fatal
    return hashlib.sha1("|".join(map(str, parts)).encode("utf-8", "surrogateescape")
                        ).hexdigest()[:16]


# -- token datasets -------------------------------------------------------------------------------

def build_vocab(streams: list[list[str]], first: tuple[str, ...] = ()) -> list[str]:
    """Deterministic: `first`, then by frequency, ties by name."""
    import collections
    counts = collections.Counter(t for s in streams for t in s)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return list(first) + [t for t, _ in ranked if t not in first]


@dataclass
class MusicTokens(Dataset):
    """Pieces as two aligned token streams, concatenated (each piece opens with START, as in the
    book); an example is a window of ``seq_len + 1`` positions, ``x[:, :, 0]`` note ids and
    ``x[:, :, 1]`` duration ids. Training windows start at every position (the book's sliding
    windows); held-out windows do not overlap, so every token is predicted once."""

    stream: torch.Tensor  # (T, 2) long
    starts: torch.Tensor  # (N,) long: window starts
    seq_len: int
    note_vocab: list[str]
    duration_vocab: list[str]
    pieces: int = 0
    name: str = ""
    modality: str = "events"

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.seq_len + 1, 2)

    def batch(self, index: Any) -> dict[str, Any]:
        s = self.starts[index]
        return {"x": self.stream[s[:, None] + torch.arange(self.seq_len + 1)]}


def tokens_dataset(pieces: list[dict[str, Any]], cfg: DataConfig, split: str,
                   name: str) -> MusicTokens:
    """Split by piece (a fixed shuffled split), vocabularies from every piece, windows."""
    if cfg.seq_len < 2:
        raise DataError(f"seq_len must be >= 2, got {cfg.seq_len}")
    note_vocab = build_vocab([p["notes"] for p in pieces], (START, REST))
    dur_vocab = build_vocab([p["durations"] for p in pieces], (ZERO,))
    chosen = [pieces[int(i)] for i in split_index(len(pieces), split, cfg.test_fraction)] \
        if len(pieces) > 1 else (pieces if split == "train" else [])
    n_idx = {t: i for i, t in enumerate(note_vocab)}
    d_idx = {t: i for i, t in enumerate(dur_vocab)}
    flat = [(n_idx[n], d_idx[d]) for p in chosen for n, d in zip(p["notes"], p["durations"])]
    stream = torch.tensor(flat, dtype=torch.long).reshape(-1, 2)
    L = cfg.seq_len
    count = stream.shape[0] - L  # windows of L + 1 positions
    if split == "train" and count < 1:
        raise DataError(f"{name}: {stream.shape[0]} tokens in the training pieces, fewer than "
                        f"seq_len + 1 = {L + 1}; use more music or --set data.seq_len=N")
    starts = torch.arange(max(count, 0)) if split == "train" else \
        torch.arange(0, max(count, 0), L)
    return MusicTokens(stream, starts, L, note_vocab, dur_vocab, len(chosen), name)


def load_bach_chorales(entry: Any, cfg: DataConfig, split: str) -> MusicTokens:
    """The Bach chorales in music21's corpus (public domain; MusicXML and Humdrum, the
    roman-numeral analyses left out), parsed once. ``data.limit`` keeps the first N."""
    m21 = require_music21()
    files = sorted((Path(p) for p in m21.corpus.getComposer("bach")
                    if Path(p).suffix.lower() in (".mxl", ".xml", ".musicxml", ".krn")),
                   key=lambda p: p.name)
    if cfg.limit:
        files = files[: cfg.limit]
    if not files:
        raise DataError("music21's corpus holds no Bach chorales (is music21 installed fully?)")
    cache = data_root(cfg.root) / "cache" / (
        f"bach-chorales-music21-{_key(m21.__version__, TOKENS_VERSION, len(files), files[-1].name)}.json")
    pieces = _parse_cached(files, cache, "Bach chorales from music21's corpus")
    return tokens_dataset(pieces, cfg, split, entry.name)


def load_score_folder(entry: Any, cfg: DataConfig, split: str) -> MusicTokens:
    """``--data folder:PATH`` for music models: every MIDI / MusicXML / Humdrum / ABC file under
    PATH, parsed once (cached by file names, sizes, times and inodes)."""
    if not cfg.path:
        raise DataError("the music folder source needs a path: --data folder:PATH")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"music folder {folder} does not exist")
    files = sorted(p for p in folder.glob("**/*") if p.suffix.lower() in SCORE_SUFFIXES)
    if not files:
        raise DataError(f"no MIDI or MusicXML files ({', '.join(SCORE_SUFFIXES)}) found in {folder}")
    if cfg.limit:
        files = files[: cfg.limit]
    # what a content change cannot keep: a rewrite sets the ctime, a replacement a new inode
    # (size and whole-second mtimes, the old key, survive an edit with its mtime put back)
    stat = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns,
             p.stat().st_ctime_ns, p.stat().st_ino) for p in files]
    cache = data_root(cfg.root) / "cache" / (
        f"music-folder-{_key(folder.resolve(), TOKENS_VERSION, stat)}.json")
    pieces = _parse_cached(files, cache, f"scores from {folder}")
    return tokens_dataset(pieces, cfg, split, "folder")


# -- the JSB chorales on a 16th-note grid (MuseGAN) --------------------------------------------------

@dataclass
class PianoRollData(TensorData):
    """Windows of ``bars x steps`` 16th notes of four voices as MIDI pitches (-1 = rest), int16
    (N, bars * steps, tracks); models one-hot them on the device."""

    x: torch.Tensor
    bars: int
    steps: int
    tracks: list[str]
    name: str = ""
    modality: str = "events"


def load_jsb_grid(entry: Any, cfg: DataConfig, split: str) -> PianoRollData:
    """JSB chorales (Boulanger-Lewandowski et al. 2012's split, Huang et al. 2017's 16th-note
    grid). Training windows of 2 bars start at every bar (the book takes one window per
    chorale: 229 examples; every bar gives ~3,400); held-out windows do not overlap. The
    official valid split is the held-out one here (test stays untouched)."""
    opts = entry.options
    bars, steps = int(opts.get("bars", 2)), int(opts.get("steps_per_bar", 16))
    ref = resources.files("genzoo.data").joinpath(entry.location)
    with ref.open("rb") as f:
        arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        which = "train" if split == "train" else "valid"
        notes, offsets = arrays[f"{which}_notes"], arrays[f"{which}_offsets"]
    size, hop = bars * steps, steps if split == "train" else bars * steps
    windows = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        chorale = notes[a:b]
        for s in range(0, len(chorale) - size + 1, hop):
            windows.append(chorale[s:s + size])
    x = torch.from_numpy(np.stack(windows).astype(np.int16))
    if cfg.limit:
        x = x[: cfg.limit]
    return PianoRollData(x, bars, steps, list(opts.get("tracks", ["S", "A", "T", "B"])), entry.name)
