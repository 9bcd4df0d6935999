"""Progress bars: rich's, or a stand-in that draws nothing (logging off, a pipe, a rank > 0).

Both have rich's ``Progress`` interface as the trainer and the image-folder decoder use it:
``with bar: task = bar.add_task(...); bar.update(task, ...)``.
"""
from __future__ import annotations

from typing import Any


class NullProgress:
    """rich's Progress interface, drawing nothing."""

    def __enter__(self) -> "NullProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        return None


def training_bar(enabled: bool) -> Any:
    """The trainer's bar: steps done of the total, time left, and an ``info`` field (loss,
    throughput) the loop updates."""
    if not enabled:
        return NullProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)


def count_bar(label: str, enabled: bool) -> Any:
    """A transient bar on stderr for a long one-off job (decoding an image folder)."""
    if not enabled:
        return NullProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
