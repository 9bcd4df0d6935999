"""Parsing scores into the book's two token streams with music21.

Notes (``G4``, ``rest``, ``G:major``, ``4/4TS``, ``START``) and durations in quarter lengths
(``1.0``, ``0.5``, ``1/3``). The book's parser chordifies each score and keeps the top note of
every chord; here the top line ("skyline") is taken straight from the notes of all parts, which
gives the same melody without chordify's cost (chordify is 0.8 s per chorale: minutes for a
corpus). music21 is imported only when a score is parsed.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from genzoo.errors import DataError
from genzoo.nn.music.notation import REST, START, ZERO, duration_token

__all__ = ["TOKENS_VERSION", "SCORE_SUFFIXES", "require_music21", "score_tokens",
           "parse_file"]

TOKENS_VERSION = 1  # bump when the tokenisation changes: cached token files are then ignored
SCORE_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml", ".krn", ".abc")


def require_music21() -> Any:
    """The music21 module, or a one-line DataError saying how to install it."""
    try:
        import music21 as m21
    except ImportError:
        raise DataError("reading scores needs music21: pip install music21") from None
    return m21


def score_tokens(score: Any) -> tuple[list[str], list[str]]:
    """A music21 score -> (notes, durations), the book's two streams: START, then the key and
    time signature, then the top line of all parts (each note or rest with its length)."""
    m21 = require_music21()
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
    """A score file (MIDI, MusicXML, Humdrum, ABC) -> (notes, durations); a file music21 cannot
    read, or one without notes, is a one-line DataError."""
    m21 = require_music21()
    try:
        score = m21.converter.parse(str(path), forceSource=True)
    except Exception as e:  # music21 raises many kinds; one line either way
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot parse {path} as music ({type(e).__name__}: {msg[:200]})") from None
    notes, durs = score_tokens(score)
    if len(notes) < 3:
        raise DataError(f"{path} holds no notes")
    return notes, durs
