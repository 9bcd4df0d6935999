"""Rendering generated music into files a person opens: MIDI, a piano roll PNG and a WAV.

``write_music`` is the writer of ``MusicSample`` (the ``music`` kind in registry.yaml's
``writers``): per piece a MIDI file, a piano roll PNG (one colour per track) and a WAV rendered
offline by a small additive synth, plus an overview PNG and the notes as JSON lines. A WAV
holds at most ``MAX_SECONDS`` of music and a piano roll at most ``MAX_ROLL_BEATS`` beats, however
long a piece is (a model asked for 100,000 events writes a piece of hours).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genzoo.family import atomic_write, pyplot, save_figure
from genzoo.nn.music.notation import MusicSample, name_of

__all__ = ["TRACK_COLOURS", "MAX_RENDERED", "SAMPLE_RATE", "MAX_SECONDS", "MAX_ROLL_BEATS",
           "write_midi", "synthesize", "write_wav", "draw_roll", "music_records", "write_music"]

TRACK_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b"]
MAX_RENDERED = 8  # pieces that get their own PNG and WAV (MIDI is written for every piece)
SAMPLE_RATE = 22_050
MAX_SECONDS = 120.0  # the longest WAV rendered: 10.6 MB at 22,050 Hz, 16 bit
MAX_ROLL_BEATS = 1024  # the longest piano roll drawn (a line per beat: more would never finish)


def write_midi(sample: MusicSample, i: int, path: Path) -> None:
    """Piece i as a type-1 MIDI file: a tempo track, then one track (and channel) per voice."""
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
               tail: float = 0.5, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """A small offline additive synth: each note a fundamental and three decaying harmonics under
    an attack / decay / release envelope, summed and normalised. Returns int16 mono of at most
    `max_seconds` (the rest of a longer piece is cut, so its length never sets the memory)."""
    if not (bpm > 0 and np.isfinite(bpm)):
        raise ValueError(f"bpm must be a positive number, got {bpm}")
    if not (max_seconds > 0 and np.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be a positive number, got {max_seconds}")
    spb = 60.0 / bpm
    end = max((n["start"] + n["duration"] for n in notes), default=0.0) * spb + tail
    end = min(end, max_seconds)
    audio = np.zeros(int(end * sample_rate) + 1, dtype=np.float32)
    harmonics = np.array([1.0, 0.5, 0.25, 0.12], dtype=np.float32)
    for n in notes:
        start, length = n["start"] * spb, n["duration"] * spb
        release = 0.08
        i0 = int(start * sample_rate)
        if i0 >= len(audio) or i0 < 0:
            continue
        # never more samples than are left in the audio: a note of a million beats is cut too
        count = min(int((length + release) * sample_rate), len(audio) - i0)
        if count <= 0:
            continue
        t = np.arange(count, dtype=np.float32) / sample_rate
        f0 = 440.0 * 2 ** ((n["pitch"] - 69) / 12)
        k = np.arange(1, len(harmonics) + 1, dtype=np.float32)[:, None]
        keep = (k[:, 0] * f0 < sample_rate / 2)  # no aliasing above Nyquist
        tone = (harmonics[keep, None] * np.sin(2 * np.pi * f0 * k[keep] * t)).sum(0)
        env = np.minimum(1.0, t / 0.01) * (0.6 + 0.4 * np.exp(-3.0 * t))
        env *= np.clip((length + release - t) / release, 0.0, 1.0)  # release after the note
        seg = audio[i0:i0 + count]
        seg += (tone * env)[: len(seg)]
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > 0:
        audio *= 0.8 / peak
    return (audio * 32767).astype(np.int16)


def write_wav(samples: np.ndarray, path: Path, sample_rate: int = SAMPLE_RATE) -> None:
    """int16 mono samples as a WAV file."""
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())


def draw_roll(ax: Any, sample: MusicSample, i: int, title: str | None = None) -> None:
    """Piece i as a piano roll on a matplotlib axis: one colour per track, bar lines, black
    keys shaded."""
    from matplotlib.patches import Patch, Rectangle
    beats = min(max(sample.length_beats(i), sample.beats_per_bar), MAX_ROLL_BEATS)
    notes = [n for n in sample.sequences[i] if n["start"] <= beats]
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
        ax.set_title(title, fontsize=9, loc="left")
    if len(sample.tracks) > 1:  # above the roll, right of the title: inside, it hid top notes
        ax.legend(handles=[Patch(color=TRACK_COLOURS[k % len(TRACK_COLOURS)], label=t)
                           for k, t in enumerate(sample.tracks)],
                  loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2,
                  frameon=False, fontsize=7, ncol=len(sample.tracks))


def _roll_title(sample: MusicSample, i: int) -> str:
    beats = sample.length_beats(i)
    return (f"piece {i}: {len(sample.sequences[i])} notes, {beats:g} beats "
            f"({60 * beats / sample.bpm:.1f} s at {sample.bpm:g} bpm)")


def music_records(sample: MusicSample, offset: int = 0) -> list[dict[str, Any]]:
    """The rows of STEM.jsonl, one per piece numbered from `offset`: its tracks, bpm, notes and
    (for a token model) tokens. ``write_music.records``: the archive of a long ``zoo sample``
    writes the same rows batch by batch."""
    return [{"i": offset + i, "tracks": sample.tracks, "bpm": sample.bpm, "notes": s,
             **({"tokens": sample.tokens[i]} if sample.tokens else {})}
            for i, s in enumerate(sample.sequences)]


def write_music(sample: MusicSample, stem: Path, reference: Any = None) -> list[Path]:
    """STEM.jsonl (notes and tokens of every piece), STEM.png (piano rolls of the first pieces,
    stacked), and per piece STEM-i.mid (every piece) plus STEM-i.png and STEM-i.wav (the first
    ``MAX_RENDERED``; a WAV holds at most ``MAX_SECONDS``)."""
    plt = pyplot()
    stem = Path(stem)
    paths = []
    jsonl = Path(f"{stem}.jsonl")
    rows = music_records(sample)
    atomic_write(jsonl, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    paths.append(jsonl)
    shown = min(len(sample), MAX_RENDERED)
    longest = min(max((sample.length_beats(i) for i in range(shown)), default=4.0),
                  MAX_ROLL_BEATS)
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
        beats = min(sample.length_beats(i), MAX_ROLL_BEATS)
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


write_music.records = music_records  # type: ignore[attr-defined]  # read by the archive writer
