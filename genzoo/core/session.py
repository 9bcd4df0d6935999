"""What train, resume and load_run share, for single models and pipelines alike: the frame of a
training session (torch.distributed, signals), the run folder made on rank 0, the trainer's sample
writer, the held-out loss after training, and ``LoadedRun``, a run rebuilt for sampling.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genzoo.core import config as configlib
from genzoo.core import distributed as dist
from genzoo.core import sample as samplelib
from genzoo.core import signals
from genzoo.core.batching import evaluate_loss
from genzoo.core.commit import has_checkpoint, recover, start_over, verify
from genzoo.core.data_config import DataConfig
from genzoo.core.factory import Plan, versions
from genzoo.core.registry import FamilyEntry
from genzoo.core.run_folder import CONFIG, TRAINER_JSON, Run, RunLock
from genzoo.core.sampler import draw, draw_chunks
from genzoo.core.sources import load as load_data
from genzoo.core.train_config import check_seed
from genzoo.core.trainer import Trainer
from genzoo.errors import CheckpointError, GenzooError



def sample_writer(run: Run, family: FamilyEntry, sampler_name: str | None,
                  options: dict[str, Any], seed: int, data: Any = None) -> Callable[[Any, int, int], None]:
    """A callback for the trainer: writes samples from a fixed generator, so samples over
    training show the same noise and progress is visible. Trainer grids use the sampler's
    ``preview`` options when it has them (e.g. fewer diffusion steps)."""
    def write(model: Any, step: int, n: int) -> None:
        cls = family.sampler_class(sampler_name)
        sampler = cls(**{**getattr(cls, "preview", {}), **options})
        g = torch.Generator().manual_seed(seed)
        out = draw(model, sampler, n, g, family=family.name)
        samplelib.write(out, run.samples_dir / f"step_{step:06d}", reference=data)
    return write


def _config_record(p: Plan, model: Any, overrides: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": p.entry.name, "family": p.entry.family, "source": p.entry.plugin,
        "preset": p.preset, "overrides": {k: str(v) for k, v in (overrides or {}).items()},
        "model": configlib.to_dict(model.config), "train": configlib.to_dict(p.train),
        "data": configlib.to_dict(p.data), "sampler": p.sampler, "sampler_options": {},
        "modality": getattr(model, "modality", "image"),
        "params": model.num_params(), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


@contextlib.contextmanager
def _session(device: str) -> Iterator[None]:
    """What frames a training run: torch.distributed joined and left (when torchrun started
    this process), and SIGTERM raising like Ctrl-C until the training loop takes both signals
    over, so cleanup runs instead of the process vanishing."""
    with signals.terminate_interrupts():
        owned = not dist.active() and dist.init(device)
        try:
            yield
        finally:
            if owned:
                dist.shutdown()


def _fit(run: Run, trainer: Trainer, data_cfg: DataConfig, lock: Any,
         stop_after: int | None) -> Run:
    """Train, evaluate a finished run, and let the run go (its lock) whatever happens."""
    try:
        trainer.fit(stop_after=stop_after)
        if dist.is_main():
            _finish(run, trainer, data_cfg)
    finally:
        if lock is not None:
            lock.release()
    return run


def _create(name: str, out: str | os.PathLike | None) -> Run:
    """A new run folder. An --out whose run stopped before its first checkpoint (killed early:
    a config but no checkpoint, and no live process holding it) is emptied of that run and
    used again, said in one line; a run with a checkpoint is refused (resume it)."""
    path = Path(out) if out is not None else None
    if path is None or not (path / CONFIG).is_file():
        return Run.create(name, out)
    lock = RunLock(path).acquire()  # a live run: "in use by another zoo process", one line
    try:
        recover(path)  # a committed checkpoint rolled forward is a checkpoint
        if has_checkpoint(path):
            lock.release()
            return Run.create(name, out)  # "already holds a run; resume it with --resume"
        start_over(path)
        run = Run.create(name, out)
    except BaseException:
        lock.release()
        raise
    print(f"{path} held a run stopped before its first checkpoint; starting it over there",
          file=sys.stderr)
    run.lock = lock
    return run


def _take(run: Run, folders: list[Path]) -> Any:
    """For a resume: take `run`'s lock on rank 0 and, after a kill, finish or drop the
    half-written checkpoint in each of `folders` (the run itself, or a pipeline's component
    folders); every rank gets rank 0's one-line error. Returns the lock (None off rank 0)."""
    def take() -> Run:
        lock = RunLock(run.path).acquire()
        try:
            for folder in folders:
                recover(folder)
        except BaseException:
            lock.release()
            raise
        run.lock = lock
        return run
    return _on_main(take)[1]


def _on_main(make: Callable[[], Run], fresh: bool = False) -> tuple[Run, Any]:
    """``make()`` on rank 0 (create or open the run, take its lock); its run folder, or its
    one-line error, reaches every rank."""
    run, lock, error = None, None, None
    if dist.is_main():
        try:
            run = make()
            lock = getattr(run, "lock", None)
            if fresh and lock is None:
                try:
                    lock = RunLock(run.path).acquire()
                except BaseException:
                    run.discard()
                    raise
        except GenzooError as e:
            if not dist.active():
                raise
            error = e
    shared = dist.broadcast_object((str(run.path) if run is not None else None,
                                    None if error is None else str(error)))
    if error is not None:
        raise error
    if shared[1] is not None:
        raise CheckpointError(shared[1])
    return (run if run is not None else Run(shared[0])), lock


def _finish(run: Run, trainer: Trainer, data_cfg: DataConfig) -> None:
    if trainer.step < trainer.total:
        return
    model = trainer.sampling_model()
    try:
        test = load_data(data_cfg, "test")
        stats = evaluate_loss(model, test, trainer.device, trainer.cfg.batch_size)
        run.log({"step": trainer.step, "split": "test", **stats})
    except Exception as e:  # evaluation is a bonus; never lose a finished run over it
        run.log({"step": trainer.step, "split": "test", "error": str(e)})
    try:
        from genzoo.core.plots import loss_curve
        loss_curve(run)
    except Exception:
        pass


@dataclass
class LoadedRun:
    run: Run
    config: dict[str, Any]
    model: Any
    family: FamilyEntry
    _data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.path.name))

    def sampler(self, name: str | None = None, **options: Any) -> Any:
        name = name or self.config.get("sampler")
        return self.family.sampler_class(name)(**{**self.config.get("sampler_options", {}), **options})

    def sample(self, n: int = 16, seed: int = 0, sampler: str | None = None,
               inputs: dict[str, Any] | None = None, batch_size: int | None = None,
               **options: Any) -> samplelib.Sample:
        """A typed Sample (``ImageSample.images``, ``TextSample.texts``...). `inputs` are the
        sampler's declared inputs (``prompt``, ``label``, ``show``...); `options` its settings
        (``temperature``...); `batch_size` the most samples drawn at once (default: by
        modality and sampler, ``genzoo.core.sampler.batch_size_for``). The same seed gives the
        same samples."""
        g = torch.Generator().manual_seed(check_seed(seed))
        return draw(self.model, self.sampler(sampler, **options), n, g, inputs,
                    family=self.family.name, batch_size=batch_size)

    def sample_chunks(self, n: int = 16, seed: int = 0, sampler: str | None = None,
                      inputs: dict[str, Any] | None = None, batch_size: int | None = None,
                      **options: Any) -> Iterator[samplelib.Sample]:
        """``sample`` batch by batch (checked before the first is drawn): the same samples for
        a seed, without ever holding more than a batch; ``write_chunks`` writes them."""
        g = torch.Generator().manual_seed(check_seed(seed))
        return draw_chunks(self.model, self.sampler(sampler, **options), n, g, inputs,
                           family=self.family.name, batch_size=batch_size)

    def write_chunks(self, chunks: Iterable[samplelib.Sample], stem: str | os.PathLike,
                     n: int) -> tuple[list[Path], samplelib.Sample]:
        """Write `n` samples arriving in batches: the view of the first (a grid of at most 64
        images...) and, past that, an archive of all (STEM.npy / STEM.jsonl) filled batch by
        batch. Returns the paths and the samples in the view."""
        return samplelib.write_stream(chunks, Path(stem), n, reference=self.reference())

    def data(self, split: str = "train") -> Any:
        if split not in self._data:
            cfg = configlib.build(DataConfig, self.config["data"], what="data")
            cfg.download = False
            self._data[split] = load_data(cfg, split)
        return self._data[split]

    def reference(self) -> Any:
        """The training data to draw samples over, where a writer shows them together (points);
        None when it is not at hand."""
        if getattr(self.model, "modality", "image") != "points":
            return None
        try:
            return self.data("train")
        except Exception:
            return None

    def write(self, sample: samplelib.Sample, stem: str | os.PathLike) -> list[Path]:
        return samplelib.write(sample, Path(stem), reference=self.reference())


def _settle(run: Run) -> None:
    """Before reading a run: finish a checkpoint a killed process left committed but not moved
    in, and check its files agree on one step. A run that a live process is training is read
    as it is (that process completes its own checkpoint)."""
    try:
        lock = RunLock(run.path).acquire()
    except CheckpointError:
        return
    try:
        recover(run.path)
        if (run.path / TRAINER_JSON).exists():
            verify(run.path)
    finally:
        lock.release()

