"""Music as a modality (Foster ch. 11): what the music transformer and MuseGAN share.

- ``genzoo.nn.music.notation``: note names, durations, the prompt syntax, ``MusicSample`` and
  notes from token streams or a 16th-note grid;
- ``genzoo.nn.music.render``: MIDI, WAV (a small additive synth) and piano roll PNGs, and
  ``write_music``, the writer of the ``music`` sample kind;
- ``genzoo.nn.music.parse``: scores (MIDI, MusicXML ...) into the book's two token streams,
  with music21.

The public names of all three are here too: ``from genzoo.nn.music import MusicSample, name_of``.
"""
from __future__ import annotations

from genzoo.nn.music.notation import (REST, START, ZERO, MusicSample, beats_of, duration_token,
                                      midi_of, name_of, notes_from_grid, notes_from_tokens,
                                      parse_prompt)
from genzoo.nn.music.parse import (SCORE_SUFFIXES, TOKENS_VERSION, parse_file, require_music21,
                                   score_tokens)
from genzoo.nn.music.render import (MAX_RENDERED, SAMPLE_RATE, TRACK_COLOURS, draw_roll,
                                    synthesize, write_midi, write_music, write_wav)

__all__ = [
    # notation
    "START", "REST", "ZERO", "midi_of", "name_of", "duration_token", "beats_of", "parse_prompt",
    "MusicSample", "notes_from_tokens", "notes_from_grid",
    # rendering
    "TRACK_COLOURS", "MAX_RENDERED", "SAMPLE_RATE", "write_midi", "synthesize", "write_wav",
    "draw_roll", "write_music",
    # parsing
    "TOKENS_VERSION", "SCORE_SUFFIXES", "require_music21", "score_tokens", "parse_file",
]
