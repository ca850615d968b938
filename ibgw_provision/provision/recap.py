"""What `ibgw provision` prints: progress while it runs, then tasks, diffs and a recap (or JSON).

On a terminal, progress is a live row per host. Anywhere else (a CI log, a pipe), it is one
plain line per host per step as it happens, and nothing is wrapped at 80 columns.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import timefmt
from .apply import Report

SCHEMA = "ibgw.provision/1"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
LOG_WIDTH = 1000  # not a terminal: lines as long as they are


def console_for(stream: TextIO | None = None) -> Console:
    """A console on stream (stdout): the terminal's width, or unwrapped lines when not a terminal."""
    console = Console(file=stream or sys.stdout, highlight=False)
    if not console.is_terminal:
        console = Console(file=stream or sys.stdout, highlight=False, width=LOG_WIDTH, soft_wrap=True)
    return console


def exit_code(reports: list[Report]) -> int:
    """0 every host converged; 1 a host failed or was unreachable; 2 a host was refused (bad input)."""
    if any(r.refused for r in reports):
        return EXIT_REFUSED
    return EXIT_FAILED if any(r.failed for r in reports) else EXIT_OK


def status(report: Report) -> str:
    if report.unreachable:
        return "unreachable"
    if report.refused:
        return "refused"
    if report.failed:
        return "failed"
    return "changed" if report.changed else "ok"


def as_json(reports: list[Report], show_diff: bool = False) -> dict:
    """The run in schema ibgw.provision/1: keys are only ever added within a version."""
    return {
        "schema": SCHEMA,
        "exit_code": exit_code(reports),
        "hosts": [
            {
                "host": r.host,
                "status": status(r),
                "check": r.checked_only,
                "ok": r.ok,
                "changed": r.changed,
                "unreachable": r.unreachable,
                "failed": bool(r.failed) and not r.unreachable,
                "refused": r.refused,
                "error": r.failed,
                "warnings": list(r.warnings),
                "round_trips": r.round_trips,
                "seconds": round(r.seconds, 3),
                "tasks": [
                    {
                        "name": t.name,
                        "changed": t.changed,
                        "detail": t.detail,
                        "diff": t.diff if show_diff and t.diff else None,
                    }
                    for t in r.tasks
                ],
                "pending_restarts": [t.pending for t in r.tasks if t.pending],
            }
            for r in reports
        ],
    }


class Recap:
    def __init__(self, show_diff: bool = False, verbose: bool = False, console: Console | None = None):
        self.show_diff, self.verbose = show_diff, verbose
        self.console = console or console_for()

    @contextmanager
    def progress(self, hosts: list[str]):
        """Yields the callback that reports a host's current step: a live row, or a plain line."""
        if not self.console.is_terminal:
            yield lambda host, message: self._line(host, message)
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[host]}[/] {task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            rows = {h: progress.add_task("connecting", host=h, total=None) for h in hosts}
            yield lambda host, message: progress.update(rows[host], description=message)

    def _line(self, host: str, message: str) -> None:
        self.console.print(Text(f"[{host}] {message}"), soft_wrap=True)

    def show(self, reports: list[Report]) -> int:
        """Print every host's tasks and the recap; return the exit code."""
        for report in reports:
            self._tasks(report)
        table = Table(title="PLAY RECAP", title_justify="left", box=None, pad_edge=False)
        for column in ("host", "ok", "changed", "unreachable", "failed", "round trips", "time"):
            table.add_column(column, justify="left" if column == "host" else "right")
        for r in reports:
            failed = bool(r.failed) and not r.unreachable
            table.add_row(
                r.host,
                Text(str(r.ok), "green"),
                Text(str(r.changed), "yellow" if r.changed else ""),
                Text(str(int(r.unreachable)), "red" if r.unreachable else ""),
                Text(str(int(failed)), "red" if failed else ""),
                str(r.round_trips),
                timefmt.elapsed(r.seconds),
            )
        self.console.print(table)
        if any(r.checked_only for r in reports):
            self.console.print("check mode: nothing was changed")
        return exit_code(reports)

    def _tasks(self, report: Report) -> None:
        verb = "would change" if report.checked_only else "changed"
        for warning in report.warnings:
            self.console.print(Text(f"[{report.host}] warning: {warning}", "yellow"), soft_wrap=True)
        for task in report.tasks:
            if task.changed or self.verbose or task.pending:
                shown = Text(verb, "yellow") if task.changed else Text("ok", "green")
                shown = Text("pending", "magenta") if task.pending else shown
                detail = f" ({task.detail})" if task.detail else ""
                self.console.print(
                    Text.assemble(f"[{report.host}] ", shown, f": {task.name}{detail}"), soft_wrap=True
                )
            if task.changed and self.show_diff and task.diff:
                self.console.print(Text(task.diff, "cyan"), end="" if task.diff.endswith("\n") else "\n")
        if report.failed:
            label = "UNREACHABLE" if report.unreachable else "REFUSED" if report.refused else "FAILED"
            self.console.print(Text(f"[{report.host}] {label}: {report.failed}", "red"), soft_wrap=True)
