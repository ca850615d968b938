"""The inventory: hosts, their gateways and front, the apps that share them.

Loaded from YAML, validated by pydantic for shape and by `_check_host` for the
rules that span fields. Every error names the file, line and field.
"""

from __future__ import annotations

import datetime
import fnmatch
import ipaddress
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from .. import yamlsrc
from ..constrained import MODES, ClientId, Mode, Name, Port
from ..errors import InputError, Problem

# IB's own conventions: the gateway listens on 4001 (live) / 4002 (paper);
# ib-gateway-docker relays them on 4003 / 4004, which users know as the front.
DEFAULT_API_PORT = {"live": 4001, "paper": 4002}
DEFAULT_FRONT_PORT = {"live": 4003, "paper": 4004}
# With front.gate: the front hands connections to `ibgw gate` on these, which relays to the gateway.
DEFAULT_GATE_PORT = {"live": 4101, "paper": 4102}
DEFAULT_GATE_METRICS_PORT = {"live": 9101, "paper": 9102}
Duration = Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")]
SECRET_KEY = re.compile(r"pass|secret|token", re.I)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# A version becomes a directory name under /opt/ibgw, a file a name in the cache: never `.` or `..`.
Version = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
PROBE_APP = "ibgw-health"  # the name of the health probe's entry in each gate's registry
MIN_HEAP_MB, MAX_HEAP_MB = 256, 64 * 1024
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _path(value: object) -> object:
    if isinstance(value, str) and any(not c.isprintable() for c in value):
        raise ValueError("a path must not hold control characters")
    return value


SafePath = Annotated[Path, BeforeValidator(_path)]


def _cidr(text: str) -> str:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"malformed CIDR {text!r}: {exc}") from None
    if network.version == 6 and network.subnet_of(IPV4_MAPPED):
        # The firewall and the front see IPv4 clients as IPv4: this would match no one.
        mapped = ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
        raise ValueError(
            f"{text!r} is an IPv4-mapped IPv6 network, which no IPv4 client matches; write {mapped}"
        )
    return str(network)


Cidr = Annotated[str, AfterValidator(_cidr)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """A secret kept on the operator machine: an environment variable or a file."""

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    file: SafePath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


def _no_plaintext(value: object) -> object:
    if isinstance(value, (str, int, float)):
        raise ValueError("plaintext secrets are not allowed in the inventory; use {env: VAR} or {file: PATH}")
    return value


class Login(Model):
    """The IB username and password, both by reference, never inline."""

    username: SecretRef
    password: SecretRef

    _plain = field_validator("username", "password", mode="before")(_no_plaintext)


def _single_line(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise ValueError("must be a single line (no line break or NUL)")
    return text


def _ibc_value(value: object) -> object:
    """YAML's booleans as IBC's yes/no, numbers as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if isinstance(value, int) else value


SingleLine = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_single_line)]
IbcValue = Annotated[SingleLine, BeforeValidator(_ibc_value)]
AmPmTime = Annotated[str, Field(pattern=r"^(0?[1-9]|1[0-2]):[0-5][0-9] (AM|PM)$")]  # IBC: hh:mm AM/PM
_IBC_KEYS_FILE = Path(__file__).parent.parent / "data" / "ibc_keys.txt"
IBC_KEYS = tuple(key for key in _IBC_KEYS_FILE.read_text().splitlines() if key and not key.startswith("#"))
# IBC keys ibgw renders itself: `ibc.extra` may not set them (the field that does, or why not).
IBC_OWNED = {
    "IbLoginId": "login.username",
    "IbPassword": "login.password",
    "TradingMode": "mode",
    "OverrideTwsApiPort": "api_port",
    "ReadOnlyApi": "ibc.read_only_api",
    "OverrideTwsMasterClientID": "ibc.master_client_id",
    "ExistingSessionDetectedAction": "ibc.existing_session_detected_action",
    "ReloginAfterSecondFactorAuthenticationTimeout": "ibc.relogin_after_twofa_timeout",
    "ExitAfterSecondFactorAuthenticationTimeout": "ibc.relogin_after_twofa_timeout",
    "SecondFactorDevice": "ibc.twofa_device",
    "AcceptBidAskLastSizeDisplayUpdateNotification": "ibc.accept_bid_ask_last_size_notification",
    "AutoRestartTime": "ibc.auto_restart_time",
    "AutoLogoffTime": "ibc.auto_logoff_time",
    "ColdRestartTime": "ibc.cold_restart_time",
    "AllowBlindTrading": "ibc.allow_blind_trading",
    "SaveTwsSettingsAt": "ibc.save_tws_settings_at",
    **{key: "ibc.bypass_warnings" for key in IBC_KEYS if key.startswith("Bypass")},
}
IBC_FIXED = {  # kept as ibgw sets them: the API gateway only, dialogs refused, no command server
    "FIX": "ibgw runs the API gateway, not the FIX gateway",
    "FIXLoginId": "ibgw runs no FIX gateway",
    "FIXPassword": "ibgw runs no FIX gateway",
    "IbDir": "ibgw passes the settings directory to ibcstart.sh (IBC: a different IbDir breaks auto-restart)",
    "AcceptIncomingConnectionAction": "API clients other than the trusted 127.0.0.1 are always rejected",
    **dict.fromkeys(
        ("CommandServerPort", "ControlFrom", "BindAddress", "CommandPrompt", "SuppressInfoMessages"),
        "IBC's command server stays off",
    ),
}


# The daily restarts of a host's gateways, staggered: two JVMs logging in at once on two vCPUs
# starve each other. Live first, paper 15 minutes later, both inside IB's nightly reset hours.
DAILY_RESTART = {"live": "11:40 PM", "paper": "11:55 PM"}
RESTART_SPACING_MIN = 10  # validate warns when two gateways of a host restart closer than this


class Ibc(Model):
    """IBC options, named after ib-gateway-docker's variables (lower-cased)."""

    # IBC allows one of the daily pair: set auto_logoff_time and the default restart time is dropped.
    auto_restart_time: AmPmTime | None = "11:59 PM"
    auto_logoff_time: AmPmTime | None = None
    # Every Sunday at HH:MM (24h, the gateway's time zone): a full login, 2FA included.
    cold_restart_time: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = None
    twofa_timeout_action: Literal["restart", "exit"] = "restart"
    relogin_after_twofa_timeout: StrictBool = True
    twofa_device: SingleLine | None = None
    existing_session_detected_action: Literal["primary", "primaryoverride", "secondary", "manual"] = "primary"
    accept_bid_ask_last_size_notification: Literal["accept", "defer", "ignore"] = "accept"
    read_only_api: StrictBool = False
    master_client_id: ClientId | None = None
    bypass_warnings: StrictBool | None = None  # None: the gateway's own precaution settings stay as they are
    allow_blind_trading: StrictBool = False
    save_tws_settings_at: (
        Annotated[
            SingleLine,
            Field(
                pattern=r"^(([0-9]{1,2}:[0-5][0-9])( +[0-9]{1,2}:[0-5][0-9])*"
                r"|Every [0-9]+( (mins|hours))?( [0-9]{1,2}:[0-5][0-9]){0,2})$"
            ),
        ]
        | None
    ) = None
    time_zone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")] = "America/New_York"
    extra: dict[str, IbcValue] = {}  # any other IBC key (data/ibc_keys.txt) -> value

    @model_validator(mode="before")
    @classmethod
    def _logoff_drops_default_restart(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("auto_logoff_time") is None or "auto_restart_time" in data:
            return data
        return {**data, "auto_restart_time": None}


class Simulator(Model):
    """Options for `ibgw sim` when the host's backend is `simulator`."""

    accounts: list[Annotated[str, Field(pattern=r"^[A-Z]{1,3}[0-9]{1,12}$")]] = []
    seed: StrictInt = 1
    # loopback: 127.0.0.1 only. all: every interface, as IB Gateway itself does (IBC issue #173),
    # so that the firewall, not the bind address, is what keeps the API port closed.
    listen: Literal["loopback", "all"] = "loopback"


def _heap(size: str) -> str:
    """-Xmx for IB Gateway: the JVM's size syntax, at least enough for it to log in."""
    match = re.fullmatch(r"([1-9][0-9]{0,6})([mMgG])", size)
    if not match:
        raise ValueError(f"java_heap must be a JVM size such as 768m or 2g, got {size!r}")
    mb = int(match[1]) * (1024 if match[2] in "gG" else 1)
    if not MIN_HEAP_MB <= mb <= MAX_HEAP_MB:
        raise ValueError(f"java_heap must be between {MIN_HEAP_MB}m and {MAX_HEAP_MB // 1024}g, got {size}")
    return size


HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


class TradingHours(Model):
    """When a live gateway is never restarted by ibgw unasked (default: US equities and options,
    regular session, with a margin for the apps that start early or flatten late)."""

    time_zone: Annotated[str, Field(pattern=r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")] = "America/New_York"
    days: list[Weekday] = ["Mon", "Tue", "Wed", "Thu", "Fri"]
    open: HHMM = "09:30"
    close: HHMM = "16:00"
    margin: Duration = "30m"  # before the open and after the close


class Gateway(Model):
    mode: Mode
    api_port: Port  # the gateway's own port on 127.0.0.1
    front_port: Port  # where apps connect, on the front
    gate_port: Port  # `ibgw gate` on 127.0.0.1, when front.gate is on
    gate_metrics_port: Port  # its Prometheus text, on 127.0.0.1
    login: Login | None = None
    ibc: Ibc = Ibc()
    java_heap: Annotated[str, AfterValidator(_heap)] = "768m"
    simulator: Simulator = Simulator()
    trading_hours: TradingHours = TradingHours()
    # When a restart left pending runs (24h, in ibc.time_zone): by default 5 min after the daily one.
    maintenance_time: HHMM | None = None

    def maintenance(self) -> str:
        """HH:MM of the maintenance window: set, or 5 min after the daily restart (or logoff)."""
        if self.maintenance_time:
            return self.maintenance_time
        daily = self.ibc.auto_restart_time or self.ibc.auto_logoff_time or "11:55 PM"
        at = datetime.datetime.strptime(daily, "%I:%M %p") + datetime.timedelta(minutes=5)
        return at.strftime("%H:%M")

    @model_validator(mode="before")
    @classmethod
    def _default_ports(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("mode") in MODES:
            mode = data["mode"]
            return {
                "api_port": DEFAULT_API_PORT[mode],
                "front_port": DEFAULT_FRONT_PORT[mode],
                "gate_port": DEFAULT_GATE_PORT[mode],
                "gate_metrics_port": DEFAULT_GATE_METRICS_PORT[mode],
                **data,
            }
        return data

    @model_validator(mode="before")
    @classmethod
    def _staggered_restart(cls, data: object) -> object:
        """Unless the inventory names a daily time, each mode restarts at its own (DAILY_RESTART)."""
        if not isinstance(data, dict) or data.get("mode") not in DAILY_RESTART:
            return data
        ibc = data.get("ibc") or {}
        if not isinstance(ibc, dict) or "auto_restart_time" in ibc or ibc.get("auto_logoff_time") is not None:
            return data
        return {**data, "ibc": {**ibc, "auto_restart_time": DAILY_RESTART[data["mode"]]}}


GATE_LIMITS = (
    "max_order_quantity",
    "allowed_sec_types",
    "max_cash_quantity",
    "max_notional_per_order",
    "max_orders_per_minute",
    "max_open_orders",
)


class App(Model):
    """One trading app: its client id, the modes it may use and where it connects from."""

    name: Name
    client_id: ClientId
    modes: list[Mode] = Field(min_length=1)
    sources: list[Cidr] = Field(min_length=1)
    read_only: StrictBool = False
    # Order limits, enforced by `ibgw gate` (front.gate: true), which refuses the same values.
    max_order_quantity: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    allowed_sec_types: list[Annotated[str, Field(pattern=r"^[A-Z]{2,6}$")]] | None = None
    # Risk limits and permissions, enforced by `ibgw gate` (README "The gate").
    max_cash_quantity: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    max_notional_per_order: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    max_orders_per_minute: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = None
    max_open_orders: Annotated[int, Field(strict=True, ge=1, le=10_000)] | None = None
    allow_settings: StrictBool = False  # updateConfig, replaceFA, setServerLogLevel, ...
    allow_global_cancel: StrictBool | None = None  # default: only for an app with no limit at all

    @model_validator(mode="after")
    def _permissions(self) -> App:
        if self.read_only and (self.allow_settings or self.allow_global_cancel):
            raise ValueError("a read_only app cannot have allow_settings or allow_global_cancel")
        return self

    @property
    def has_limits(self) -> bool:
        return any(getattr(self, f) is not None for f in GATE_LIMITS)

    @field_validator("name")
    @classmethod
    def _not_the_probe(cls, name: str) -> str:
        if name == PROBE_APP:
            raise ValueError(f"{PROBE_APP!r} is the name of `ibgw health`'s probe in the gate; pick another")
        return name

    @field_validator("allowed_sec_types")
    @classmethod
    def _some_sec_type(cls, types: list[str] | None) -> list[str] | None:
        if types == []:
            raise ValueError(
                "list at least one security type, or leave the key out to allow any "
                "(read_only: true allows no orders)"
            )
        return types


class Timeouts(Model):
    connect: Duration = "5s"
    client: Duration = "8h"
    server: Duration = "8h"


class Front(Model):
    """The TCP front apps connect to: HAProxy, or nginx's stream module."""

    kind: Literal["haproxy", "nginx"] = "haproxy"
    bind: str = "0.0.0.0"
    maxconn: StrictInt = Field(default=256, ge=1, le=100000)
    per_source_limit: StrictInt = Field(default=16, ge=1, le=10000)
    timeouts: Timeouts = Timeouts()
    metrics_port: Port = 8405  # HAProxy's Prometheus exporter, on 127.0.0.1 only
    gate: StrictBool = False  # relay through `ibgw gate`: client ids bound to apps, read-only, order audit
    tls: StrictBool = False  # apps connect over TLS 1.3 with a certificate of ibgw's app CA (needs gate)

    @field_validator("bind")
    @classmethod
    def _address(cls, bind: str) -> str:
        try:
            return str(ipaddress.ip_address(bind))
        except ValueError:
            raise ValueError(f"bind must be an IP address, got {bind!r}") from None


class Health(Model):
    """What `ibgw health` uses and how it judges."""

    # Reserved, with the next id: the probes on the host and through the front.
    probe_client_id: Annotated[StrictInt, Field(ge=0, le=2**31 - 2)] = 9998
    log_minutes: StrictInt = Field(default=15, ge=1, le=1440)
    disk_max_pct: StrictInt = Field(default=90, ge=1, le=100)
    restart_loop: StrictInt = Field(default=3, ge=1, le=1000)  # restarts within the last 10 minutes


class Firewall(Model):
    """nftables: SSH from admin CIDRs, front ports from app CIDRs, nothing else."""

    enabled: StrictBool = True
    admin_cidrs: list[Cidr] = []


# A jump host, as ssh -J takes it: [user@]host[:port]; host a name or an IPv4 address.
JUMP = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(?::[0-9]{1,5})?$")


def _jump(value: str) -> str:
    if not JUMP.match(value) or (":" in value and not 0 < int(value.rsplit(":", 1)[1]) < 65536):
        raise ValueError(f"a jump host is [user@]host[:port], got {value!r}")
    return value


Jump = Annotated[str, AfterValidator(_jump)]


class Ssh(Model):
    """How to log in. A key left out here comes from ssh_config (Host, HostName, User, Port,
    IdentityFile, ProxyJump, UserKnownHostsFile), then from these defaults."""

    user: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")] = "root"  # POSIX portable names
    port: Port = 22
    key: SafePath | None = None
    passphrase: SecretRef | None = None  # the key's, by reference
    known_hosts: SafePath = Path("~/.ssh/known_hosts")
    host_key: Literal["verify", "accept-new"] = "verify"
    jump: Jump | list[Jump] | None = None  # bastion(s), in order: the first is reached first

    _plain = field_validator("passphrase", mode="before")(_no_plaintext)

    @field_validator("jump")
    @classmethod
    def _jumps(cls, jump: str | list[str] | None) -> str | list[str] | None:
        if isinstance(jump, list) and not jump:
            raise ValueError("jump: list at least one host, or leave it out")
        return jump

    def jumps(self) -> tuple[str, ...]:
        return () if self.jump is None else (self.jump,) if isinstance(self.jump, str) else tuple(self.jump)


class Host(Model):
    address: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]+$")]
    ssh: Ssh = Ssh()
    backend: Literal["ibgw", "simulator"] = "ibgw"
    gateways: list[Gateway] = Field(min_length=1)
    apps: list[App] = []
    front: Front = Front()
    firewall: Firewall = Firewall()
    health: Health = Health()

    def gateway(self, mode: Mode) -> Gateway | None:
        return next((g for g in self.gateways if g.mode == mode), None)

    def apps_for(self, mode: Mode) -> list[App]:
        return [a for a in self.apps if mode in a.modes]


ArtifactFile = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")]  # a bare name


class Build(Model):
    """One architecture's installer."""

    file: ArtifactFile
    sha256: Sha256


class Artifact(Model):
    version: Version
    file: ArtifactFile  # the x86_64 installer (IBC's zip serves every architecture)
    sha256: Sha256
    arm64: Build | None = None  # IB Gateway's ...-standalone-linux-arm.sh, for aarch64 hosts


class Artifacts(Model):
    """Pinned installers, read from a local cache on the operator machine."""

    cache_dir: SafePath = Path("~/.cache/ibgw/artifacts")
    ib_gateway: Artifact | None = None
    ibc: Artifact | None = None

    def pinned(self) -> tuple[Artifact, Artifact]:
        """(IBC, IB Gateway), which load() requires for a host on the ibgw backend."""
        if self.ibc is None or self.ib_gateway is None:
            raise ValueError("the ibgw backend needs artifacts.ibc and artifacts.ib_gateway")
        return self.ibc, self.ib_gateway


class Pki(Model):
    """ibgw's app CA on the operator machine (`ibgw pki`); front.tls hosts get its files."""

    dir: SafePath | None = None  # default ~/.config/ibgw/pki/<the inventory file's name, without .yml>


class Inventory(Model):
    hosts: dict[Name, Host] = Field(min_length=1)
    groups: dict[Name, list[Name]] = {}
    artifacts: Artifacts = Artifacts()
    pki: Pki = Pki()
    _source: yamlsrc.Source | None = PrivateAttr(default=None)

    def problem(self, path: tuple, message: str) -> Problem:
        """A problem at a field of the file this inventory was loaded from."""
        return (
            self._source.problem(path, message)
            if self._source
            else Problem("<inventory>", None, str(path), message)
        )

    def path(self, path: Path) -> Path:
        """A path from the inventory: ~ expanded, relative to the inventory's own directory."""
        path = Path(path).expanduser()
        base = Path(self._source.file).parent if self._source else Path.cwd()
        return path if path.is_absolute() else base / path

    def pki_dir(self) -> Path:
        """The app CA's directory on the operator machine (pki.dir, or one per inventory)."""
        if self.pki.dir is not None:
            return self.path(self.pki.dir)
        name = Path(self._source.file).stem if self._source else "inventory"
        return Path("~/.config/ibgw/pki").expanduser() / name

    def pki_files(self, host: str) -> dict[str, Path]:
        """What a front.tls host gets from the pki directory (`ibgw pki` writes them there)."""
        directory = self.pki_dir()
        server = directory / "servers" / host
        return {
            "ca": directory / "ca.pem",
            "crl": directory / "crl.pem",
            "cert": server / "cert.pem",
            "key": server / "key.pem",
        }

    def select(self, pattern: str) -> list[str]:
        """Host names for HOST, GROUP, 'all' or a glob."""
        if pattern == "all":
            return list(self.hosts)
        if pattern in self.groups:
            return list(self.groups[pattern])
        return [h for h in self.hosts if fnmatch.fnmatchcase(h, pattern)]


def load(path: str | Path) -> Inventory:
    """Load and fully validate an inventory, or raise InputError naming every problem."""
    src = yamlsrc.load(path)
    if not isinstance(src.data, dict):
        raise InputError([src.problem((), "the inventory must be a mapping with a 'hosts' key")])
    try:
        inv = Inventory.model_validate(src.data)
    except ValidationError as exc:
        raise InputError([src.problem(tuple(e["loc"]), _message(e)) for e in exc.errors()]) from None
    problems = _check(inv, src)
    if problems:
        raise InputError(problems)
    inv._source = src
    return inv


def warnings(inv: Inventory) -> list[str]:
    """What the inventory asks that nothing would enforce (not errors: the host still works)."""
    found = []
    for name, host in inv.hosts.items():
        for i, app in enumerate(host.apps):
            where = f"hosts.{name}.apps[{i}] ({app.name})"
            open_modes = [m for m in app.modes if (gw := host.gateway(m)) and not gw.ibc.read_only_api]
            if not host.front.gate and app.read_only and open_modes:
                found.append(
                    f"{where}: read_only is enforced only by `ibgw gate` (front.gate: true) or a "
                    f"read-only gateway; its orders reach the {' and '.join(open_modes)} "
                    f"gateway{'s' if len(open_modes) > 1 else ''}"
                )
            if not host.front.gate and app.has_limits:
                found.append(f"{where}: order limits are enforced only by `ibgw gate` (front.gate: true)")
        found += _restart_clashes(name, host)
    return found


def _restart_clashes(name: str, host: Host) -> list[str]:
    """Two gateways of one host restarting daily within RESTART_SPACING_MIN minutes of each other."""
    times = [(gw.mode, _utc_minute(gw.ibc.auto_restart_time, gw.ibc.time_zone)) for gw in host.gateways]
    found = []
    for i, (mode_a, a) in enumerate(times):
        for mode_b, b in times[i + 1 :]:
            if a is None or b is None:
                continue
            apart = min((a - b) % 1440, (b - a) % 1440)
            if apart < RESTART_SPACING_MIN:
                found.append(
                    f"hosts.{name}: the {mode_a} and {mode_b} gateways restart daily {apart} min apart "
                    f"(ibc.auto_restart_time); keep them {RESTART_SPACING_MIN} min or more apart"
                )
    return found


def _utc_minute(ampm: str | None, zone: str) -> int | None:
    """hh:mm AM/PM in `zone`, as minutes after midnight UTC (today's offset)."""
    if ampm is None:
        return None
    clock = datetime.datetime.strptime(ampm, "%I:%M %p").time()
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    local = datetime.datetime.combine(datetime.date.today(), clock, tzinfo=tz)
    utc = local.astimezone(datetime.timezone.utc)
    return utc.hour * 60 + utc.minute


def _message(error: ErrorDetails) -> str:
    msg = re.sub(r"^Value error, ", "", error["msg"])
    if error["type"] == "extra_forbidden":
        if SECRET_KEY.search(str(error["loc"][-1])):
            return (
                "plaintext secrets are not allowed in the inventory; "
                "use login: {username: ..., password: ...} with {env: VAR} or {file: PATH}"
            )
        return "unknown field (check its spelling)"
    return msg


def _check(inv: Inventory, src: yamlsrc.Source) -> list[Problem]:
    problems: list[Problem] = []
    for name, members in inv.groups.items():
        for i, member in enumerate(members):
            if member not in inv.hosts:
                problems.append(src.problem(("groups", name, i), f"no host named {member!r}"))
    for name, host in inv.hosts.items():
        problems += _check_host(inv, name, host, src)
    return problems


def _check_host(inv: Inventory, name: str, host: Host, src: yamlsrc.Source) -> list[Problem]:
    base = ("hosts", name)
    found: list[tuple[tuple, str]] = []
    found += _check_gateways(host, base)
    found += _check_apps(host, base)
    found += _check_ports(host, base)
    if host.front.tls and not host.front.gate:
        found.append((base + ("front", "tls"), "front.tls is terminated by ibgw gate: set front.gate: true"))
    if host.firewall.enabled and not host.firewall.admin_cidrs:
        found.append(
            (
                base + ("firewall", "admin_cidrs"),
                "the firewall is on but no admin CIDR may reach SSH; "
                "list the operator's addresses, or set firewall.enabled: false",
            )
        )
    if host.backend == "ibgw":
        found += [
            (
                ("artifacts", kind),
                f"host {name!r} uses the ibgw backend, which needs a pinned {kind} installer",
            )
            for kind in ("ib_gateway", "ibc")
            if getattr(inv.artifacts, kind) is None
        ]
    return [src.problem(path, msg) for path, msg in found]


def _check_gateways(host: Host, base: tuple) -> list[tuple[tuple, str]]:
    found, seen = [], set()
    for i, gw in enumerate(host.gateways):
        path = base + ("gateways", i)
        if gw.mode in seen:
            found.append((path + ("mode",), f"a {gw.mode} gateway is already defined on this host"))
        seen.add(gw.mode)
        if host.backend == "ibgw" and gw.login is None:
            found.append(
                (
                    path + ("login",),
                    "missing secret reference: the ibgw backend needs login.username "
                    "and login.password, each as {env: VAR} or {file: PATH}",
                )
            )
        found += _check_ibc(gw.ibc, path + ("ibc",))
        if gw.ibc.master_client_id in (host.health.probe_client_id, host.health.probe_client_id + 1):
            found.append(
                (
                    path + ("ibc", "master_client_id"),
                    f"client id {gw.ibc.master_client_id} is `ibgw health`'s probe (health.probe_client_id): "
                    "a master client id receives every app's orders",
                )
            )
        prefix = "DU" if gw.mode == "paper" else "U"
        for j, account in enumerate(gw.simulator.accounts):
            if not account.startswith(prefix):
                found.append(
                    (
                        path + ("simulator", "accounts", j),
                        f"a {gw.mode} account must start with {prefix!r}, got {account!r}",
                    )
                )
    return found


def _check_ibc(ibc: Ibc, path: tuple) -> list[tuple[tuple, str]]:
    """What IBC itself would ignore or contradict: both daily times, restart without re-login, extra keys."""
    found = []
    if ibc.auto_logoff_time and ibc.auto_restart_time:
        found.append(
            (
                path + ("auto_logoff_time",),
                "IBC applies only one of auto_restart_time and "
                "auto_logoff_time (it ignores the logoff time); remove one",
            )
        )
    if ibc.twofa_timeout_action == "restart" and not ibc.relogin_after_twofa_timeout:
        found.append(
            (
                path + ("twofa_timeout_action",),
                "'restart' needs relogin_after_twofa_timeout: true "
                "(IBC exits to be restarted only when re-login is allowed); use 'exit' to wait at "
                "the 2FA dialog",
            )
        )
    for key in ibc.extra:
        if key in IBC_OWNED:
            found.append((path + ("extra", key), f"{key} is set by ibgw: use {IBC_OWNED[key]}"))
        elif key in IBC_FIXED:
            found.append((path + ("extra", key), f"{key} is fixed by ibgw: {IBC_FIXED[key]}"))
        elif key not in IBC_KEYS:
            found.append(
                (
                    path + ("extra", key),
                    f"{key} is not an IBC setting (see IBC's config.ini; keys are case-sensitive)",
                )
            )
    return found


def _check_apps(host: Host, base: tuple) -> list[tuple[tuple, str]]:
    found: list[tuple[tuple, str]] = []
    names: dict[str, int] = {}
    owner: dict[tuple[str, int], str] = {}  # (mode, client_id) -> app name
    provided = {g.mode for g in host.gateways}
    for i, app in enumerate(host.apps):
        path = base + ("apps", i)
        if app.name in names:
            found.append(
                (path + ("name",), f"app name {app.name!r} is already used by apps[{names[app.name]}]")
            )
        names.setdefault(app.name, i)
        if app.client_id in (host.health.probe_client_id, host.health.probe_client_id + 1):
            found.append(
                (
                    path + ("client_id",),
                    f"client_id {app.client_id} is reserved for `ibgw health`'s "
                    "probe (health.probe_client_id)",
                )
            )
        for j, mode in enumerate(app.modes):
            if mode not in provided:
                found.append(
                    (
                        path + ("modes", j),
                        f"no {mode} gateway on this host (it has: {', '.join(sorted(provided))})",
                    )
                )
            key = (mode, app.client_id)
            if key in owner:
                found.append(
                    (
                        path + ("client_id",),
                        f"client_id {app.client_id} is already used by app "
                        f"{owner[key]!r} on the {mode} gateway",
                    )
                )
            owner.setdefault(key, app.name)
    return found


def _check_ports(host: Host, base: tuple) -> list[tuple[tuple, str]]:
    found: list[tuple[tuple, str]] = []
    used: dict[int, str] = {host.ssh.port: "ssh.port"}
    if host.front.kind == "haproxy":
        used[host.front.metrics_port] = "front.metrics_port"
    keys = ("api_port", "front_port") + (("gate_port", "gate_metrics_port") if host.front.gate else ())
    for i, gw in enumerate(host.gateways):
        for key in keys:
            port, here = getattr(gw, key), f"gateways[{i}].{key}"
            if port in used:
                found.append((base + ("gateways", i, key), f"port {port} collides with {used[port]}"))
            used.setdefault(port, here)
    return found
