"""NUL-terminated text fields: how values are written, and a typed reader for incoming fields."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import MalformedMessage

UNSET_INTEGER = 2**31 - 1
UNSET_LONG = 2**63 - 1
UNSET_DOUBLE = sys.float_info.max
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"  # how the Java server prints Double.MAX_VALUE
INFINITY_TEXT = "Infinite"


def field_text(value: Any) -> str:
    """One value as the server writes it: bools as 1/0, None as empty, unset doubles Java-style."""
    if value is None:
        return ""
    if value is True or value is False:
        return "1" if value else "0"
    if type(value) is float:
        if value == UNSET_DOUBLE:
            return UNSET_DOUBLE_TEXT
        if value == float("inf"):
            return INFINITY_TEXT
    return str(value)


def double_text(value: float) -> str:
    """A protobuf double as exact text: its shortest round-trip form, "100" rather than "100.0"."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def encode_fields(values: Iterable[Any]) -> bytes:
    """Values as NUL-terminated ASCII fields."""
    return "".join([field_text(v) + "\0" for v in values]).encode("ascii", "backslashreplace")


def split_fields(body: bytes) -> list[str]:
    """NUL-terminated fields of a text payload (a missing final NUL is tolerated)."""
    parts = body.decode("utf-8", "replace").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


class FieldReader:
    """Reads typed values, in order, from a list of text fields."""

    def __init__(self, fields: list[str], position: int = 0):
        self._fields = fields
        self._pos = position

    def str(self) -> str:
        if self._pos >= len(self._fields):
            raise MalformedMessage(f"message ends after {len(self._fields)} fields")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def remaining(self) -> int:
        return len(self._fields) - self._pos

    def skip(self, count: int = 1) -> None:
        for _ in range(count):
            self.str()

    def int(self, default: int = 0) -> int:
        text = self.str()
        try:
            return int(text) if text else default
        except ValueError:
            raise MalformedMessage(f"field {self._pos}: not an integer: {text[:40]!r}") from None

    def float(self, default: float | None = 0.0) -> float | None:
        text = self.str()
        if text == INFINITY_TEXT:
            return float("inf")
        try:
            return float(text) if text else default
        except ValueError:
            raise MalformedMessage(f"field {self._pos}: not a number: {text[:40]!r}") from None

    def bool(self) -> bool:
        text = self.str()
        if text in ("True", "true"):
            return True
        if text in ("False", "false", ""):
            return False
        try:
            return int(text) != 0
        except ValueError:
            raise MalformedMessage(f"field {self._pos}: not a boolean: {text[:40]!r}") from None

    def decimal(self) -> Decimal:
        text = self.str()
        try:
            value = Decimal(text) if text else Decimal(0)
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite():
            raise MalformedMessage(f"field {self._pos}: not a decimal: {text[:40]!r}")
        return value
