"""Input errors that point at a file, a line and a field, and exit 2."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NoReturn

import click

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return printable(text)


def printable(text: str) -> str:
    """One line, no terminal controls: a key or value from the file may hold any character."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class InputError(Exception):
    """One or more problems with what the user gave us (inventory, secrets, flags)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def field_name(path: tuple) -> str:
    """('hosts', 'gw1', 'apps', 0, 'client_id') -> 'hosts.gw1.apps[0].client_id'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def exit_bad_input(exc: InputError) -> NoReturn:
    """Print each problem (file:line: field: message) and exit 2: never a traceback."""
    for problem in exc.problems:
        click.secho(f"error: {problem}", fg="red", err=True)
    sys.exit(EXIT_BAD_INPUT)
