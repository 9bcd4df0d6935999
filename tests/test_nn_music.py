"""genzoo.nn.music: notation round trips, notes from tokens and from a grid, MIDI written and read
back, the synth's WAV."""
import wave
from fractions import Fraction

import numpy as np
import pytest

from genzoo.errors import ConfigError
from genzoo.nn.music import (SAMPLE_RATE, MusicSample, beats_of, duration_token, midi_of,
                             name_of, notes_from_grid, notes_from_tokens, parse_prompt,
                             synthesize, write_midi, write_wav)

mido = pytest.importorskip("mido")


def test_every_midi_pitch_round_trips_through_its_name():
    # from octave 0 up: below it (MIDI 0-11) music21's names read 'C-1', which is also how it
    # writes C flat in octave 1 (midi_of reads that one); no chorale goes down there
    for p in range(12, 128):
        assert midi_of(name_of(p)) == p
    # spellings music21 does not use map to the same pitch, and back to music21's
    assert name_of(midi_of("Bb3")) == "B-3" and name_of(midi_of("Db4")) == "C#4"
    assert midi_of("E#4") == midi_of("F4") and midi_of("C##4") == midi_of("D4")
    assert midi_of("rest") is None and midi_of("G:major") is None and midi_of("H4") is None


@pytest.mark.parametrize("q, token", [(0.25, "0.25"), (0.5, "0.5"), (1, "1.0"), (1.5, "1.5"),
                                      (4, "4.0"), (Fraction(1, 3), "1/3"),
                                      (Fraction(2, 3), "2/3"), (Fraction(1, 6), "1/6")])
def test_duration_tokens_and_beats_round_trip(q, token):
    assert duration_token(q) == token
    assert beats_of(token) == pytest.approx(float(q))
    assert duration_token(Fraction(token)) == token


def test_non_durations_take_no_time():
    assert beats_of("G4") == 0.0 and beats_of("1/0") == 0.0 and beats_of("0.0") == 0.0


def test_a_prompt_becomes_tokens_and_notes():
    tokens = parse_prompt("G:major 3/4TS G4:1 Bb3:1/3 rest:0.5 f#4")
    assert tokens == [("G:major", "0.0"), ("3/4TS", "0.0"), ("G4", "1.0"), ("B-3", "1/3"),
                      ("rest", "0.5"), ("F#4", "1.0")]
    notes = notes_from_tokens(*map(list, zip(*tokens)))
    # keys and time signatures take no time; the rest moves the clock
    assert [(n["pitch"], n["start"], n["duration"]) for n in notes] == [
        (67, 0.0, 1.0), (58, 1.0, 0.333333), (66, 1.833333, 1.0)]
    with pytest.raises(ConfigError, match="not a note"):
        parse_prompt("X4:1")


def test_notes_from_tokens_skips_start_and_zero_length_notes():
    notes = notes_from_tokens(["START", "C4", "D4", "rest", "E4"],
                              ["0.0", "0.5", "0.0", "1.0", "2.0"])
    assert [(n["pitch"], n["start"], n["duration"]) for n in notes] == [(60, 0.0, 0.5),
                                                                         (64, 1.5, 2.0)]
    assert all(n["track"] == 0 for n in notes)


def test_notes_from_a_grid_hold_repeated_pitches():
    grid = np.array([[60, -1], [60, 48], [-1, 48], [62, 48], [62, 50], [64, 50]])
    notes = notes_from_grid(grid)
    assert notes == [
        {"track": 0, "pitch": 60, "start": 0.0, "duration": 0.5},
        {"track": 1, "pitch": 48, "start": 0.25, "duration": 0.75},
        {"track": 0, "pitch": 62, "start": 0.75, "duration": 0.5},
        {"track": 1, "pitch": 50, "start": 1.0, "duration": 0.5},
        {"track": 0, "pitch": 64, "start": 1.25, "duration": 0.25},
    ]
    assert notes_from_grid(np.full((8, 2), -1)) == []


def piece() -> MusicSample:
    notes = [{"track": 0, "pitch": 67, "start": 0.0, "duration": 1.0},
             {"track": 1, "pitch": 48, "start": 0.0, "duration": 2.0},
             {"track": 0, "pitch": 69, "start": 1.0, "duration": 0.5},
             {"track": 0, "pitch": 71, "start": 1.5, "duration": 1.5},
             {"track": 1, "pitch": 43, "start": 2.0, "duration": 1.0}]
    return MusicSample([notes], tracks=["S", "B"], bpm=120.0)


def read_midi(path) -> tuple[list[tuple[int, int, float, float]], float, list[str]]:
    """(track, pitch, start, duration) in beats, the tempo in bpm and the track names."""
    mid = mido.MidiFile(str(path))
    tempo, names, notes = None, [], []
    for k, track in enumerate(mid.tracks):
        tick, on = 0, {}
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempo = mido.tempo2bpm(msg.tempo)
            elif msg.type == "track_name":
                names.append(msg.name)
            elif msg.type == "note_on" and msg.velocity > 0:
                on[msg.note] = tick
            elif msg.type in ("note_off", "note_on"):
                start = on.pop(msg.note)
                notes.append((k - 1, msg.note, start / mid.ticks_per_beat,
                              (tick - start) / mid.ticks_per_beat))
    return sorted(notes, key=lambda n: (n[2], n[0])), tempo, names


def test_midi_reads_back_as_the_same_notes(tmp_path):
    s = piece()
    write_midi(s, 0, tmp_path / "p.mid")
    notes, bpm, names = read_midi(tmp_path / "p.mid")
    want = sorted(((n["track"], n["pitch"], n["start"], n["duration"]) for n in s.sequences[0]),
                  key=lambda n: (n[2], n[0]))
    assert notes == want and bpm == pytest.approx(120.0) and names == ["S", "B"]


def test_wav_length_is_the_piece_plus_its_tail(tmp_path):
    s = piece()  # 3 beats at 120 bpm: 1.5 s
    audio = synthesize(s.sequences[0], s.bpm, tail=0.5)
    assert audio.dtype == np.int16 and len(audio) == int(2.0 * SAMPLE_RATE) + 1
    assert 0 < np.abs(audio.astype(np.int32)).max() <= 0.8 * 32767  # normalised, no clipping
    assert not audio[int(1.6 * SAMPLE_RATE):].any()  # silent after the last release
    write_wav(audio, tmp_path / "p.wav")
    with wave.open(str(tmp_path / "p.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        assert w.getnframes() == len(audio)
    assert len(synthesize([], 90.0)) == int(0.5 * SAMPLE_RATE) + 1  # nothing: the tail alone
