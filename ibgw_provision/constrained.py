"""Constrained field types that the inventory and the gate's config both validate with.

A leaf: it imports nothing from ibgw, so the gate can use it without the inventory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

Mode = Literal["paper", "live"]
MODES: tuple[Mode, ...] = ("paper", "live")
Port = Annotated[int, Field(ge=1, le=65535)]
ClientId = Annotated[int, Field(ge=0, le=2**31 - 1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
