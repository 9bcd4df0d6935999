"""Data-parallel training over torch.distributed, for runs launched by ``torchrun``.

``torchrun`` (or ``zoo train NAME --nproc N``, which wraps it: ``launch``) starts one process per device and
sets RANK / WORLD_SIZE / LOCAL_RANK. Every rank builds the same model from the same seed, takes its
share of each global batch of the ``(seed, step)`` schedule, and averages gradients with the others
before every optimizer step, so N processes follow one process with the same global batch. Rank 0
alone logs, checkpoints and writes samples.

Gradients are averaged in ``StepContext.optimize`` (one flattened all-reduce per optimizer step)
rather than by wrapping the model in DistributedDataParallel: families write their own
``training_step`` (a GAN's critic loop, a gradient penalty's double backward, several optimizers),
which DDP's one-forward-one-backward hooks do not follow. The arithmetic is DDP's: mean gradients,
the same parameters on every rank (broadcast from rank 0 at the start).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch

from genzoo.errors import ConfigError


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None


def nproc_limit(device: str = "auto") -> tuple[int, str]:
    """How many ranks this machine can run on `device`, and what they are counted in: GPUs on
    CUDA (one rank per GPU), CPU cores otherwise (more ranks than cores only oversubscribe)."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        n = torch.cuda.device_count()
        return n, "GPU" + "s" * (n != 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1, "CPU core" + "s" * (cores != 1)


def check_nproc(nproc: int, device: str | None = None) -> None:
    """Refuse, in one line, a process count that cannot run here: below 1, inside torchrun
    already, or (given `device`) above the GPUs on CUDA / the CPU cores otherwise."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: must be >= 1")
    if os.environ.get("WORLD_SIZE"):
        raise ConfigError("--nproc is for launching; this process already runs under torchrun")
    if device is not None:
        limit, unit = nproc_limit(device)
        if nproc > limit:
            raise ConfigError(f"--nproc {nproc} is more than the {limit} {unit} of this machine "
                              f"(device {device}); use at most {limit}")


def launch(argv: Sequence[str], nproc: int, device: str = "auto") -> int:
    """Run ``python -m genzoo ARGV`` as `nproc` data-parallel processes under torchrun
    (``--standalone``: one machine, a free port); ``--nproc N`` is taken out of `argv` so the
    ranks train instead of launching again. Returns torchrun's exit code."""
    check_nproc(nproc, device)
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "genzoo", *args]
    return subprocess.call(cmd)


def active() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if active() else 0


def size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> bool:
    """Join the process group when started by torchrun with WORLD_SIZE > 1 (nccl when the ranks
    use CUDA, gloo otherwise); returns whether training is distributed."""
    import torch.distributed as dist
    r, n, local = world()
    if n <= 1:
        return False
    if dist.is_initialized():
        return True
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process")
    use_cuda = device != "cpu" and torch.cuda.is_available() and device != "mps"
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return True


def device_name(device: str) -> str:
    """Each rank's device: cuda:LOCAL_RANK when distributed on GPUs."""
    if not active():
        return device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world()[2] % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device


def shutdown() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (DDP does the same when it wraps a model)."""
    if not active():
        return
    import torch.distributed as dist
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of every rank's gradients, in one flattened all-reduce (DDP's bucket, unsplit)."""
    if not active():
        return
    import torch.distributed as dist
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (logged metrics)."""
    if not active():
        return values
    import torch.distributed as dist
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def any_true(flag: torch.Tensor) -> bool:
    """Whether `flag` is set on any rank (a NaN anywhere stops every rank together)."""
    if not active():
        return bool(flag)
    import torch.distributed as dist
    t = flag.detach().to(torch.int32).reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_tensor(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, on every rank (RNG states for checkpoints)."""
    if not active():
        return [t]
    import torch.distributed as dist
    home = t.device
    if dist.get_backend() == "nccl":  # nccl moves only CUDA tensors
        t = t.to(f"cuda:{torch.cuda.current_device()}")
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return [o.to(home) for o in out]
