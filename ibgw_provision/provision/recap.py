"""What `ibgw provision` prints: progress while it runs, then tasks, diffs and a recap."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import timefmt
from .apply import Report


class Recap:
    def __init__(self, show_diff: bool = False, verbose: bool = False, console: Console | None = None):
        self.show_diff, self.verbose = show_diff, verbose
        self.console = console or Console(highlight=False)

    @contextmanager
    def progress(self, hosts: list[str]):
        """A live row per host naming its current step; yields the callback that updates it."""
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[host]}[/] {task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            rows = {h: progress.add_task("connecting", host=h, total=None) for h in hosts}
            yield lambda host, message: progress.update(rows[host], description=message)

    def show(self, reports: list[Report]) -> int:
        """Print every host's tasks and the recap; return the exit code."""
        for report in reports:
            self._tasks(report)
        table = Table(title="PLAY RECAP", title_justify="left", box=None, pad_edge=False)
        for column in ("host", "ok", "changed", "failed", "round trips", "time"):
            table.add_column(column, justify="left" if column == "host" else "right")
        for r in reports:
            table.add_row(
                r.host,
                Text(str(r.ok), "green"),
                Text(str(r.changed), "yellow" if r.changed else ""),
                Text(str(int(bool(r.failed))), "red" if r.failed else ""),
                str(r.round_trips),
                timefmt.elapsed(r.seconds),
            )
        self.console.print(table)
        if any(r.checked_only for r in reports):
            self.console.print("check mode: nothing was changed")
        return 1 if any(r.failed for r in reports) else 0

    def _tasks(self, report: Report) -> None:
        verb = "would change" if report.checked_only else "changed"
        for task in report.tasks:
            if task.changed or self.verbose or task.pending:
                status = Text(verb, "yellow") if task.changed else Text("ok", "green")
                status = Text("pending", "magenta") if task.pending else status
                detail = f" ({task.detail})" if task.detail else ""
                self.console.print(
                    Text.assemble(f"[{report.host}] ", status, f": {task.name}{detail}"), soft_wrap=True
                )
            if task.changed and self.show_diff and task.diff:
                self.console.print(Text(task.diff, "cyan"), end="" if task.diff.endswith("\n") else "\n")
        if report.failed:
            # one line, never wrapped by the console: it is copied into bug reports and grepped
            self.console.print(Text(f"[{report.host}] FAILED: {report.failed}", "red"), soft_wrap=True)
