"""Music notation: note names, durations, the prompt syntax and the notes of a generated piece.

A piece is a list of notes ``{"track", "pitch" (MIDI), "start", "duration"}`` in beats (quarter
notes). Token models write it as the book's two streams, notes (``G4``, ``rest``, ``G:major``,
``4/4TS``, ``START``) and durations in quarter lengths (``1.0``, ``0.5``, ``1/3``), which
``notes_from_tokens`` turns into notes; grid models (MuseGAN) write MIDI pitches on a 16th-note
grid, which ``notes_from_grid`` turns into notes. ``MusicSample`` holds the pieces; its writer
lives in ``genzoo.nn.music.render``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from genzoo.errors import ConfigError
from genzoo.family import EventSample

__all__ = ["START", "REST", "ZERO", "midi_of", "name_of", "duration_token", "beats_of",
           "parse_prompt", "MusicSample", "notes_from_tokens", "notes_from_grid"]

START, REST = "START", "rest"
ZERO = "0.0"  # the duration of tokens that take no time (START, keys, time signatures)

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
    """67 -> 'G4', 70 -> 'B-4': a MIDI pitch as music21 spells it (sharps, and '-' for flats)."""
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


MIN_BEATS, MAX_BEATS = Fraction(1, 64), 64  # a prompt's durations, in quarter notes


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
            if not re.match(r"^[1-9]\d?/[1-9]\d?TS$", item):
                raise ConfigError(f"prompt time signature {item!r} is not one: write BEATS/UNITTS, "
                                  "e.g. '3/4TS' or '6/8TS'")
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
        if not MIN_BEATS <= q <= MAX_BEATS:  # 1e400 would overflow a float; 1e-400 round to 0
            raise ConfigError(f"prompt duration {dur!r} of {item!r} is out of range: from 1/64 "
                              f"to {MAX_BEATS} quarter notes")
        out.append((note, duration_token(q)))
    if not out:
        raise ConfigError("the prompt holds no notes; write e.g. 'G4:1 A4:0.5'")
    return out


# -- the sample -----------------------------------------------------------------------------------

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
        """Where the last note of piece i ends, in beats."""
        return max((n["start"] + n["duration"] for n in self.sequences[i]), default=0.0)

    def summary(self, limit: int = 8, width: int = 160) -> str:
        """One line per piece (the first `limit`): notes, length, range and its tokens."""
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
