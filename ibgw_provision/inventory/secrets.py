"""Secrets are read on the operator machine, by reference, and never printed."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from .model import Inventory, SecretRef

MASK = "********"


class Secrets:
    """Resolves SecretRefs. `masked=True` never reads them: for render and --check output."""

    def __init__(self, masked: bool = False):
        self.masked = masked
        self.values: set[str] = set()  # every secret value handed out, for masking output

    def value(self, ref: SecretRef) -> str:
        if self.masked:
            return MASK
        value = _read(ref)
        self.values.add(value)
        return value

    def mask(self, text: str) -> str:
        return mask_values(text, self.values)


def mask_values(text: str, values: Iterable[str]) -> str:
    """Mask each value where it stands as a whole token, never inside a longer word (`per` in `paper`)."""
    ordered = sorted({v for v in values if v}, key=len, reverse=True)
    if not ordered:
        return text
    return re.sub("|".join(_token(v) for v in ordered), MASK, text)


def _token(value: str) -> str:
    start = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
    end = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
    return start + re.escape(value) + end


def _read(ref: SecretRef) -> str:
    if ref.env:
        value = os.environ.get(ref.env)
        if not value:
            raise SecretError(f"environment variable {ref.env} is not set")
        return _one_line(value, f"environment variable {ref.env}")
    assert ref.file is not None  # a SecretRef has exactly one of env and file
    path = Path(ref.file).expanduser()
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(f"secret file {path} is readable by others; chmod 600 it")
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return _one_line(value, f"secret file {path}")


def _one_line(value: str, what: str) -> str:
    """A line break would let a secret add settings to the file it is written into (config.ini)."""
    if "\n" in value or "\r" in value:
        raise SecretError(f"{what} holds a line break; a secret must be one line")
    return value


class SecretError(ValueError):
    """A reference that does not resolve; the caller adds file, line and field."""


def check(inv: Inventory, names: list[str] | None = None) -> None:
    """Resolve every secret reference now, so provisioning never fails half-way on one."""
    problems = []
    for name in names or list(inv.hosts):
        host = inv.hosts[name]
        for i, gw in enumerate(host.gateways):
            for key in ("username", "password"):
                ref = getattr(gw.login, key) if gw.login else None
                try:
                    ref and _read(ref)
                except SecretError as exc:
                    problems.append(inv.problem(("hosts", name, "gateways", i, "login", key), str(exc)))
    if problems:
        raise InputError(problems)
