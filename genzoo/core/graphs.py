"""Replaying a sampler's per-step work as one CUDA graph.

Autoregressive samplers run one small step hundreds of times (a pixel, a token). On a GPU each
of the step's tens of tiny kernels costs a launch from Python, so the step is launch-bound and
computing each activation only once saves little (PixelCNN on an H100: the cached sampler was
only 1.3x the naive one). A CUDA graph records the step's kernels once and replays them all with
one launch.

A step can be captured when it is *static*:
- it reads and writes only tensors allocated before it, including a position counter on the
  device that it advances itself (``index_select``/``index_copy_`` with that counter instead of
  Python-int slicing, whose offsets would be frozen into the graph);
- it draws no random numbers: uniforms are drawn up front (``sampler.uniforms``) and the step
  picks its row with the counter;
- it never reads a value back to the host (no ``.item()``, ``bool(t)``, data-dependent shapes).

The same step runs eagerly on a CPU (and on a GPU with ``cuda_graph=False``), so the static
bookkeeping is tested everywhere; only the capture itself needs CUDA.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class StepGraph:
    """Runs ``step()`` any number of times. On CUDA with ``enabled``, the first call runs
    eagerly on a side stream (warm-up: cuBLAS handles and allocator pools are created outside
    the capture), the second is captured, and every later call replays the graph. Elsewhere
    every call runs ``step()`` eagerly. A capture that fails falls back to eager steps with a
    warning: slower, never a wrong sample (a failed capture runs nothing)."""

    def __init__(self, step: Callable[[], None], device: torch.device | str, enabled: bool = True):
        self.step = step
        self.device = torch.device(device)
        self.enabled = enabled and self.device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def run(self, times: int = 1) -> None:
        for _ in range(times):
            self._once()

    def _once(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
        elif not self.enabled:
            self.step()
        elif self.calls == 1:
            self._warm_up()
        else:
            self._capture()

    def _warm_up(self) -> None:
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.step()
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # recorded, not run: the state is still after call 1
                self.step()
        except RuntimeError as e:
            warnings.warn(f"CUDA graph capture failed, sampling step by step instead: {e}",
                          RuntimeWarning, stacklevel=3)
            self.enabled = False
            torch.cuda.synchronize(self.device)
            self.step()
            return
        self.graph = graph
        graph.replay()


def run_steps(step: Callable[[], None], times: int, device: torch.device | str,
              cuda_graph: bool = True) -> StepGraph:
    """Call a static ``step`` `times` times (as one CUDA graph on GPUs); returns the runner so
    a caller can go on replaying it (e.g. token samplers that stop early)."""
    runner = StepGraph(step, device, cuda_graph)
    runner.run(times)
    return runner


def window_index(h: int, w: int, kh: int, kw: int, dilation: tuple[int, int] = (1, 1),
                 width: int | None = None) -> torch.Tensor:
    """(h*w, kh*kw) flat indices of every output position's kh x kw window into a padded input
    of row length `width` (default ``w + (kw - 1) * dilation``), in raster order, the order of
    ``conv.weight.flatten(1)``'s taps. ``buf.flatten(2).index_select(2, idx[p])`` is then the
    window of position p, and a step can pick p with a counter on the device."""
    dh, dw = dilation
    width = width or w + (kw - 1) * dw
    i = torch.arange(h).repeat_interleave(w)[:, None]
    j = torch.arange(w).repeat(h)[:, None]
    a = (torch.arange(kh) * dh).repeat_interleave(kw)[None]
    b = (torch.arange(kw) * dw).repeat(kh)[None]
    return (i + a) * width + (j + b)
