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

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

import torch

from genzoo.core import signals
from genzoo.errors import ConfigError


TIMEOUT_ENV = "GENZOO_DIST_TIMEOUT"
RENDEZVOUS_TIMEOUT = 60.0  # seconds a rank waits for its peers to join (torch's default: 30 min)
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # once joined: rank 0 may sample or save meanwhile
_SETUP = ("a distributed run needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun, or "
          "`zoo train --nproc N`, sets them all); unset them to train in one process")


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw[:40]!r} is not an integer; {_SETUP}") from None


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise. An
    incomplete or inconsistent environment is one line naming the variable."""
    r, n, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if local is not None and local < 0:
        raise ConfigError(f"LOCAL_RANK={local} is negative; {_SETUP}")
    if n is None:
        if r is not None:
            raise ConfigError(f"RANK is set ({r}) but WORLD_SIZE is not; {_SETUP}")
        return 0, 1, 0
    if n < 1:
        raise ConfigError(f"WORLD_SIZE={n} must be >= 1; {_SETUP}")
    if r is None:
        if n == 1:
            return 0, 1, local or 0
        raise ConfigError(f"WORLD_SIZE is set ({n}) but RANK is not; {_SETUP}")
    if not 0 <= r < n:
        raise ConfigError(f"RANK={r} is outside WORLD_SIZE={n} (ranks are 0..{n - 1}); {_SETUP}")
    if n > 1:
        if not os.environ.get("MASTER_ADDR", "").strip():
            raise ConfigError(f"MASTER_ADDR is not set (WORLD_SIZE={n}); {_SETUP}")
        port = _env_int("MASTER_PORT")
        if port is None:
            raise ConfigError(f"MASTER_PORT is not set (WORLD_SIZE={n}); {_SETUP}")
        if not 1 <= port <= 65535:
            raise ConfigError(f"MASTER_PORT={port} is not a port (1..65535); {_SETUP}")
    return r, n, local or 0


def rendezvous_timeout() -> float:
    """Seconds a rank waits for its peers: GENZOO_DIST_TIMEOUT, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return RENDEZVOUS_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 7 * 24 * 3600):  # nan fails too
        raise ConfigError(f"{TIMEOUT_ENV}={raw[:40]!r} must be a number of seconds between 0 "
                          "and 604800 (one week)")
    return value


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
    ranks train instead of launching again. Returns torchrun's exit code; SIGINT or SIGTERM
    here is passed on to torchrun, waited for, and raised as ``signals.Interrupted``."""
    check_nproc(nproc, device)
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-c", _TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m",
           "genzoo", *args]
    posix = os.name == "posix"
    # torchrun in a session of its own: a Ctrl-C at the terminal reaches this process alone,
    # which passes it on once (torchrun passes it to its workers once: they stop at a step
    # boundary and rank 0 saves; a second signal would abort them). It dies with us (SIGTERM).
    proc = subprocess.Popen(cmd, start_new_session=posix,
                            preexec_fn=signals.die_with_parent if posix else None)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        try:
            proc.send_signal(signum)
        except OSError:
            pass
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals.STOP_SIGNALS:
            previous[s] = signal.signal(s, forward)
    try:
        rc = proc.wait()
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        if proc.poll() is None:  # we are failing ourselves: stop torchrun, which stops its ranks
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    if received:
        raise signals.Interrupted(signum=received[0],
                                  message=f"distributed training stopped by "
                                          f"{signals.signal_name(received[0])} (torchrun exit "
                                          f"code {rc})")
    return rc


_TORCHRUN = ("import sys; from genzoo.core.distributed import torchrun; "
             "sys.exit(torchrun(sys.argv[1:]))")


class _ShutdownNotes(logging.Filter):
    """torchrun's notes on passing a signal to its workers: rank 0 says in one line what the
    stop saved, so these are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("death signal" in text or "closing signal" in text)


def torchrun(argv: list[str]) -> int:
    """``torchrun ARGV`` (torch.distributed.run) as ``launch`` runs it: stopped by a signal, it
    ends with exit code 128 + signal instead of a traceback."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main
    for name in ("torch.distributed.elastic.agent.server.api",
                 "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).addFilter(_ShutdownNotes())
    try:
        main(argv)
    except SignalException as e:
        return 128 + int(e.sigval)
    except ChildFailedError as e:  # the rank said why above; its exit is one line, not a table
        rank, failure = e.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        print(f"torchrun: rank {rank} (pid {failure.pid}) {how}", file=sys.stderr)
        return 1
    return 0


def run_rank(command: Callable[[], Any]) -> NoReturn:
    """Run a torchrun rank's command, then leave through ``os._exit`` with its exit code, once
    stdout and stderr are flushed, instead of through the interpreter's shutdown.

    Why: a rank that had finished cleanly (process group destroyed, checkpoint written) aborted
    at exit about once in 40 runs here ("terminate called without an active exception", no
    Python frame left on the stack; torch 2.14.1, gloo): the gloo worker and transport threads
    are torn down by C++ destructors during interpreter finalisation, where a thread still
    joinable aborts the process (pytorch/pytorch#179291 describes the finalisation side). Its
    torchrun then stopped rank 0 in the middle of its end-of-run evaluation. By the time the
    command returns every file this rank writes is closed (``Run`` appends with ``with``, the
    checkpoint commits by rename, the lock is released in ``finally``) and
    ``destroy_process_group`` has run (``session._session``), so skipping finalisation loses
    nothing. A command's own error keeps its message and exit code."""
    code: int = 0
    try:
        command()
    except SystemExit as e:  # click ends every command with one
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # not a user mistake (those are SystemExit): keep the traceback
        import traceback
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe has nothing left to keep
            pass
    logging.shutdown()
    os._exit(code)


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
    use CUDA, gloo otherwise); returns whether training is distributed. A rank whose peers do
    not all join within ``rendezvous_timeout()`` stops with one line; a torchrun worker stops
    with torchrun (a parent-death signal) rather than train on alone."""
    import torch.distributed as dist
    r, n, local = world()
    if n <= 1:
        return False
    if dist.is_initialized():
        return True
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process")
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:  # started by torchrun's agent
        signals.die_with_parent()
        if signals.orphaned():
            raise ConfigError(f"rank {r}: torchrun, which started it, is gone; not training")
    use_cuda = device != "cpu" and torch.cuda.is_available() and device != "mps"
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    store = _rendezvous(r, n, rendezvous_timeout())
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, store=store, rank=r, world_size=n,
                            timeout=COLLECTIVE_TIMEOUT)
    global _votes
    _votes = None
    if backend != "gloo":  # the stop votes go over a CPU group: no GPU sync per step
        try:
            _votes = dist.new_group(backend="gloo")
        except (RuntimeError, ValueError):
            _votes = None
    return True


_votes: Any = None  # the process group StopVote uses (None: the default one)


def _rendezvous(r: int, n: int, wait: float) -> Any:
    """The rendezvous store, once all `n` ranks have checked in, within `wait` seconds; torch's
    own would wait silently for COLLECTIVE_TIMEOUT (30 min) for a rank that never comes."""
    import torch.distributed as dist
    where = f"{os.environ['MASTER_ADDR'].strip()}:{os.environ['MASTER_PORT'].strip()}"
    hint = (f"start all {n} ranks with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, or wait "
            f"longer with {TIMEOUT_ENV}=SECONDS")

    def first_line(e: BaseException) -> str:
        return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    deadline = time.monotonic() + wait
    if r > 0 and not _reachable(deadline):  # torch's client would retry with C++ backtraces
        raise ConfigError(f"rank {r} of {n} waited {wait:g} s for rank 0 at {where}, which never "
                          f"came; {hint}")
    try:
        left = max(1.0, deadline - time.monotonic()) if r > 0 else wait
        store, _, _ = next(dist.rendezvous("env://", r, n, timeout=timedelta(seconds=left)))
    except (RuntimeError, ValueError, OSError) as e:  # DistError is a RuntimeError
        text = first_line(e)
        if "time" in text.lower():
            raise ConfigError(f"rank {r} of {n} waited {wait:g} s at {where} for its peers, who "
                              f"never came ({text}); {hint}") from None
        raise ConfigError(f"rank {r} of {n} cannot join the rendezvous at {where} ({text}); "
                          f"{hint}") from None
    # every rank checks in; the key names torchrun's restart, whose agent store outlives a try
    key = f"genzoo/arrived/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    keys = [f"{key}/{i}" for i in range(n)]
    try:
        store.set(keys[r], "1")
        store.wait(keys, timedelta(seconds=wait))
    except (RuntimeError, ValueError, OSError) as e:
        try:
            missing = [i for i in range(n) if not store.check([keys[i]])]
        except (RuntimeError, ValueError, OSError):
            missing = []
        who = f"rank{'s' * (len(missing) != 1)} {', '.join(map(str, missing))}" if missing \
            else "its peers"
        raise ConfigError(f"rank {r} of {n} waited {wait:g} s at {where} for {who}, who never "
                          f"came ({first_line(e)}); {hint}") from None
    store.set_timeout(COLLECTIVE_TIMEOUT)
    return store


def _reachable(deadline: float) -> bool:
    """Whether rank 0's rendezvous (MASTER_ADDR:MASTER_PORT) accepts a connection before
    `deadline` (time.monotonic()), trying every half second."""
    addr, port = os.environ["MASTER_ADDR"].strip(), int(os.environ["MASTER_PORT"])
    while True:
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, min(
                    2.0, deadline - time.monotonic()))):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


class StopVote:
    """Whether any rank was asked to stop (a signal), agreed by every rank at the same step
    boundary so that all of them stop there and save together. The vote cast at one boundary is
    read at the next (an asynchronous all-reduce), so no step waits on it; one process needs no
    vote."""

    def __init__(self) -> None:
        self._work: Any = None
        self._flag: torch.Tensor | None = None

    def _collect(self) -> bool:
        if self._work is None:
            return False
        self._work.wait()
        self._work = None
        return bool(self._flag.item())

    def _cast(self, local: bool) -> None:
        import torch.distributed as dist
        device = "cpu"
        if _votes is None and dist.get_backend() == "nccl":
            device = f"cuda:{torch.cuda.current_device()}"
        self._flag = torch.tensor([int(local)], dtype=torch.int32, device=device)
        self._work = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=_votes,
                                     async_op=True)

    def __call__(self, local: bool) -> bool:
        """At a step boundary: whether to stop here (some rank's signal, one boundary ago)."""
        if not active():
            return local
        if self._collect():
            return True
        self._cast(local)
        return False

    def close(self, local: bool) -> bool:
        """At the end of the loop: the pending vote and a last one, cast and read now."""
        if not active():
            return local
        agreed = self._collect()
        self._cast(local)
        return self._collect() or agreed


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
