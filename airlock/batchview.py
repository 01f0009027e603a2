"""How ``airlock submit`` shows a batch: a rich progress bar with counts by verdict, and a
summary table. Presentation only; the batch logic is airlock.batch."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

STYLES = {"ok": "green", "nonzero_exit": "yellow", "cancelled": "dim", "invalid": "magenta"}


def style(verdict: str) -> str:
    return STYLES.get(verdict, "red")


def counts_text(counts: Counter[str], invalid: int) -> str:
    parts = [f"[{style(v)}]{v} {n}[/]" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    if invalid:
        parts.append(f"[{style('invalid')}]invalid {invalid}[/]")
    return " · ".join(parts)


class BatchProgress:
    """The live bar: jobs done of jobs to run, and counts by verdict so far."""

    def __init__(self, console: Console, total: int, title: str) -> None:
        self.console = console
        self.counts: Counter[str] = Counter()
        self.invalid = 0
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[counts]}"),
            console=console, transient=False)
        self.task = self.progress.add_task(title, total=total, counts="")

    def __enter__(self) -> BatchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def on_invalid(self, item: Any) -> None:
        self.invalid += 1
        self.console.print(f"[{style('invalid')}]{item.source}[/]: {item.error}")
        self._refresh()

    def on_result(self, result: Any) -> None:
        self.counts[result.record.verdict or "error"] += 1
        self.progress.advance(self.task)
        self._refresh()

    def _refresh(self) -> None:
        self.progress.update(self.task, counts=counts_text(self.counts, self.invalid))


def summary_table(report: Any, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("verdict")
    table.add_column("jobs", justify="right")
    table.add_column("median wall", justify="right")
    for verdict, n in sorted(report.verdicts.items(), key=lambda kv: -kv[1]):
        walls = report.walls_ms.get(verdict)
        median = f"{statistics.median(walls):.0f} ms" if walls else "-"
        table.add_row(f"[{style(verdict)}]{verdict}[/]", str(n), median)
    if report.invalid:
        table.add_row(f"[{style('invalid')}]invalid line[/]", str(len(report.invalid)), "-")
    table.add_section()
    table.add_row("[bold]results[/]", f"[bold]{report.done}[/]", f"{report.wall_s:.1f} s total")
    return table
