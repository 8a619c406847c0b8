"""The progress bar of a batch (rich, on stderr): records done of the total, rate, ETA,
tokens and cost so far; and the one-line summary at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import BatchReport

__all__ = ["BatchProgress", "summary_line"]


class BatchProgress:
    """A rich progress bar, shown only when stderr is a terminal (or `force`)."""

    def __init__(self, label: str, total: int | None, *, enabled: bool = True, force: bool = False) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True, force_terminal=True if force else None)
        if not console.is_terminal:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),  # the width the other columns leave
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            TextColumn("{task.fields[usage]}"),
            console=console,
            transient=False,
        )
        from rich.markup import escape

        # the label is text, not markup: `[asyncio]`, a plan's goal
        self._task = self._bar.add_task(escape(label), total=total, rate="", usage="", failed=0)
        self._bar.start()

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def set_total(self, total: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def update(self, completed: int, *, rate: float, failed: int, tokens: int, cost: float | None) -> None:
        if self._bar is None:
            return
        usage = f"{_compact(tokens)} tok" if tokens else ""
        if cost:
            usage += f" ${cost:,.4f}" if cost < 1 else f" ${cost:,.2f}"
        if failed:
            usage += f" [red]{_compact(failed)} failed[/red]"
        shown_rate = f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"
        self._bar.update(self._task, completed=completed, rate=shown_rate, usage=usage.strip())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _compact(count: int) -> str:
    """1,234; 12.3k; 1.23M: a count that keeps the bar within 80 columns."""
    if count < 10_000:
        return f"{count:,}"
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def summary_line(report: BatchReport) -> str:
    parts = [f"{report.done:,} done", f"{report.failed:,} failed", f"{report.skipped:,} skipped"]
    if report.input_tokens or report.output_tokens:
        parts.append(f"{report.input_tokens + report.output_tokens:,} tokens "
                     f"({report.input_tokens:,} in, {report.output_tokens:,} out)")
    if report.cost is not None:
        parts.append(f"cost ${report.cost:,.4f}")
    parts.append(f"{report.seconds:,.1f} s")
    if report.seconds > 0 and report.done + report.failed:
        parts.append(f"{(report.done + report.failed) / report.seconds:,.1f} records/s")
    text = ", ".join(parts) + f" [{report.executor}]"
    if report.stopped:
        text += f" (stopped: {report.stopped})"
    return text
