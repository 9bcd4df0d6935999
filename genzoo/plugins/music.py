"""Music as a modality (Foster ch. 11): what the music transformer and MuseGAN share.

- ``MusicSample``: generated pieces as notes ``{"track", "pitch" (MIDI), "start", "duration"}``
  in beats (quarter notes), with track names and a tempo; its writer (``write_music``, registered
  for the ``music`` kind in registry.yaml's ``writers``) saves what a person opens: a MIDI file,
  a piano roll PNG (one colour per track) and a WAV rendered offline by a small additive synth,
  per piece, plus an overview PNG and the events as JSON lines.
- Parsing scores into the book's two token streams, notes (``G4``, ``rest``, ``G:major``,
  ``4/4TS``, ``START``) and durations in quarter lengths (``1.0``, ``0.5``, ``1/3``), with
  music21, and the datasets built on it: the Bach chorales inside music21's corpus (parsed once
  into a cached JSON token file under the data root) and any folder of MIDI / MusicXML files.
- The JSB chorales on a 16th-note grid (MuseGAN's data), four voices as MIDI pitches.

The book's parser chordifies each score and keeps the top note of every chord; here the top line
("skyline") is taken straight from the notes of all parts, which gives the same melody without
chordify's cost (chordify is 0.8 s per chorale: minutes for the corpus).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from genzoo.core.data import Dataset, DataConfig, TensorData, data_root, split_index
from genzoo.core.plots import pyplot, save_figure
from genzoo.core.sample import EventSample
from genzoo.errors import ConfigError, DataError

START, REST = "START", "rest"
ZERO = "0.0"  # the duration of tokens that take no time (START, keys, time signatures)
TOKENS_VERSION = 1  # bump when the tokenisation changes: old caches are then ignored
SCORE_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml", ".krn", ".abc")

# -- note names and durations ---------------------------------------------------------------------

_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_NAMES = ["C", "C#", "D", "E-", "E", "F", "F#", "G", "G#", "A", "B-", "B"]  # music21 spelling
_NOTE = re.compile(r"^([A-Ga-g])(#{1,2}|-{1,2}|b{1,2})?(-?\d)$")


def midi_of(name: str) -> int | None:
    """'G4' -> 67, 'F#4' -> 66, 'B-3' (music21's flat) or 'Bb3' -> 58; None if not a note."""
    m = _NOTE.match(name.strip())
    if not m:
        return None
    step, acc, octave = m.groups()
    alter = 0
    if acc:
        alter = len(acc) if acc[0] == "#" else -len(acc)
    return 12 * (int(octave) + 1) + _STEPS[step.upper()] + alter


def name_of(midi: int) -> str:
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"


def duration_token(q: Any) -> str:
    """Quarter lengths as music21 prints them: '1.0', '0.5', '1.5'; triplets as '1/3'."""
    f = Fraction(q).limit_denominator(96)
    if f.denominator & (f.denominator - 1) == 0:  # a power of two: exact as a float
        return str(float(f))
    return f"{f.numerator}/{f.denominator}"


def beats_of(token: str) -> float:
    """'1.5' -> 1.5, '1/3' -> 0.333...; non-durations -> 0."""
    try:
        return float(Fraction(token))
    except (ValueError, ZeroDivisionError):
        return 0.0


def parse_prompt(prompt: str) -> list[tuple[str, str]]:
    """The prompt syntax: notes separated by spaces, each ``NOTE[:DURATION]``.

    NOTE is a pitch with its octave (``G4``, ``F#4``, ``Bb3`` or music21's ``B-3``) or ``rest``;
    DURATION is in quarter notes (``1``, ``0.5``, ``1.5``, ``1/3``), default 1. A key
    (``G:major``) or time signature (``3/4TS``) may be given too; they take no time.
    Example: ``"G4:1 A4:0.5 B4:0.5 rest:1"``."""
    out = []
    for item in prompt.split():
        key = re.match(r"^([A-Ga-g])([#b-]*):(major|minor)$", item)
        if key:  # a key takes no time: G:major, Bb:minor (music21 writes B-:minor)
            out.append((f"{key[1].upper()}{key[2].replace('b', '-')}:{key[3]}", ZERO))
            continue
        if item.endswith("TS"):  # a time signature: 3/4TS
            out.append((item, ZERO))
            continue
        note, _, dur = item.partition(":")
        if note.lower() == REST:
            note = REST
        else:
            midi = midi_of(note)
            if midi is None:
                raise ConfigError(f"prompt note {note!r} is not a note: write NOTE:DURATION, e.g. "
                                  f"'G4:1 F#4:0.5 Bb3:1/3 rest:1'")
            note = note[0].upper() + note[1:].replace("b", "-")
        try:
            q = Fraction(dur) if dur else Fraction(1)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"prompt duration {dur!r} of {item!r} is not a number of quarter "
                              "notes (e.g. 1, 0.5, 1/3)") from None
        if q <= 0:
            raise ConfigError(f"prompt duration of {item!r} must be > 0 quarter notes")
        out.append((note, duration_token(q)))
    if not out:
        raise ConfigError("the prompt holds no notes; write e.g. 'G4:1 A4:0.5'")
    return out


# -- the sample and its writer ----------------------------------------------------------------------

TRACK_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b"]
MAX_RENDERED = 8  # pieces that get their own PNG and WAV (MIDI is written for every piece)
SAMPLE_RATE = 22_050


@dataclass
class MusicSample(EventSample):
    """``sequences[i]``: the notes of piece i, each ``{"track", "pitch", "start", "duration"}``
    (MIDI pitch; start and duration in beats = quarter notes). ``tokens[i]``: the piece as the
    model wrote it, where the model is token based."""

    kind: ClassVar[str] = "music"
    tracks: list[str] = field(default_factory=lambda: ["melody"])
    bpm: float = 90.0
    beats_per_bar: float = 4.0
    tokens: list[str] | None = None

    def length_beats(self, i: int) -> float:
        return max((n["start"] + n["duration"] for n in self.sequences[i]), default=0.0)

    def summary(self, limit: int = 8, width: int = 160) -> str:
        lines = []
        for i, notes in enumerate(self.sequences[:limit]):
            beats = self.length_beats(i)
            pitches = [n["pitch"] for n in notes]
            rng = f", {name_of(min(pitches))}-{name_of(max(pitches))}" if pitches else ""
            head = (f"[{i}] {len(notes)} notes, {beats:g} beats = {beats / self.beats_per_bar:g} "
                    f"bars, {60 * beats / self.bpm:.1f} s at {self.bpm:g} bpm{rng}")
            if self.tokens:
                t = self.tokens[i]
                head += ": " + (t[:width] + " ..." if len(t) > width else t)
            lines.append(head)
        return "\n".join(lines)


def notes_from_tokens(notes: list[str], durations: list[str]) -> list[dict[str, Any]]:
    """Token streams -> one track of notes in beats (START, keys and time signatures take no
    time; rests advance the clock)."""
    out, t = [], 0.0
    for n, d in zip(notes, durations):
        q = beats_of(d)
        midi = midi_of(n)
        if midi is not None and q > 0:
            out.append({"track": 0, "pitch": midi, "start": round(t, 6), "duration": round(q, 6)})
        if midi is not None or n == REST:
            t += q
    return out


def notes_from_grid(grid: np.ndarray, step_beats: float = 0.25) -> list[dict[str, Any]]:
    """(steps, tracks) MIDI pitches (-1 = rest) -> notes; a pitch repeated over consecutive steps
    is one held note (a 16th-note grid cannot tell a repeated attack from a held note; held is
    what chorales mostly do)."""
    out = []
    steps, tracks = grid.shape
    for k in range(tracks):
        t = 0
        while t < steps:
            p = int(grid[t, k])
            end = t + 1
            while end < steps and int(grid[end, k]) == p:
                end += 1
            if p >= 0:
                out.append({"track": k, "pitch": p, "start": t * step_beats,
                            "duration": (end - t) * step_beats})
            t = end
    return sorted(out, key=lambda n: (n["start"], n["track"]))


def write_midi(sample: MusicSample, i: int, path: Path) -> None:
    import mido
    ticks = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(sample.bpm), time=0))
    meta.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks.append(meta)
    for k, name in enumerate(sample.tracks):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        ch = k % 16 if k % 16 != 9 else 10  # channel 10 (index 9) is drums
        track.append(mido.Message("program_change", program=0, channel=ch, time=0))
        events = []
        for n in sample.sequences[i]:
            if n["track"] == k:
                on = round(n["start"] * ticks)
                off = max(on + 1, round((n["start"] + n["duration"]) * ticks))
                events += [(on, 1, n["pitch"]), (off, 0, n["pitch"])]
        now = 0
        for tick, is_on, pitch in sorted(events):  # note-offs first at equal ticks
            msg = "note_on" if is_on else "note_off"
            track.append(mido.Message(msg, note=int(pitch), velocity=80 if is_on else 0,
                                      channel=ch, time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    mid.save(str(path))


def synthesize(notes: list[dict[str, Any]], bpm: float, sample_rate: int = SAMPLE_RATE,
               tail: float = 0.5) -> np.ndarray:
    """A small offline additive synth: each note a fundamental and three decaying harmonics under
    an attack / decay / release envelope, summed and normalised. Returns int16 mono."""
    spb = 60.0 / bpm
    end = max((n["start"] + n["duration"] for n in notes), default=0.0) * spb + tail
    audio = np.zeros(int(end * sample_rate) + 1, dtype=np.float32)
    harmonics = np.array([1.0, 0.5, 0.25, 0.12], dtype=np.float32)
    for n in notes:
        start, length = n["start"] * spb, n["duration"] * spb
        release = 0.08
        count = int((length + release) * sample_rate)
        if count <= 0:
            continue
        t = np.arange(count, dtype=np.float32) / sample_rate
        f0 = 440.0 * 2 ** ((n["pitch"] - 69) / 12)
        k = np.arange(1, len(harmonics) + 1, dtype=np.float32)[:, None]
        keep = (k[:, 0] * f0 < sample_rate / 2)  # no aliasing above Nyquist
        tone = (harmonics[keep, None] * np.sin(2 * np.pi * f0 * k[keep] * t)).sum(0)
        env = np.minimum(1.0, t / 0.01) * (0.6 + 0.4 * np.exp(-3.0 * t))
        env *= np.clip((length + release - t) / release, 0.0, 1.0)  # release after the note
        i0 = int(start * sample_rate)
        seg = audio[i0:i0 + count]
        seg += (tone * env)[: len(seg)]
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > 0:
        audio *= 0.8 / peak
    return (audio * 32767).astype(np.int16)


def write_wav(samples: np.ndarray, path: Path, sample_rate: int = SAMPLE_RATE) -> None:
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())


def draw_roll(ax: Any, sample: MusicSample, i: int, title: str | None = None) -> None:
    from matplotlib.patches import Patch, Rectangle
    notes = sample.sequences[i]
    beats = max(sample.length_beats(i), sample.beats_per_bar)
    pitches = [n["pitch"] for n in notes] or [60]
    lo, hi = min(pitches) - 2, max(pitches) + 2
    for n in notes:
        colour = TRACK_COLOURS[n["track"] % len(TRACK_COLOURS)]
        ax.add_patch(Rectangle((n["start"], n["pitch"] - 0.4), n["duration"], 0.8,
                               facecolor=colour, edgecolor="black", linewidth=0.3))
    bar = sample.beats_per_bar
    for b in np.arange(0, beats + 1e-9, bar):
        ax.axvline(b, color="0.3", linewidth=0.8)
    for b in np.arange(0, beats + 1e-9, 1.0):
        ax.axvline(b, color="0.85", linewidth=0.4, zorder=0)
    cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
    for p in range(lo, hi + 1):
        if p % 12 in (1, 3, 6, 8, 10):  # black keys shaded, as on a piano roll
            ax.axhspan(p - 0.5, p + 0.5, color="0.95", zorder=0)
    ax.set_yticks(cs, [name_of(p) for p in cs])
    ax.set_xlim(0, beats)
    ax.set_ylim(lo - 0.5, hi + 0.5)
    ax.set_xlabel("beats (quarter notes); dark lines: bars")
    if title:
        ax.set_title(title, fontsize=9)
    if len(sample.tracks) > 1:
        ax.legend(handles=[Patch(color=TRACK_COLOURS[k % len(TRACK_COLOURS)], label=t)
                           for k, t in enumerate(sample.tracks)],
                  loc="upper right", fontsize=7, ncol=len(sample.tracks))


def _roll_title(sample: MusicSample, i: int) -> str:
    beats = sample.length_beats(i)
    return (f"piece {i}: {len(sample.sequences[i])} notes, {beats:g} beats "
            f"({60 * beats / sample.bpm:.1f} s at {sample.bpm:g} bpm)")


def write_music(sample: MusicSample, stem: Path, reference: Any = None) -> list[Path]:
    """STEM.jsonl (notes and tokens of every piece), STEM.png (piano rolls of the first pieces,
    stacked), and per piece STEM-i.mid (every piece) plus STEM-i.png and STEM-i.wav (the first
    ``MAX_RENDERED``)."""
    from genzoo.core.checkpoint import atomic_write
    plt = pyplot()
    stem = Path(stem)
    paths = []
    jsonl = Path(f"{stem}.jsonl")
    rows = [{"i": i, "tracks": sample.tracks, "bpm": sample.bpm, "notes": s,
             **({"tokens": sample.tokens[i]} if sample.tokens else {})}
            for i, s in enumerate(sample.sequences)]
    atomic_write(jsonl, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    paths.append(jsonl)
    shown = min(len(sample), MAX_RENDERED)
    longest = max((sample.length_beats(i) for i in range(shown)), default=4.0)
    width = min(40.0, max(8.0, 0.12 * longest))  # >= 800 px at 100 dpi
    fig, axes = plt.subplots(shown, 1, figsize=(width, 2.6 * shown + 0.4), squeeze=False)
    for i in range(shown):
        draw_roll(axes[i, 0], sample, i, _roll_title(sample, i))
    fig.tight_layout()
    overview = Path(f"{stem}.png")
    save_figure(fig, overview)
    paths.append(overview)
    for i in range(len(sample)):
        mid = Path(f"{stem}-{i}.mid")
        atomic_write(mid, lambda p, i=i: write_midi(sample, i, p))
        paths.append(mid)
        if i >= MAX_RENDERED:
            continue
        beats = sample.length_beats(i)
        fig, ax = plt.subplots(figsize=(min(40.0, max(8.0, 0.12 * beats)), 4))
        draw_roll(ax, sample, i, _roll_title(sample, i))
        fig.tight_layout()
        png = Path(f"{stem}-{i}.png")
        save_figure(fig, png)
        wav = Path(f"{stem}-{i}.wav")
        audio = synthesize(sample.sequences[i], sample.bpm)
        atomic_write(wav, lambda p, a=audio: write_wav(a, p))
        paths += [png, wav]
    return paths


# -- parsing scores with music21 ------------------------------------------------------------------

def _music21() -> Any:
    try:
        import music21
    except ImportError:
        raise DataError("reading scores needs music21: pip install music21") from None
    return music21


def score_tokens(score: Any) -> tuple[list[str], list[str]]:
    """A music21 score -> (notes, durations), the book's two streams: START, then the key and
    time signature, then the top line of all parts (each note or rest with its length)."""
    m21 = _music21()
    notes, durs = [START], [ZERO]
    parts = list(getattr(score, "parts", [])) or [score]
    marks = []  # (offset, token): keys and time signatures of the first part
    for el in parts[0].flatten().getElementsByClass((m21.key.KeySignature, m21.meter.TimeSignature)):
        if isinstance(el, m21.key.Key):
            marks.append((Fraction(el.offset), f"{el.tonic.name}:{el.mode}"))
        elif isinstance(el, m21.key.KeySignature):
            k = el.asKey("major")
            marks.append((Fraction(el.offset), f"{k.tonic.name}:major"))
        else:
            marks.append((Fraction(el.offset), f"{el.ratioString}TS"))
    # intervals (start, end, pitch) of every sounding pitch; tied notes extend the previous one
    spans: list[list[Any]] = []
    for part in parts:
        held: dict[int, list[Any]] = {}
        for n in part.flatten().notes:
            q = Fraction(n.quarterLength)
            if q <= 0:  # grace notes
                continue
            start = Fraction(n.offset)
            for p in n.pitches:
                tie = getattr(n, "tie", None)
                prev = held.get(p.midi)
                if tie is not None and tie.type in ("stop", "continue") and prev and prev[1] == start:
                    prev[1] = start + q
                    continue
                span = [start, start + q, p.midi, p.nameWithOctave]
                spans.append(span)
                held[p.midi] = span
    if not spans:
        return notes, durs
    cuts = sorted({s[0] for s in spans} | {s[1] for s in spans} | {Fraction(0)})
    line: list[list[Any]] = []  # [start, end, name, span id]
    for a, b in zip(cuts, cuts[1:]):
        active = [s for s in spans if s[0] <= a and s[1] >= b]
        top = max(active, key=lambda s: s[2]) if active else None
        ident = id(top) if top else None
        if line and line[-1][3] == ident and line[-1][1] == a:
            line[-1][1] = b
        else:
            line.append([a, b, top[3] if top else REST, ident])
    marks.sort(key=lambda m: m[0])
    j = 0
    for start, end, name, _ in line:
        while j < len(marks) and marks[j][0] <= start:
            notes.append(marks[j][1])
            durs.append(ZERO)
            j += 1
        notes.append(name)
        durs.append(duration_token(end - start))
    return notes, durs


def parse_file(path: Path) -> tuple[list[str], list[str]]:
    m21 = _music21()
    try:
        score = m21.converter.parse(str(path), forceSource=True)
    except Exception as e:  # music21 raises many kinds; one line either way
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot parse {path} as music ({type(e).__name__}: {msg[:200]})") from None
    notes, durs = score_tokens(score)
    if len(notes) < 3:
        raise DataError(f"{path} holds no notes")
    return notes, durs


def _parse_cached(files: list[Path], cache: Path, what: str) -> list[dict[str, Any]]:
    """Parse every file once; the tokens go to a JSON file under the data root (atomic write),
    which later runs read instead."""
    if cache.exists():
        try:
            return json.loads(cache.read_text())["pieces"]
        except (ValueError, KeyError):
            pass  # a damaged cache: parse again
    from genzoo.core.checkpoint import atomic_write
    if len(files) >= 20:  # a wait worth announcing (the chorales: a minute or more)
        print(f"parsing {len(files)} {what} with music21, once (cached in {cache}) ...",
              file=sys.stderr, flush=True)
    pieces = []
    for path in files:
        notes, durs = parse_file(path)
        pieces.append({"name": path.name, "notes": notes, "durations": durs})
    body = json.dumps({"version": TOKENS_VERSION, "pieces": pieces})
    atomic_write(cache, lambda p: p.write_text(body))
    return pieces


def _key(*parts: Any) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


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
    m21 = _music21()
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
    PATH, parsed once (cached by file names, sizes and times)."""
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
    stat = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]
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
        import io
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
