"""The checkpoint protocol: one checkpoint = one step.

A checkpoint is several files (weights, EMA weights, artifacts, trainer state) that must agree on
one step, so they are written into a staging folder (``.checkpoint.tmp``), committed by one rename
(to ``.checkpoint``) and only then moved into the run: a kill before the commit leaves the previous
checkpoint, a kill after it is rolled forward by the next ``recover``. Every file carries its step
(safetensors metadata ``genzoo_step`` / a JSON ``step``), checked on load by ``verify``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from genzoo.core import faults
from genzoo.core.atomic import DiskFull, fsync, is_disk_full, read_json
from genzoo.core.run_folder import (ARTIFACT_JSON, ARTIFACT_TENSORS, CONFIG, EMA_WEIGHTS, METRICS,
                                    TRAINER_JSON, TRAINER_TENSORS, WEIGHTS)
from genzoo.errors import CheckpointError

STAGING = ".checkpoint.tmp"  # a checkpoint being written (deleted by recover: never committed)
COMMITTED = ".checkpoint"  # a complete checkpoint not yet moved into the run (rolled forward)
STEP_KEY = "genzoo_step"
# the files of one checkpoint; trainer.json moves last, so its step names a complete set
CHECKPOINT_FILES = (WEIGHTS, EMA_WEIGHTS, ARTIFACT_TENSORS, ARTIFACT_JSON, TRAINER_TENSORS,
                    TRAINER_JSON)


def file_step(path: Path) -> int | None:
    """The step a checkpoint file was saved at (None: no stamp, e.g. a file from an older
    genzoo); reads only the safetensors header or the JSON."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            obj = read_json(path)
            value = obj.get("step") if isinstance(obj, dict) else None
        else:
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                value = (f.metadata() or {}).get(STEP_KEY)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint {path} ({e}); re-train, or "
                              "resume from a copy of the run") from None
    if value is None:
        return None
    try:
        step = int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has a damaged step stamp {value!r}") from None
    if step < 0:
        raise CheckpointError(f"{path} has a damaged step stamp {value!r}")
    return step


def commit(folder: Path, step: int, write: Any) -> None:
    """Write a checkpoint as a whole: ``write(staging_folder)`` puts every file there, one rename
    commits the set, then the files move into `folder` (trainer.json last). A failure before
    the commit (a full disk...) removes the staged files, so they hold no space, and leaves the
    previous checkpoint the run's; a full disk is one line (``DiskFull``)."""
    folder = Path(folder)
    staging, done = folder / STAGING, folder / COMMITTED
    shutil.rmtree(staging, ignore_errors=True)
    if done.exists():  # a committed set not yet moved in: finish it first
        _roll_forward(folder)
    try:
        staging.mkdir()
        write(staging)
        faults.fault("save:staged", step)
        for f in staging.iterdir():  # on disk before the commit: a power cut keeps a whole set too
            fsync(f)
        os.replace(staging, done)  # the commit point
    except (Exception, KeyboardInterrupt) as e:  # not the crash tests' simulated kill
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, Exception) and is_disk_full(e):
            raise DiskFull(folder, f"the checkpoint of step {step}", _kept(folder)) from None
        raise
    fsync(folder)
    faults.fault("save:committed", step)
    _roll_forward(folder, step)


def _kept(folder: Path) -> str:
    """What a failed save leaves: the previous checkpoint, and how to go on."""
    try:
        previous = file_step(folder / TRAINER_JSON) if (folder / TRAINER_JSON).exists() else None
    except CheckpointError:
        previous = None
    if previous is None:
        return "; the run has no checkpoint yet: then run the same command again"
    return (f"; the checkpoint of step {previous} is intact: then continue with: zoo train "
            f"--resume {folder}")


def has_checkpoint(folder: Path) -> bool:
    """Whether a run folder holds a checkpoint (moved in, or committed and to be rolled
    forward by ``recover``) or weights (a run from a genzoo that wrote no trainer state)."""
    folder = Path(folder)
    return ((folder / COMMITTED).is_dir()
            or any((folder / n).exists() for n in (TRAINER_JSON, WEIGHTS, EMA_WEIGHTS)))


def start_over(folder: Path) -> None:
    """Empty a run folder that never reached a checkpoint of what its run wrote (config,
    metrics, sample grids, a partial checkpoint), so the run can start again in it; anything
    else there is the user's and stays. Call with the run's lock held."""
    folder = Path(folder)
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    for name in (*CHECKPOINT_FILES, CONFIG, METRICS, "loss.png"):
        (folder / name).unlink(missing_ok=True)
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
    samples = folder / "samples"
    if samples.is_dir():
        for p in samples.glob("step_*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _roll_forward(folder: Path, step: int | None = None) -> None:
    done = folder / COMMITTED
    names = sorted((p.name for p in done.iterdir() if not p.name.endswith(".tmp")),
                   key=lambda n: (n == TRAINER_JSON, n))
    for i, name in enumerate(names):
        os.replace(done / name, folder / name)
        if i == 0:
            faults.fault("save:moving", step)
    shutil.rmtree(done, ignore_errors=True)
    fsync(folder)
    faults.fault("save:done", step)


def recover(folder: Path) -> None:
    """After a kill: roll a committed checkpoint forward, drop an uncommitted one and the
    temporary files of interrupted writes. Call with the run's lock held."""
    folder = Path(folder)
    if (folder / COMMITTED).is_dir():
        _roll_forward(folder)
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def verify(folder: Path) -> int:
    """The step of the run's checkpoint, after checking every file of it holds that step."""
    folder = Path(folder)
    state = read_json(folder / TRAINER_JSON)
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{folder / TRAINER_JSON} is damaged: step {step!r} is not a "
                              "step count")
    for name in CHECKPOINT_FILES[:-1]:
        path = folder / name
        if path.exists():
            other = file_step(path)
            if other is not None and other != step:
                raise CheckpointError(
                    f"inconsistent checkpoint in {folder}: {TRAINER_JSON} says step {step} but "
                    f"{name} holds step {other} (edited, or files mixed from different "
                    "checkpoints); restore the run from a copy or re-train")
    return step


def stamp(step: int) -> dict[str, str]:
    return {STEP_KEY: str(step)}
