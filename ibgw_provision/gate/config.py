"""The gate's configuration file (rendered from the inventory, one file per mode).

Validated by pydantic with unknown keys refused; every error names the file, line and field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from .. import yamlsrc
from ..constrained import ClientId, Mode, Name
from ..errors import InputError
from ..tws.framing import MAX_FRAME, MAX_HELLO

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def _network(value: object) -> Network:
    if not isinstance(value, str):
        raise ValueError("a CIDR such as 10.0.1.5/32")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"malformed CIDR {value!r}: {exc}") from None


def _sec_type(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(Model):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=0, le=65535)]  # 0 picks a free port (tests)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Upstream(Endpoint):
    port: Annotated[int, Field(ge=1, le=65535)]


class App(Model):
    """One trading app allowed on this gate's gateway."""

    name: Name
    client_id: ClientId
    sources: list[Annotated[Network, BeforeValidator(_network)]] = Field(min_length=1)
    read_only: StrictBool
    max_order_quantity: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    allowed_sec_types: (
        list[Annotated[str, BeforeValidator(_sec_type), Field(pattern=r"^[A-Z]{2,8}$")]] | None
    ) = Field(default=None, min_length=1)

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.sources)


class FrontSocket(Model):
    """The unix socket the front reaches the gate on: the only place a PROXY header is trusted."""

    path: Path
    group: Annotated[str, Field(min_length=1)] | None = None  # the front's group; None keeps the gate's


class Lobby(Model):
    """Bounds on connections that have not yet been admitted (nothing of theirs reaches the gateway)."""

    per_source: Annotated[int, Field(ge=1, le=65536)] = 8
    total: Annotated[int, Field(ge=1, le=65536)] = 256
    max_frame: Annotated[int, Field(ge=256, le=65536)] = 4096  # START_API's largest accepted frame


class GateConfig(Model):
    mode: Mode
    listen: Endpoint | None  # TCP, for direct use: a PROXY header there is never trusted
    front_socket: FrontSocket | None = None
    upstream: Upstream
    lobby: Lobby = Lobby()
    audit_db: Path
    admin_socket: Path
    metrics: Endpoint | None = None
    handshake_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    max_frame: Annotated[int, Field(ge=MAX_HELLO, le=MAX_FRAME)] = MAX_FRAME  # as ibapi: payload <= 0xFFFFFF
    client_buffer: Annotated[int, Field(ge=4096, le=2**31)] = 1024 * 1024
    apps: list[App]

    @model_validator(mode="after")
    def _some_listener(self) -> GateConfig:
        if self.listen is None and self.front_socket is None:
            raise ValueError("give listen, front_socket or both")
        return self

    @model_validator(mode="after")
    def _unique_apps(self) -> GateConfig:
        for key in ("name", "client_id"):
            values = [getattr(app, key) for app in self.apps]
            duplicates = sorted({v for v in values if values.count(v) > 1}, key=str)
            if duplicates:
                raise ValueError(f"apps: {key} {', '.join(map(str, duplicates))} appears more than once")
        return self

    @cached_property
    def apps_by_client_id(self) -> dict[int, App]:
        return {app.client_id: app for app in self.apps}


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling)"
    return re.sub(r"^Value error, ", "", error["msg"])


def load(path: str | Path) -> GateConfig:
    """Read and validate a gate config, or raise InputError naming each problem's line and field."""
    src = yamlsrc.load(path)
    if not isinstance(src.data, dict):
        raise InputError([src.problem((), "the gate config must be a mapping")])
    try:
        return GateConfig.model_validate(src.data)
    except ValidationError as exc:
        raise InputError([src.problem(tuple(e["loc"]), _message(e)) for e in exc.errors()]) from None
