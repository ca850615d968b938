"""NUL-terminated text fields: how values are written, and a typed reader for incoming fields."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from decimal import Decimal
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
        """An integer as Java's Integer.parseInt reads one (ASCII digits, a sign); "" is `default`."""
        text = self.str()
        if not text:
            return default
        if not _INTEGER.fullmatch(text):
            raise MalformedMessage(f"field {self._pos}: not an integer: {text[:40]!r}")
        return int(text)

    def float(self, default: float | None = 0.0) -> float | None:
        """A decimal number (ASCII, no spaces or underscores), or an infinity as clients spell it."""
        text = self.str()
        if text in NON_FINITE:
            return NON_FINITE[text]
        if not text:
            return default
        if not _NUMBER.fullmatch(text):
            raise MalformedMessage(f"field {self._pos}: not a number: {text[:40]!r}")
        return float(text)

    def bool(self) -> bool:
        """A boolean as ibapi and ib_async send one: "1", "0" or ""."""
        text = self.str()
        if text not in BOOLEANS:
            raise MalformedMessage(f"field {self._pos}: not a boolean (0 or 1): {text[:40]!r}")
        return BOOLEANS[text]

    def decimal(self) -> Decimal:
        text = self.str()
        if not text:
            return Decimal(0)
        value = parse_decimal(text)
        if value is None:
            raise MalformedMessage(f"field {self._pos}: not a decimal: {text[:40]!r}")
        return value


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
BOOLEANS = {"": False, "0": False, "1": True}
# Non-finite values as clients spell them: ib_async sends "Infinite", ibapi "Infinity", or Python's "inf"
# and "nan" (the policy refuses a non-finite price wherever it prices one).
NON_FINITE = {
    "nan": math.nan,
    "NaN": math.nan,
    INFINITY_TEXT: math.inf,
    "Infinity": math.inf,
    "inf": math.inf,
    "-Infinity": -math.inf,
    "-inf": -math.inf,
}


def parse_decimal(text: str) -> Decimal | None:
    """A finite decimal number in plain ASCII notation (no spaces, underscores or NaN), or None."""
    if not _NUMBER.fullmatch(text):
        return None
    value = Decimal(text)
    return value if value.is_finite() else None
