"""The demo's terminal view (rich): a live panel while it runs, a table at the end.

Kept apart so that only ``authsession demo`` needs rich (the ``cli`` extra).
"""

from __future__ import annotations

import asyncio

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ._demo import DemoOptions, DemoReport, Progress, run_demo, summary_rows

__all__ = ["run_with_view"]


def run_with_view(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo, live on a terminal (only the summary otherwise); 0 when no request failed."""
    console = console or Console()
    if console.is_terminal:
        with Live(
            _live(Progress(duration=options.duration)), console=console, auto_refresh=False, transient=True
        ) as live:

            def show(progress: Progress) -> None:
                live.update(_live(progress), refresh=True)

            report = asyncio.run(run_demo(options, on_progress=show))
    else:
        report = asyncio.run(run_demo(options))
    console.print(summary_table(report))
    if report.errors:
        for kind, count in report.error_kinds.items():
            console.print(Text(f"{count:,} x {kind}", style="red"))
        return 1
    return 0


def _live(progress: Progress) -> Panel:
    """The live panel: fits 80 columns whatever the counts (a bar, then one line each for outcomes and details)."""
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=progress.duration or 1.0, completed=progress.elapsed, width=40),
        Text(f"{progress.elapsed:.1f}/{progress.duration:g} s", style="bold"),
    )
    line = Text.assemble(
        f"{progress.requests:,} requests  {progress.throughput:,.0f}/s  errors ",
        (f"{progress.errors:,}", "bold red" if progress.errors else "bold green"),
    )
    detail = Text(
        f"grants {progress.grants}  refreshes: {progress.background} proactive, {progress.after_rejection} after 401  "
        f"revocations {progress.revocations}  injected failures {progress.injected}  retries {progress.retries}"
    )
    return Panel(Group(bar, line, detail), title="authsession demo", border_style="cyan")


def summary_table(report: DemoReport) -> Table:
    """The summary as a rich table."""
    table = Table(title="authsession demo: summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_rows(report):
        if label == "errors":
            style = "bold red" if report.errors else "bold green"
            table.add_row(label, Text(value + ("" if report.errors else " (expected 0)"), style=style))
        else:
            table.add_row(label, Text(value))
    return table
