"""Batches of a dataset: the trainer's deterministic order (``StepBatches``: step s's batch is a
pure function of the seed and s), every example once in order (``batches``, for evaluation), a
host batch made ready for the model (``batch_to_device``), and a model's mean held-out figures
over a split (``evaluate_loss``)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from genzoo.errors import DataError


def batch_to_device(data: Any, batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A host batch made ready for the model: the dataset's own ``to_device`` (uint8 images ->
    floats on the device), or plain moves for a duck-typed dataset without one."""
    if hasattr(data, "to_device"):
        return data.to_device(batch, device)
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def batches(data: Any, batch_size: int, device: Any) -> Iterator[dict[str, Any]]:
    """Every example once, in order, converted for the model on `device`."""
    import torch
    idx = torch.arange(len(data))
    for start in range(0, len(data), batch_size):
        batch = data.batch(idx[start:start + batch_size])
        yield batch_to_device(data, batch, device)


class StepBatches:
    """Batch for global step `s` is a pure function of (seed, s): resuming at step k replays
    exactly the order an uninterrupted run would have seen, with no loader state to save.
    With ``world`` > 1 (distributed training) rank `rank` gets its contiguous share of the same
    global batch, so the ranks together see exactly what one process would."""

    def __init__(self, data: Any, batch_size: int, seed: int,
                 drop_last: bool = True, rank: int = 0, world: int = 1):
        n = len(data)
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if batch_size > n:
            raise DataError(f"batch_size {batch_size} is larger than the {n} training examples; "
                            f"use --batch-size {n} or less (or more data)")
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} does not split evenly over {world} "
                            f"processes; use a multiple of {world}")
        self.data, self.seed = data, seed
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)
        self._epoch, self._perm = -1, None

    def index(self, step: int) -> Any:
        """The example indices of step `step` (this rank's share of them)."""
        import torch
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._epoch = torch.randperm(len(self.data), generator=g), epoch
        rows = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        if self.world > 1:
            share = self.batch_size // self.world
            rows = rows[self.rank * share:(self.rank + 1) * share]
        return rows

    def __call__(self, step: int) -> dict[str, Any]:
        return self.data.batch(self.index(step))


def evaluate_loss(model: Any, data: Any, device: Any, batch_size: int = 256) -> dict[str, float]:
    """Mean of each scalar the family's ``evaluation_step`` reports, over a split (in eval mode;
    the model's mode is restored afterwards)."""
    import torch
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    try:
        for batch in batches(data, batch_size, device):
            out = model.evaluation_step(batch)
            b = int(next(iter(batch.values())).shape[0])
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    totals[k] = totals.get(k, 0.0) + float(v) * b
            n += b
    finally:
        model.train(was_training)
    return {k: v / max(n, 1) for k, v in totals.items()}
