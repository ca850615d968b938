"""Constrained field types that the inventory and the gate's config both validate with.

A leaf: it imports nothing from ibgw, so the gate can use it without the inventory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

Mode = Literal["paper", "live"]
MODES: tuple[Mode, ...] = ("paper", "live")
# Strict: YAML's `true` is not client id 1, nor "1" a port.
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
ClientId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]  # TWS client ids: positive 32-bit signed ints
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
