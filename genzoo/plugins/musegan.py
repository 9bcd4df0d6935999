"""MuseGAN (Dong et al. 2018; Foster ch. 11): a WGAN-GP that writes four-voice chorale bars.

A sample is a piano roll of 4 tracks (soprano, alto, tenor, bass) x 2 bars x 16 sixteenth-note
steps x 84 pitches, values in [-1, 1]. The generator takes four kinds of noise, as the book does:
- chords (one vector): shared by every track, changes bar by bar through a *temporal network*;
- style (one vector): shared by every track and every bar;
- melody (one vector per track): per track, changes bar by bar through its own temporal network;
- groove (one vector per track): per track, the same in every bar.
For each bar and track the four vectors are concatenated and a *bar generator* (one per track:
dense, then transposed convolutions that grow the time axis and then the pitch axis) draws that
bar. The critic (3-d convolutions over bars, steps and pitches, tracks as channels) is trained
with the Wasserstein loss and gradient penalty of genzoo.nn.gan (5 critic steps, lambda 10).

A generated roll becomes notes by an argmax over pitches at every step of every track (the book's
binarisation); a pitch repeated over steps is one held note.

Note lengths (issue 23): the book's bar generator grows time with transposed convolutions whose
kernel equals their stride, so every 16th has weights of its own, and its tanh output lets a voice
sit between two pitches whose argmax flips step by step: 11-15 notes per voice per bar where the
chorales have 3.75. Options, all off by default (the book's layers): ``time_upsample`` resize /
resize8 (nearest upsampling + a 3-step convolution; resize8 writes 8ths), ``position_bias`` (a
learned bias per step, so the resized layers know a step's place in the bar) and ``output:
softmax`` (one distribution over pitches per voice and step, as the data's one-hot rolls),
``dense_steps`` (the bar generator's dense layer writes the 4 beats, not 2 half notes) and
``critic_onsets`` (the critic also reads where each voice changes pitch).

Pitch range (``pitch_range: data``, the default): the network keeps the book's 84 pitches, but
each voice may only sound the pitches its training data spans (soprano 60-81, alto 52-74, tenor
46-69, bass 36-66 on the JSB chorales). The ranges are measured in ``setup`` and saved as the
run's ``pitch_range`` artifact; the generator's output is -1 (silent) outside them, so neither
the critic nor the argmax ever sees an impossible note. Runs saved without the artifact keep all
84 pitches (``pitch_range: full`` does the same for a new run).

``evaluate_extra`` (``zoo eval``) samples ``eval_n`` pieces and reports, against the split: the
fraction of notes inside each voice's range, the mean pairwise distance between pieces over that
of real pieces (mode collapse reads near 0), and the note-length and per-voice pitch histograms
with their total-variation distance to the data's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError, DataError
from genzoo.family import Model, Sampler, gaussian
from genzoo.nn.gan import gradient_penalty, init_weights
from genzoo.nn.music import MusicSample, name_of, notes_from_grid
from genzoo.nn.utils import eval_mode, frozen

LATENTS = ("chords", "style", "melody", "groove")


@dataclass
class MuseGANConfig:
    tracks: int = 4  # book: N_TRACKS (SATB)
    bars: int = 2  # book: N_BARS
    steps: int = 16  # book: N_STEPS_PER_BAR (16th notes)
    pitches: int = 84  # book: MIDI 0..83
    z_dim: int = 32  # book: Z_DIM, per latent vector
    temporal_width: int = 1024  # book: the temporal network's hidden filters
    bar_width: int = 256  # book: bar generator Dense(1024) -> 512, 256, 256, 256 filters
    critic_width: int = 128  # book: critic 128 filters ... 256, 512, Dense(1024)
    critic_steps: int = 5  # book: CRITIC_STEPS
    gp_weight: float = 10.0  # book: GP_WEIGHT
    pitch_range: Literal["data", "full"] = "data"  # data: each voice only its training range
    minibatch_std: bool = False  # the critic also reads the batch's spread (ProGAN, against collapse)
    # > 0: the critic also reads, per voice and 16th, whether the voice changed pitch there (the
    # "onset/offset stream" of MuseGAN's own code, made for monophonic voices: 1 - the overlap of
    # two neighbouring steps' pitch distributions), through a small convolution over the 32 steps
    # with this many features. The book's critic folds the 84 pitches into a few features per
    # step before it looks along time, so where a held note ends is blurred before the critic can
    # weigh rhythm. A narrow stream (4 features against the main stream's 4 * critic_width) keeps
    # the critic's attention on pitch as well: as wide as critic_width, voices kept to a few
    # pitches (music.md; the quick preset has 4). 0: none (the book).
    critic_onsets: int = 0
    # how the bar generator doubles its time axis: "transpose" (the book: transposed convolutions,
    # kernel = stride, so neighbouring 16ths get independent weights); "tied" (the same layers,
    # their two time taps initialised equal: at init each step is copied to its two halves, as
    # nearest upsampling would, and training may pull them apart; the same weights' shapes as
    # "transpose"); "resize" (nearest upsampling, then a convolution 3 steps wide: each 16th a
    # blend of its neighbours; other weights' shapes, so such a run loads only as "resize");
    # "resize8" (as resize for 2 -> 4 -> 8 steps, then each 8th copied to its two 16ths and a
    # 1 x 1 convolution: the generator writes 8th notes, no note starts off the 8th grid, the
    # chorales' 16ths, 2% of their notes, out of its reach; with position_bias the last
    # doubling's bias per 16th is the one thing that can still set a 16th apart).
    # Runs saved before the option have no key: "transpose".
    time_upsample: Literal["transpose", "tied", "resize", "resize8"] = "transpose"
    # resize / resize8 only: a learned bias per step (and channel) after each time doubling,
    # zero at init. Nearest upsampling + convolution tell a bar's steps apart only by what the
    # dense layer wrote into its two halves (the transposed convolutions know each step's place
    # by its own weights); this gives the bar generator back where in the bar a step is.
    position_bias: bool = False
    # the generator's last activation: "tanh" (the book: every pitch of every step on its own in
    # [-1, 1]) or "softmax" (each voice is monophonic: a softmax over its pitches, as 2 p - 1, so
    # a step sounds one pitch as the data's one-hot rolls do, and a voice hesitating between two
    # pitches shows the critic two half-lit cells instead of two near-equal ones that the argmax
    # flips between; WGAN-GP's character-level language model, Gulrajani et al. 2017, does the
    # same). No weights of its own: the same state dict.
    output: Literal["tanh", "softmax"] = "tanh"
    # the time steps per bar the bar generator's dense layer writes (the book: 2, half notes;
    # then three doublings to 16ths). 4 writes a bar's four beats directly, each its own part of
    # the dense layer, and drops the first doubling: with nearest upsampling, two beats of one
    # half-bar could otherwise differ only through their neighbours (a conv 3 steps wide) and a
    # position bias that is the same for every piece, so notes came out too long. 8 writes 8ths.
    dense_steps: Literal[2, 4, 8] = 2
    eval_n: int = 256  # pieces zoo eval draws for the diversity and histogram figures

    def __post_init__(self) -> None:
        for key in ("tracks", "z_dim", "temporal_width", "bar_width", "critic_width",
                    "critic_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if isinstance(self.critic_onsets, bool) or not 0 <= self.critic_onsets <= 1024:
            raise ValueError("critic_onsets must be 0 (none) .. 1024 features, got "
                             f"{self.critic_onsets!r}")
        if self.bars != 2 or self.steps != 16 or self.pitches != 84:
            raise ValueError("the book's MuseGAN layers are sized for 2 bars x 16 steps x 84 "
                             f"pitches; got {self.bars} x {self.steps} x {self.pitches}")
        if self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight}")
        if self.pitch_range not in ("data", "full"):
            raise ValueError(f"pitch_range must be data or full, got {self.pitch_range!r}")
        if self.time_upsample not in ("transpose", "tied", "resize", "resize8"):
            raise ValueError("time_upsample must be transpose, tied, resize or resize8, got "
                             f"{self.time_upsample!r}")
        if self.position_bias and self.time_upsample not in ("resize", "resize8"):
            raise ValueError("position_bias needs time_upsample resize or resize8 (transposed "
                             "convolutions already have a weight per step)")
        if self.dense_steps not in (2, 4, 8):
            raise ValueError(f"dense_steps must be 2, 4 or 8, got {self.dense_steps}")
        if self.output not in ("tanh", "softmax"):
            raise ValueError(f"output must be tanh or softmax, got {self.output!r}")
        if self.eval_n < 2:
            raise ValueError(f"eval_n must be >= 2, got {self.eval_n}")


class TemporalNetwork(nn.Module):
    """One z -> one z per bar (the book's two transposed convolutions over the bar axis)."""

    def __init__(self, z_dim: int, width: int, bars: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, width, (2, 1)), nn.BatchNorm2d(width, momentum=0.1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, z_dim, (bars - 1, 1)), nn.BatchNorm2d(z_dim, momentum=0.1),
            nn.ReLU())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])[..., 0].transpose(1, 2)  # (B, bars, z)


class ResizeConv(nn.Module):
    """Double the time axis of (B, C, steps, pitches) by nearest upsampling, then a convolution
    3 steps wide: each 16th is a blend of its neighbours, not a weight of its own. Padded by
    repeating the edge step (zero padding made the first and last 16th of every bar differ from
    the rest: a short note at each bar line)."""

    def __init__(self, c_in: int, c_out: int, width: int = 3, steps: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, (width, 1), padding=(width // 2, 0),
                              padding_mode="replicate")
        # with `steps` (the output's): a learned bias per output step and channel, zero at init
        self.position = nn.Parameter(torch.zeros(c_out, steps, 1)) if steps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.interpolate(x, scale_factor=(2, 1), mode="nearest"))
        return y if self.position is None else y + self.position.to(y.dtype)


@torch.no_grad()
def tie_time_taps(module: nn.Module) -> None:
    """Every transposed convolution that doubles time (kernel = stride = (2, 1)) gets its second
    time tap set to its first: both 16ths (8ths, beats) it writes start as one copied value."""
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d) and tuple(m.kernel_size) == (2, 1) and \
                tuple(m.stride) == (2, 1):
            m.weight[:, :, 1] = m.weight[:, :, 0]


class BarGenerator(nn.Module):
    """[chords, style, melody, groove] of one bar and track -> (B, steps, pitches) in [-1, 1]:
    a dense layer to ``dense_steps`` steps (the book's 2), doublings of time to 16 steps
    (transposed convolutions, or with ``time_upsample="resize"`` nearest upsampling +
    convolution), then pitch x 7 and x 12 (an octave of semitones) to 84 pitches."""

    def __init__(self, z_dim: int, w: int, time_upsample: str = "transpose",
                 output: str = "tanh", position_bias: bool = False, dense_steps: int = 2):
        super().__init__()
        steps = [dense_steps]

        def up(c_in: int, c_out: int, k: tuple[int, int], last: bool = False) -> list[nn.Module]:
            if k == (2, 1) and time_upsample in ("resize", "resize8"):
                steps.append(steps[-1] * 2)
                width = 1 if last and time_upsample == "resize8" else 3
                layer: nn.Module = ResizeConv(c_in, c_out, width,
                                              steps[-1] if position_bias else None)
            else:
                layer = nn.ConvTranspose2d(c_in, c_out, k, stride=k)
            return [layer, nn.BatchNorm2d(c_out, momentum=0.1), nn.ReLU()]
        self.dense_steps = dense_steps
        # the dense layer writes `dense_steps` steps (2: half notes, the book's; 4: beats; 8:
        # 8ths), then the doublings that are left: 2 -> 4 (2w channels), 4 -> 8 (to w), 8 -> 16
        self.dense_channels = w if dense_steps == 8 else 2 * w
        d = dense_steps * self.dense_channels
        self.dense = nn.Sequential(nn.Linear(4 * z_dim, d), nn.BatchNorm1d(d, momentum=0.1),
                                   nn.ReLU())
        doublings: list[nn.Module] = []
        if dense_steps == 2:
            doublings += up(2 * w, 2 * w, (2, 1))
        if dense_steps <= 4:
            doublings += up(2 * w, w, (2, 1))
        self.net = nn.Sequential(*doublings,
                                 *up(w, w, (2, 1), last=True),
                                 *up(w, w, (1, 7)), nn.ConvTranspose2d(w, 1, (1, 12), stride=(1, 12)),
                                 nn.Tanh() if output == "tanh" else nn.Identity())  # softmax:
        # the logits; MuseGAN.forward takes the softmax over each voice's range

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, self.dense_channels, self.dense_steps, 1)  # channels, steps, pitches
        return self.net(x)[:, 0]


class Generator(nn.Module):
    def __init__(self, c: MuseGANConfig):
        super().__init__()
        self.c = c
        self.chords_net = TemporalNetwork(c.z_dim, c.temporal_width, c.bars)
        self.melody_nets = nn.ModuleList(TemporalNetwork(c.z_dim, c.temporal_width, c.bars)
                                         for _ in range(c.tracks))
        self.bar_generators = nn.ModuleList(BarGenerator(c.z_dim, c.bar_width, c.time_upsample,
                                                         c.output, c.position_bias, c.dense_steps)
                                            for _ in range(c.tracks))

    def forward(self, chords: torch.Tensor, style: torch.Tensor, melody: torch.Tensor,
                groove: torch.Tensor) -> torch.Tensor:
        """chords, style (B, z); melody, groove (B, tracks, z) -> (B, tracks, bars, steps, pitches)."""
        c = self.c
        chords_t = self.chords_net(chords)  # (B, bars, z)
        melody_t = [net(melody[:, k]) for k, net in enumerate(self.melody_nets)]
        tracks = []
        for k, bar_gen in enumerate(self.bar_generators):
            # every bar of a track in one batch: (B * bars, 4z)
            z = torch.cat([chords_t, style[:, None].expand(-1, c.bars, -1), melody_t[k],
                           groove[:, k, None].expand(-1, c.bars, -1)], dim=-1)
            tracks.append(bar_gen(z.flatten(0, 1)).view(-1, c.bars, c.steps, c.pitches))
        return torch.stack(tracks, dim=1)


class Critic(nn.Module):
    """3-d convolutions, tracks as channels: over bars, then pitches (octave, then the 7
    octaves), then time; a dense layer to one score. No batch norm (the gradient penalty is
    per example)."""

    def __init__(self, c: MuseGANConfig):
        super().__init__()
        w = c.critic_width

        def conv(c_in: int, c_out: int, k: tuple[int, int, int], s: tuple[int, int, int],
                 p: tuple[int, int, int] = (0, 0, 0)) -> list[nn.Module]:
            return [nn.Conv3d(c_in, c_out, k, stride=s, padding=p), nn.LeakyReLU(0.3)]
        self.net = nn.Sequential(
            *conv(c.tracks, w, (2, 1, 1), (1, 1, 1)),  # the 2 bars -> 1
            *conv(w, w, (c.bars - 1, 1, 1), (1, 1, 1)),
            *conv(w, w, (1, 1, 12), (1, 1, 12)),  # 84 pitches -> 7 octaves
            *conv(w, w, (1, 1, 7), (1, 1, 7)),  # -> 1
            *conv(w, w, (1, 2, 1), (1, 2, 1)),  # 16 steps -> 8
            *conv(w, w, (1, 2, 1), (1, 2, 1)),  # -> 4
            *conv(w, 2 * w, (1, 4, 1), (1, 2, 1), (0, 1, 0)),  # -> 2
            *conv(2 * w, 4 * w, (1, 3, 1), (1, 2, 1), (0, 1, 0)),  # -> 1
            nn.Flatten(),
            nn.Linear(4 * w + c.critic_onsets + int(c.minibatch_std), 8 * w),
            nn.LeakyReLU(0.3), nn.Linear(8 * w, 1))
        self.minibatch_std = c.minibatch_std
        # critic_onsets: (tracks, 32 steps) of changes -> o features (32 -> 16 -> 8 -> 4 -> 2 -> 1)
        o = c.critic_onsets
        self.onsets = nn.Sequential(
            nn.Conv1d(c.tracks, o, 4, 2, 1), nn.LeakyReLU(0.3),
            *[m for _ in range(3) for m in (nn.Conv1d(o, o, 4, 2, 1), nn.LeakyReLU(0.3))],
            nn.Conv1d(o, o, 2), nn.LeakyReLU(0.3), nn.Flatten()) if o else None

    @staticmethod
    def changes(x: torch.Tensor) -> torch.Tensor:
        """(B, tracks, bars, steps, pitches) in [-1, 1] -> (B, tracks, bars * steps): 1 - the
        overlap of each step's pitches with the step before (0 at the first step). A held note
        reads 0, a new pitch 1, as do the real rolls' one-hot steps; softmax output lies between."""
        p = ((x + 1) / 2).flatten(2, 3)  # (B, tracks, bars * steps, pitches)
        change = 1 - (p[:, :, 1:] * p[:, :, :-1]).sum(-1)
        return F.pad(change, (1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.minibatch_std and self.onsets is None:
            return self.net(x).flatten()
        features = [self.net[:-3](x)]  # before the dense layers (the same keys as without)
        if self.onsets is not None:
            features.append(self.onsets(self.changes(x)))
        if self.minibatch_std:
            # one more feature: how much the batch's features vary (ProGAN's minibatch std)
            h = features[0]
            spread = h.float().std(0, unbiased=False).mean().to(h.dtype) if len(h) > 1 else \
                h.new_zeros(())
            features.append(spread.expand(len(h), 1))
        return self.net[-3:](torch.cat(features, dim=1)).flatten()


class MuseGAN(Model):
    Config = MuseGANConfig
    modality = "events"
    likelihood_unit = None  # a GAN: no likelihood

    def __init__(self, config: MuseGANConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.critic = Critic(config)
        # the book's RandomNormal(0, 0.02) kernels; batch norm keeps Keras's defaults (1, 0)
        init_weights(self, batchnorm=False)
        if config.time_upsample == "tied":
            tie_time_taps(self.generator)
        self.track_names = ["S", "A", "T", "B"][: config.tracks] + \
            [f"track {k}" for k in range(4, config.tracks)]
        # (tracks, pitches) True where a voice may sound; every pitch until setup/load says
        # otherwise. Not in the state dict: old runs' weights load unchanged.
        self.register_buffer("pitch_mask", torch.ones(config.tracks, config.pitches,
                                                      dtype=torch.bool), persistent=False)
        self.pitch_range: list[list[int]] | None = None

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        shape = getattr(data, "shape", None)
        if not shape or not hasattr(data, "bars"):
            return {}
        return {"tracks": int(shape[-1]), "bars": int(data.bars), "steps": int(data.steps)}

    def setup(self, data: Any) -> None:
        if list(getattr(data, "tracks", [])):
            self.track_names = list(data.tracks)
        x = getattr(data, "x", None)
        if self.config.pitch_range == "data" and x is not None and len(x):
            self.set_pitch_range(voice_ranges(x))

    def set_pitch_range(self, ranges: list[list[int]] | None) -> None:
        """[[low, high], ...] per track (inclusive MIDI pitches), or None for all pitches."""
        c = self.config
        mask = torch.ones(c.tracks, c.pitches, dtype=torch.bool)
        if ranges is not None:
            if len(ranges) != c.tracks:
                raise ValueError(f"pitch_range has {len(ranges)} voices, the model {c.tracks}")
            ranges = [[int(lo), int(hi)] for lo, hi in ranges]
            for k, (lo, hi) in enumerate(ranges):
                if not 0 <= lo <= hi < c.pitches:
                    raise ValueError(f"pitch_range {lo}-{hi} is outside 0-{c.pitches - 1}")
                mask[k] = False
                mask[k, lo: hi + 1] = True
        self.pitch_range = ranges
        self.pitch_mask = mask.to(self.pitch_mask.device)

    def artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tracks": self.track_names}
        if self.pitch_range is not None:
            out["pitch_range"] = self.pitch_range
        return out

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        self.track_names = list(artifacts.get("tracks", self.track_names))
        self.set_pitch_range(artifacts.get("pitch_range"))  # absent in runs before issue 23

    # -- data <-> rolls --------------------------------------------------------------------------
    def roll(self, pitches: torch.Tensor) -> torch.Tensor:
        """(B, bars * steps, tracks) MIDI pitches (-1 = rest) -> (B, tracks, bars, steps,
        pitches) in {-1, 1}, as the book one-hots them (a rest is all -1)."""
        c = self.config
        p = pitches.long()
        if int(p.max()) >= c.pitches:
            raise DataError(f"pitch {int(p.max())} is above the model's {c.pitches} pitches")
        hot = F.one_hot(p.clamp_min(0), c.pitches).float() * (p >= 0)[..., None]
        hot = hot.view(p.shape[0], c.bars, c.steps, c.tracks, c.pitches).permute(0, 3, 1, 2, 4)
        return hot * 2 - 1

    def binarise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, tracks, bars, steps, pitches) -> (B, bars * steps, tracks) MIDI pitches: the
        argmax over pitches at each step of each track (the book's binarisation), over the
        pitches each voice may sound."""
        B, K, nb, S, _ = x.shape
        allowed = self.pitch_mask.to(x.device)[None, :, None, None, :]
        x = x.float().masked_fill(~allowed, float("-inf"))
        return x.argmax(-1).permute(0, 2, 3, 1).reshape(B, nb * S, K)

    def latents(self, n: int, generator: torch.Generator | None = None,
                device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """The four latents of n pieces, N(0, I), on the model's device: from `generator` (on
        its own device, so a seed means the same pieces everywhere), else from the global RNG on
        `device` (training: checkpointed, so a resumed run draws the same noise)."""
        c = self.config
        shapes = {"chords": (n, c.z_dim), "style": (n, c.z_dim),
                  "melody": (n, c.tracks, c.z_dim), "groove": (n, c.tracks, c.z_dim)}
        if generator is not None:
            return {k: gaussian(generator, s, self.device) for k, s in shapes.items()}
        return {k: torch.randn(s, device=device).to(self.device) for k, s in shapes.items()}

    def forward(self, chords: torch.Tensor, style: torch.Tensor, melody: torch.Tensor,
                groove: torch.Tensor) -> torch.Tensor:
        x = self.generator(chords, style, melody, groove)
        outside = ~self.pitch_mask[None, :, None, None, :]
        if self.config.output == "softmax":  # logits -> one pitch per step, as 2 p - 1
            logits = x.float()
            if self.pitch_range is not None:
                logits = logits.masked_fill(outside, float("-inf"))
            return (2 * torch.softmax(logits, dim=-1) - 1).to(x.dtype)
        if self.pitch_range is None:
            return x
        return x.masked_fill(outside, -1.0)  # silent outside

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate_grid(self, n: int, seed: int = 0, batch: int = 256) -> torch.Tensor:
        """(n, bars * steps, tracks) MIDI pitches of n prior samples (the default sampler's)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        with eval_mode(self):
            for i in range(0, n, batch):
                out.append(self.binarise(self(**self.latents(min(batch, n - i), g))).cpu())
        return torch.cat(out)

    def evaluate_extra(self, data: Any, out_dir: Any = None) -> dict[str, Any]:
        """In-range notes per voice, diversity against real pieces, note-length and pitch
        histograms against the split (see the module docstring)."""
        real = getattr(data, "x", None)
        if real is None or not len(real):
            return {}
        ranges = self.pitch_range or voice_ranges(real)
        fake = self.generate_grid(self.config.eval_n)
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(real), generator=g)[: self.config.eval_n]
        return grid_figures(fake, real.long(), real.long()[pick], ranges, self.track_names)

    # -- training ------------------------------------------------------------------------------
    def configure_optimizers(self, train: Any) -> dict[str, torch.optim.Optimizer]:
        def adam(module: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.Adam(module.parameters(), lr=train.lr, betas=tuple(train.betas))
        return {"critic": adam(self.critic), "generator": adam(self.generator)}

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        wasserstein = self.critic(real).float().mean() - self.critic(fake).float().mean()
        gp = gradient_penalty(self.critic, real, fake) if torch.is_grad_enabled() else \
            torch.zeros((), device=real.device)
        return -wasserstein + self.config.gp_weight * gp, wasserstein, gp

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        real = self.roll(batch["x"])
        n = real.shape[0]
        for _ in range(self.config.critic_steps):
            with ctx.autocast():
                with torch.no_grad():
                    # the global RNG: checkpointed, so a resumed run draws the same noise
                    fake = self(**self.latents(n, device=real.device))
                c_loss, wasserstein, gp = self.critic_loss(real, fake)
            ctx.optimize(c_loss, optimizers["critic"], "critic")
        with frozen(self.critic), ctx.autocast():
            g_loss = -self.critic(self(**self.latents(n, device=real.device))).float().mean()
        ctx.optimize(g_loss, optimizers["generator"], "generator")
        c_loss, g_loss = c_loss.detach(), g_loss.detach()
        return {"loss": c_loss + g_loss, "c_loss": c_loss, "g_loss": g_loss,
                "wasserstein": wasserstein.detach(), "gp": gp.detach()}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both players' losses, no update (held-out monitoring); the penalty is 0 under no_grad."""
        real = self.roll(batch["x"])
        fake = self(**self.latents(real.shape[0], device=real.device))
        c_loss, wasserstein, gp = self.critic_loss(real, fake)
        g_loss = -self.critic(fake).float().mean()
        return {"loss": c_loss + g_loss, "c_loss": c_loss, "g_loss": g_loss,
                "wasserstein": wasserstein, "gp": gp}


# -- sampling ------------------------------------------------------------------------------------

@dataclass
class MuseGANOptions:
    temperature: float = 1.0  # scales every latent: < 1 trades variety for typical bars
    vary: Literal["all", "chords", "style", "melody", "groove"] = "all"  # the rest shared
    bpm: float = 80.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.vary not in ("all",) + LATENTS:
            raise ValueError(f"vary must be one of all, {', '.join(LATENTS)}; got {self.vary!r}")
        if not self.bpm > 0:
            raise ValueError(f"bpm must be > 0, got {self.bpm}")


class PriorSampler(Sampler):
    """All four latents from N(0, I) through the generator, then argmax over pitches. With
    ``vary=style`` (or chords, melody, groove) every sample shares the other latents and only
    that one changes: the book's demonstration of what each latent controls."""

    name = "prior"
    Options = MuseGANOptions

    @torch.no_grad()
    def sample(self, model: MuseGAN, n: int, generator: torch.Generator, **_: Any) -> MusicSample:
        o = self.options
        z = model.latents(n, generator)
        if o.vary != "all":
            z = {k: (v if k == o.vary else v[:1].expand_as(v)) for k, v in z.items()}
        z = {k: v * o.temperature for k, v in z.items()}
        with eval_mode(model):
            x = model(**z)
        grid = model.binarise(x).cpu().numpy()
        pieces = [notes_from_grid(g) for g in grid]
        c = model.config
        texts = [" | ".join(" ".join(name_of(int(p)) for p in g[:, k]) for k in range(c.tracks))
                 for g in grid[:, :: c.steps // 4]]  # every beat of every voice
        out = MusicSample(pieces, tracks=model.track_names, bpm=o.bpm, beats_per_bar=c.steps / 4,
                          tokens=texts)
        out.extras["summary"] = out.summary()
        return out


def voice_ranges(x: torch.Tensor) -> list[list[int]]:
    """(N, steps, tracks) MIDI pitches (-1 = rest) -> [[lowest, highest], ...] per track."""
    x = x.long()
    out = []
    for k in range(x.shape[-1]):
        v = x[..., k]
        v = v[v >= 0]
        out.append([int(v.min()), int(v.max())] if len(v) else [0, 0])
    return out


def note_runs(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, steps, tracks) pitches -> (pitch, length in steps, track) of every note: a pitch
    repeated over consecutive steps is one note (as ``notes_from_grid``); rests dropped."""
    N, T, K = grid.shape
    seq = grid.permute(0, 2, 1).reshape(N * K, T)
    start = torch.ones_like(seq, dtype=torch.bool)
    start[:, 1:] = seq[:, 1:] != seq[:, :-1]
    idx = start.flatten().nonzero().flatten()  # note starts in the flattened (row, step) order
    ends = torch.cat([idx[1:], torch.tensor([seq.numel()])])
    row_end = (idx // T + 1) * T  # a note never runs past its row
    length = torch.minimum(ends, row_end) - idx
    pitch = seq.flatten()[idx]
    track = (idx // T) % K
    keep = pitch >= 0
    return pitch[keep], length[keep], track[keep]


def _hist(values: torch.Tensor, size: int) -> torch.Tensor:
    h = torch.bincount(values.long().clamp(0, size - 1), minlength=size).double()
    return h / h.sum().clamp_min(1)


def mean_pairwise_distance(grid: torch.Tensor) -> float:
    """Mean over pairs of pieces of the fraction of (step, voice) cells whose pitch differs."""
    flat = grid.flatten(1)
    n = len(flat)
    if n < 2:
        return 0.0
    diff = (flat[:, None] != flat[None]).float().mean(-1)
    return float(diff.sum() / (n * (n - 1)))


def grid_figures(fake: torch.Tensor, real: torch.Tensor, real_pairs: torch.Tensor,
                 ranges: list[list[int]], tracks: list[str]) -> dict[str, Any]:
    """Generated (fake) against real (N, steps, tracks) pitch grids: see the module docstring.
    `real_pairs` is the subset of real pieces the pairwise distance is measured on (as many as
    fake, so both averages cover the same number of pairs)."""
    T = fake.shape[1]
    fp, fl, ft = note_runs(fake)
    rp, rl, rt = note_runs(real)
    out: dict[str, Any] = {"pieces": len(fake)}
    in_range = {}
    pitch_tv = {}
    for k, (lo, hi) in enumerate(ranges):
        name = tracks[k] if k < len(tracks) else str(k)
        p = fp[ft == k]
        in_range[name] = round(float(((p >= lo) & (p <= hi)).float().mean()) if len(p) else 1.0, 4)
        pitch_tv[name] = round(0.5 * float((_hist(p, 128) - _hist(rp[rt == k], 128)).abs().sum()), 4)
    out["in_range_fraction"] = in_range
    out["in_range_fraction_min"] = min(in_range.values())
    out["pitch_hist_tv"] = pitch_tv
    d_fake, d_real = mean_pairwise_distance(fake), mean_pairwise_distance(real_pairs)
    out["pairwise_distance"] = round(d_fake, 4)
    out["pairwise_distance_real"] = round(d_real, 4)
    out["pairwise_distance_ratio"] = round(d_fake / d_real, 4) if d_real else None
    hf, hr = _hist(fl, T + 1), _hist(rl, T + 1)
    out["note_length_hist_tv"] = round(0.5 * float((hf - hr).abs().sum()), 4)
    out["note_length_hist"] = {"steps": list(range(1, T + 1)),
                               "generated": [round(float(v), 4) for v in hf[1:]],
                               "data": [round(float(v), 4) for v in hr[1:]]}
    out["notes_per_voice_per_bar"] = round(len(fl) / max(1, fake.shape[0] * fake.shape[2]) / (T / 16), 3)
    out["notes_per_voice_per_bar_data"] = round(len(rl) / max(1, real.shape[0] * real.shape[2]) / (T / 16), 3)
    return out


def track_changes(model: MuseGAN, latent: str, n: int = 64, track: int = 0,
                  seed: int = 0) -> torch.Tensor:
    """How much each track's output moves when only `latent` is redrawn (for `melody` and
    `groove`, only that of `track`): mean |change| of the tanh roll per track, (tracks,)."""
    if latent not in LATENTS:
        raise ConfigError(f"unknown latent {latent!r}; valid: {', '.join(LATENTS)}")
    g = torch.Generator().manual_seed(seed)
    z = model.latents(n, g)
    z2 = dict(z)
    new = model.latents(n, g)[latent]
    if latent in ("melody", "groove"):
        new = z[latent].clone()
        new[:, track] = model.latents(n, g)[latent][:, track]
    z2[latent] = new
    with torch.no_grad(), eval_mode(model):
        a, b = model(**z), model(**z2)
    return (a - b).abs().mean(dim=(0, 2, 3, 4))
