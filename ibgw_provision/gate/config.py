"""The gate's configuration file (rendered from the inventory, one file per mode).

Validated by pydantic with unknown keys refused; every error names the file, line and field.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
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

MAX_NODES = 2_000_000  # YAML values in a gate config: about 150,000 apps (an inventory allows fewer)
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


PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
LIMITS = (
    "max_order_quantity",
    "allowed_sec_types",
    "max_cash_quantity",
    "max_notional_per_order",
    "max_orders_per_minute",
    "max_open_orders",
)


class App(Model):
    """One trading app allowed on this gate's gateway."""

    name: Name
    client_id: ClientId
    sources: list[Annotated[Network, BeforeValidator(_network)]] = Field(min_length=1)
    read_only: StrictBool
    max_order_quantity: PositiveDecimal | None = None
    allowed_sec_types: (
        list[Annotated[str, BeforeValidator(_sec_type), Field(pattern=r"^[A-Z]{2,8}$")]] | None
    ) = Field(default=None, min_length=1)
    # Risk limits (see README "The gate"); each optional.
    max_cash_quantity: PositiveDecimal | None = None
    max_notional_per_order: PositiveDecimal | None = None
    max_orders_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_open_orders: Annotated[int, Field(ge=1, le=10_000)] | None = None
    # Permissions: settings requests (updateConfig, replaceFA, ...) and reqGlobalCancel.
    allow_settings: StrictBool = False
    allow_global_cancel: StrictBool | None = None  # None: on only for an app with no limit at all
    # ibgw health's front probe: it may log on and ask the time, nothing else (no account data).
    probe_only: StrictBool = False

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.sources)

    @property
    def limited(self) -> bool:
        """Read-only, or any order or risk limit set."""
        return self.read_only or any(getattr(self, name) is not None for name in LIMITS)

    @property
    def global_cancel_allowed(self) -> bool:
        return (not self.limited) if self.allow_global_cancel is None else self.allow_global_cancel

    @model_validator(mode="after")
    def _permissions(self) -> App:
        if self.read_only and (self.allow_settings or self.allow_global_cancel):
            raise ValueError("a read_only app cannot have allow_settings or allow_global_cancel")
        if self.probe_only and not self.read_only:
            raise ValueError("a probe_only app must be read_only")
        return self


class FrontSocket(Model):
    """The unix socket the front reaches the gate on: the only place a PROXY header is trusted."""

    path: Path
    group: Annotated[str, Field(min_length=1)] | None = None  # the front's group; None keeps the gate's


class Lobby(Model):
    """Bounds on connections that have not yet been admitted (nothing of theirs reaches the gateway)."""

    per_source: Annotated[int, Field(ge=1, le=65536)] = 8
    total: Annotated[int, Field(ge=1, le=65536)] = 256
    max_frame: Annotated[int, Field(ge=256, le=65536)] = 4096  # START_API's largest accepted frame


class TlsFiles(Model):
    """front.tls: the gate terminates TLS and requires a client certificate from ibgw's app CA."""

    ca: Path  # the app CA's certificate (PEM)
    crl: Path | None = None  # the CA's revocation list (PEM); checked for each app's certificate
    cert: Path  # the front's server certificate (PEM)
    key: Path  # its private key (PEM, readable by the gate's user only)


class GateConfig(Model):
    mode: Mode
    listen: Endpoint | None  # TCP, for direct use: a PROXY header there is never trusted
    front_socket: FrontSocket | None = None
    upstream: Upstream
    lobby: Lobby = Lobby()
    audit_db: Path
    admin_socket: Path
    metrics: Endpoint | None = None
    tls: TlsFiles | None = None
    handshake_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    max_frame: Annotated[int, Field(ge=MAX_HELLO, le=MAX_FRAME)] = MAX_FRAME  # as ibapi: payload <= 0xFFFFFF
    client_buffer: Annotated[int, Field(ge=4096, le=2**31)] = 1024 * 1024
    probe_client_id: ClientId | None = None  # the start-up probe's logon (paper/live interlock)
    apps: list[App]

    @model_validator(mode="after")
    def _some_listener(self) -> GateConfig:
        if self.listen is None and self.front_socket is None:
            raise ValueError("give listen, front_socket or both")
        return self

    @model_validator(mode="after")
    def _unique_apps(self) -> GateConfig:
        for key in ("name", "client_id"):
            counts = Counter(getattr(app, key) for app in self.apps)  # linear: gates with many apps load fast
            duplicates = sorted((v for v, n in counts.items() if n > 1), key=str)
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
    src = yamlsrc.load(path, max_nodes=MAX_NODES)
    if not isinstance(src.data, dict):
        raise InputError([src.problem((), "the gate config must be a mapping")])
    try:
        return GateConfig.model_validate(src.data)
    except ValidationError as exc:
        raise InputError([src.problem(tuple(e["loc"]), _message(e)) for e in exc.errors()]) from None
