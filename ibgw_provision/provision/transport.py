"""SSH to a host: verified host keys at every hop, counted round trips.

Fabric's Connection resolves each hop from ssh_config (Host aliases, HostName,
User, Port, IdentityFile, ProxyJump) and chains jump hosts (gateway=). The
hot path is one exec channel on the final paramiko transport: a no-op run is
one connection per hop and one command.

Host keys are checked against known_hosts at every hop, the bastion too. An
unknown host is refused unless the operator opts in to trust-on-first-use
(ssh's accept-new), which appends one line; the file is never rewritten. A
key that changed is always refused. Every failure is one SshError line.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import paramiko
from fabric import Config, Connection
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
DEFAULT_KEEPALIVE = 30  # seconds; ssh_config's ServerAliveInterval wins
_APPEND_LOCK = threading.Lock()  # parallel hosts may accept-new into one file
# paramiko logs socket errors (with tracebacks) at ERROR; without a handler Python would print them
# on stderr beside our one-line reason. A program that configures logging still gets them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class SshError(Exception):
    """A one-line reason a host could not be reached or used."""


@dataclass(frozen=True)
class Target:
    """Where and how to connect. None means: from ssh_config, else OpenSSH's default (user: root)."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    key: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    jump: tuple[str, ...] | None = None  # None: ssh_config's ProxyJump; (): none
    ssh_config: Path | None = None  # None: ~/.ssh/config if it exists
    passphrase: Callable[[Path], str] | None = field(default=None, repr=False, compare=False)
    become_password: str | None = field(default=None, repr=False, compare=False)
    timeout: float = 15


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class _Connection(Connection):
    """Fabric's Connection, whose jump channel gives up after the connect timeout (Fabric waits an hour)."""

    def open_gateway(self):
        self.gateway.open()
        return self.gateway.transport.open_channel(
            "direct-tcpip", (self.host, int(self.port)), ("", 0), timeout=self.connect_timeout
        )


@dataclass
class _Hop:
    conn: Connection
    label: str  # "admin@198.18.0.2:22", or "jump host 1 (admin@...)"
    known_hosts: KnownHosts
    keepalive: int
    key: Path | None = None  # the first identity, named when authentication fails


class KnownHosts:
    """An OpenSSH known_hosts file, read as is: plain and hashed (|1|) lines, @cert-authority and
    @revoked markers, comments. Only ever appended to."""

    def __init__(self, path: Path):
        self.path = path
        self.keys = paramiko.HostKeys()
        self.authorities: list[HostKeyEntry] = []  # @cert-authority: paramiko cannot verify host certs
        self.revoked: list[paramiko.PKey] = []
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise SshError(f"cannot read known_hosts {path}: {exc.strerror}") from None
        for line in lines:
            self._add(line.strip())

    def _add(self, line: str) -> None:
        if not line or line.startswith("#"):
            return
        marker = line.split(None, 1)[0] if line.startswith("@") else ""
        try:
            entry = HostKeyEntry.from_line(line.split(None, 1)[1] if marker else line)
        except (InvalidHostKey, paramiko.SSHException, ValueError, IndexError):
            return  # a line paramiko cannot read (a key type it lacks) is skipped, as ssh does
        if entry is None:
            return
        if marker == "@cert-authority":
            self.authorities.append(entry)
        elif marker == "@revoked":
            self.revoked.append(entry.key)
        elif not marker:
            self.keys._entries.append(entry)  # type: ignore[attr-defined]  # keeps hashed names; HostKeys.lookup matches them

    def has_authority_for(self, hostname: str) -> bool:
        probe = paramiko.HostKeys()
        probe._entries = list(self.authorities)  # type: ignore[attr-defined]
        return probe.lookup(hostname) is not None or any(
            _pattern_match(hostname, h) for e in self.authorities for h in e.hostnames
        )

    def append(self, hostname: str, key: paramiko.PKey) -> None:
        """One line in OpenSSH's format at the end; comments and other lines stay as they are."""
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _APPEND_LOCK:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                needs_newline = size > 0 and _last_byte(self.path) != b"\n"
                os.write(fd, (b"\n" if needs_newline else b"") + line.encode())
            finally:
                os.close(fd)
        self.keys.add(hostname, key.get_name(), key)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def _pattern_match(hostname: str, pattern: str) -> bool:
    """A known_hosts pattern (only * and ? are wildcards; a negation never grants) against a host
    or [host]:port."""
    if pattern.startswith("!"):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, hostname) is not None


class _Verify(paramiko.MissingHostKeyPolicy):
    """Called when known_hosts has no key of the offered type for the host."""

    def __init__(self, known: KnownHosts, accept_new: bool, label: str):
        self.known, self.accept_new, self.label = known, accept_new, label

    def missing_host_key(self, client, hostname, key):
        if key in self.known.revoked:
            raise SshError(f"{self.label}: host key is marked @revoked in {self.known.path}: refusing")
        if self.known.keys.lookup(hostname):
            raise SshError(
                f"{self.label}: host offered a {key.get_name()} key, but {self.known.path} has "
                f"another key type for {hostname}: refusing (possible man-in-the-middle)"
            )
        if self.known.has_authority_for(hostname):
            raise SshError(
                f"{self.label}: {self.known.path} trusts this host only through @cert-authority; "
                "host certificates are not supported: add the host's plain key"
            )
        if not self.accept_new:
            raise SshError(
                f"{self.label}: unknown host key (not in {self.known.path}); verify it and add it, "
                "or pass --accept-new-host-key for first contact"
            )
        self.known.append(hostname, key)


class Transport:
    def __init__(self, target: Target, connect_timeout: float | None = None):
        self.target = target
        self.connect_timeout = connect_timeout or target.timeout
        self.round_trips = 0
        self.jumps = 0  # jump hosts on the way, known once connect() has resolved the hops
        self.last_jump: str | None = None  # the last one's label ("jump host 1 (root@...:22)")
        self.resolved = False  # whether the hops were worked out (ssh_config read, keys loaded)
        self.address: str | None = None  # the host's address as the last hop resolved it
        self._hops: list[_Hop] = []
        self._jumps_only = False  # connect(keep_jumps=True) failed at the host: its jump hosts stay open

    def __enter__(self) -> Transport:
        if not self._hops:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self, keep_jumps: bool = False) -> None:
        """Open each hop in turn, the bastion first; a failure names its hop. keep_jumps: when only
        the host itself fails, its jump hosts stay open (forward_from_jump) until close()."""
        self.close()
        self._hops = _hops(self.target, self.connect_timeout)
        self.resolved = True
        self.jumps = len(self._hops) - 1
        self.last_jump = self._hops[-2].label if self.jumps else None
        self.address = self._hops[-1].conn.host  # HostName from ssh_config, else the address
        for i, hop in enumerate(self._hops):
            via = f" (via {self._hops[i - 1].label})" if i else ""
            try:
                _open(hop, self.target.accept_new)
            except SshError as exc:
                if keep_jumps and self.jumps and i == self.jumps:
                    hop.conn.client.close()
                    self._jumps_only = True
                else:
                    self.close()
                raise SshError(f"{exc}{via}") from None

    def close(self) -> None:
        for hop in reversed(self._hops):
            hop.conn.client.close()
        self._hops = []
        self._jumps_only = False

    @property
    def jump_open(self) -> bool:
        """Whether the last jump host's connection is open (the host's own may have failed)."""
        return self.jumps > 0 and len(self._hops) > 1

    @property
    def hops(self) -> int:
        return len(self._hops)

    @property
    def login_user(self) -> str:
        """Who we log in as on the host (from ssh_config when neither CLI nor inventory says)."""
        return self._hops[-1].conn.user if self._hops else self.target.user or "root"

    def _connected(self) -> paramiko.SSHClient:
        if not self._hops or self._jumps_only:
            raise SshError(f"{self.target.name}: not connected")
        return self._hops[-1].conn.client

    def _ssh(self) -> paramiko.Transport:
        transport = self._connected().get_transport()
        if transport is None:  # an inactive one fails in paramiko, which says why
            raise SshError(f"{self.target.name}: connection lost")
        return transport

    def run(
        self,
        command: str,
        stdin: bytes = b"",
        on_line: Callable[[str], None] | None = None,
        timeout: float = 1800,
    ) -> Result:
        """Run one command, feeding stdin; one round trip. on_line sees stdout lines as they come."""
        self.round_trips += 1
        chan: paramiko.Channel | None = None
        try:
            chan = self._ssh().open_session()
            chan.exec_command(command)
            self._feed(chan, stdin)
            out, err = self._drain(chan, on_line, time.monotonic() + timeout, command)
            return Result(chan.recv_exit_status(), out, err)
        except (paramiko.SSHException, OSError, EOFError) as exc:  # EOFError: paramiko's closed socket
            raise SshError(f"{self.target.name}: connection lost: {_reason(exc)}") from None
        finally:
            if chan is not None:
                chan.close()

    @staticmethod
    def _feed(chan: paramiko.Channel, stdin: bytes) -> None:
        """Send stdin. A command that ends before reading it all (a forced command that refuses the
        login) closes the channel: what it said and its exit status still tell why."""
        try:
            chan.sendall(stdin)
            chan.shutdown_write()
        except OSError:
            if not chan.exit_status_ready():
                raise

    def _drain(self, chan, on_line, deadline: float, command: str) -> tuple[str, str]:
        out, err, pending = bytearray(), bytearray(), b""
        while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
            if time.monotonic() > deadline:
                raise SshError(f"{self.target.name}: timed out running {command.split()[0]}")
            select.select([chan], [], [], 0.5)
            while chan.recv_ready():
                data = chan.recv(65536)
                out += data
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line and on_line(line.decode("utf-8", "replace"))
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        if pending and on_line:  # a last line without a newline (a forced command's message)
            on_line(pending.decode("utf-8", "replace"))
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def forward(self, host: str, port: int) -> socket.socket:
        """A local socket connected to host:port as seen from the remote host (ssh -L, one connection)."""
        return self._forward(self._ssh(), host, port, "on the host")

    def forward_from_jump(self, host: str, port: int) -> socket.socket:
        """A local socket connected to host:port by the last jump host, as ssh -J connects to the
        host: the connection's source is the jump host. Only when the host is reached through one."""
        if self.jumps < 1:
            raise SshError(f"{self.target.name}: not reached through a jump host")
        if not self.jump_open:
            raise SshError(f"{self.target.name}: not connected through the jump host")
        hop = self._hops[-2]
        transport = hop.conn.client.get_transport()
        if transport is None:
            raise SshError(f"{hop.label}: connection lost")
        return self._forward(transport, host, port, f"from {hop.label}")

    def _forward(self, transport: paramiko.Transport, host: str, port: int, where: str) -> socket.socket:
        self.round_trips += 1
        try:
            chan = transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(
                f"{self.target.name}: cannot reach {host}:{port} {where}: {_reason(exc)}"
            ) from None
        ours, theirs = socket.socketpair()
        threading.Thread(target=_pump, args=(chan, theirs), daemon=True).start()
        return ours

    def stream(self, command: str, stdin: bytes) -> socket.socket:
        """A local socket joined to a command's stdin and stdout (like ssh -W), after `stdin` is sent;
        the command ends when the socket is closed."""
        self.round_trips += 1
        try:
            chan = self._ssh().open_session()
            chan.exec_command(command)
            chan.sendall(stdin)
        except (paramiko.SSHException, OSError) as exc:
            raise SshError(f"{self.target.name}: connection lost: {_reason(exc)}") from None
        ours, theirs = socket.socketpair()
        threading.Thread(target=_pump, args=(chan, theirs), daemon=True).start()
        return ours

    def stage(self, files: list[Path]) -> tuple[str, list[str]]:
        """Upload files as the login user into a fresh private directory (0700) under its home, over one
        SFTP session; a round trip per file. Returns the directory and each file's path in it."""
        name = f".ibgw-upload-{os.urandom(8).hex()}"
        try:
            with self._connected().open_sftp() as sftp:
                sftp.mkdir(name, 0o700)  # fails if it exists: never into someone else's directory
                sftp.chmod(name, 0o700)  # whatever the sftp server's umask
                stage = sftp.normalize(name)
                remote = []
                for i, local in enumerate(files):
                    self.round_trips += 1
                    path = f"{stage}/{i}-{local.name}"
                    sftp.put(str(local), path)
                    remote.append(path)
                return stage, remote
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"{self.target.name}: upload failed: {_reason(exc)}") from None

    def put_many(self, files: list[tuple[Path, str]]) -> None:
        """Copy files over one SFTP session, creating parent directories; a round trip per file.
        Only for a login user that may write there (root); provisioning stages and lets the agent move."""
        try:
            with self._connected().open_sftp() as sftp:
                for local, remote in files:
                    self.round_trips += 1
                    _makedirs(sftp, str(PurePosixPath(remote).parent))
                    sftp.put(str(local), remote)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"{self.target.name}: upload failed: {_reason(exc)}") from None


# ---- hops --------------------------------------------------------------------------------------


def load_ssh_config(path: Path | None) -> paramiko.SSHConfig:
    """The given ssh_config file, else ~/.ssh/config if it exists, else none."""
    explicit = path is not None
    path = Path(path or DEFAULT_SSH_CONFIG).expanduser()
    if not explicit and not path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except OSError as exc:
        raise SshError(f"cannot read ssh config {path}: {exc.strerror}") from None
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise SshError(f"ssh config {path}: {_reason(exc)}") from None


def final_port(t: Target) -> tuple[int, str]:
    """The port the last hop connects to, and who said so: the target (the inventory's ssh.port),
    ssh_config's Port, or OpenSSH's default. Read without connecting."""
    if t.port is not None:
        return t.port, "ssh.port"
    port = load_ssh_config(t.ssh_config).lookup(t.address).get("port")
    try:
        return (int(port), "ssh_config") if port else (22, "default")
    except ValueError:
        raise SshError(f"{t.name}: bad Port in ssh config: {port}") from None


def _hops(t: Target, timeout: float) -> list[_Hop]:
    """The jump hosts (in ProxyJump order: the first is connected to first), then the target."""
    config = Config(ssh_config=load_ssh_config(t.ssh_config))
    look = config.base_ssh_config.lookup(t.address)
    jumps = t.jump if t.jump is not None else _proxyjump(look.get("proxyjump"))
    hops: list[_Hop] = []
    try:
        for i, spec in enumerate(jumps):
            conn = _Connection(
                spec,
                config=config,
                gateway=hops[-1].conn if hops else False,
                connect_timeout=max(1, round(timeout)),
            )
            hops.append(_hop(conn, t, f"jump host {i + 1} ({conn.user}@{conn.host}:{conn.port})", timeout))
        conn = _Connection(
            t.address,
            user=t.user or look.get("user") or "root",
            port=t.port or int(look.get("port", 22)),
            config=config,
            gateway=hops[-1].conn if hops else False,
            connect_timeout=max(1, round(timeout)),
        )
    except ValueError as exc:  # a malformed hop ("user@host:port") or port
        raise SshError(f"{t.name}: bad ssh host or jump: {_reason(exc)}") from None
    hops.append(_hop(conn, t, f"{conn.user}@{conn.host}:{conn.port}", timeout))
    return hops


def preload_keys(t: Target) -> None:
    """Load each hop's key now, before any progress display: a passphrase prompt (once per key)
    then has the terminal to itself. Errors come back, one line each, when connecting."""
    try:
        _hops(t, t.timeout)
    except SshError:
        pass


def _proxyjump(value: str | None) -> tuple[str, ...]:
    if not value or value.strip().lower() == "none":
        return ()
    return tuple(h.strip() for h in value.split(",") if h.strip())


def _hop(conn: Connection, t: Target, label: str, timeout: float) -> _Hop:
    cfg = conn.ssh_config
    known = t.known_hosts or _first(cfg.get("userknownhostsfile")) or DEFAULT_KNOWN_HOSTS
    identities = [Path(p).expanduser() for p in cfg.get("identityfile", [])]
    identities = ([t.key] if t.key else []) + [p for p in identities if p.exists() and p != t.key]
    only = str(cfg.get("identitiesonly", "no")).lower() == "yes"
    kwargs: dict = {
        "allow_agent": not only or not identities,
        "look_for_keys": not identities,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
    }
    if identities:  # the first is loaded here, for clear errors and the passphrase; paramiko tries the rest
        kwargs["pkey"], passphrase = _load_key(identities[0], t.passphrase)
        kwargs["key_filename"] = [str(p) for p in identities[1:]]
        if passphrase:
            kwargs["passphrase"] = passphrase
    conn.connect_kwargs = kwargs
    keepalive = int(cfg.get("serveraliveinterval", DEFAULT_KEEPALIVE))
    return _Hop(
        conn, label, KnownHosts(Path(known).expanduser()), keepalive, identities[0] if identities else None
    )


def _first(value) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value.split()[0] if value else None


def _open(hop: _Hop, accept_new: bool) -> None:
    conn, where = hop.conn, hop.label
    conn.client._host_keys = hop.known_hosts.keys  # paramiko compares, and prefers the known key type
    conn.client.set_missing_host_key_policy(_Verify(hop.known_hosts, accept_new, where))
    try:
        conn.open()
    except SshError:
        raise
    except paramiko.BadHostKeyException:
        raise SshError(
            f"{where}: host key does not match {hop.known_hosts.path}: refusing (possible "
            "man-in-the-middle); if the host was rebuilt, remove its old entry"
        ) from None
    except paramiko.AuthenticationException:
        raise SshError(
            f"{where}: authentication failed with key {hop.key}"
            if hop.key
            else f"{where}: authentication failed (no key given: the SSH agent and ~/.ssh keys were tried)"
        ) from None
    except paramiko.ChannelException as exc:  # the previous hop could not reach this one
        raise SshError(f"{where}: unreachable from the jump host: {_reason(exc)}") from None
    except paramiko.SSHException as exc:
        if "opening channel" in str(exc):  # a jump channel that timed out
            raise SshError(f"{where}: unreachable from the jump host: timed out") from None
        raise SshError(f"{where}: {_reason(exc)}") from None
    except (TimeoutError, OSError, EOFError) as exc:
        raise SshError(f"{where}: unreachable: {_reason(exc)}") from None
    transport = conn.client.get_transport()
    if transport is not None and hop.keepalive > 0:
        transport.set_keepalive(hop.keepalive)


# ---- keys --------------------------------------------------------------------------------------

_PASSPHRASES: dict[Path, str] = {}
_PASSPHRASE_LOCK = threading.Lock()


def _load_key(path: Path, ask: Callable[[Path], str] | None) -> tuple[paramiko.PKey, str | None]:
    """The private key at path; a passphrase from `ask` when it is encrypted. One line on any failure."""
    try:
        return paramiko.PKey.from_path(path), None
    except OSError as exc:
        raise SshError(f"cannot load SSH key {path}: {exc.strerror or _reason(exc)}") from None
    except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "password-protected"
        pass
    except (paramiko.SSHException, ValueError) as exc:
        raise SshError(f"cannot load SSH key {path}: {_reason(exc)}") from None
    with _PASSPHRASE_LOCK:  # one prompt per key, whatever the number of hosts
        passphrase = _PASSPHRASES.get(path)
        if passphrase is None:
            if ask is None:
                raise SshError(
                    f"SSH key {path} is protected by a passphrase: set IBGW_SSH_PASSPHRASE, "
                    "ssh.passphrase, or run on a terminal"
                )
            passphrase = ask(path)
        try:
            key = paramiko.PKey.from_path(path, passphrase.encode())  # type: ignore[arg-type]  # bytes, in fact
        except (paramiko.SSHException, ValueError, TypeError):
            raise SshError(f"wrong passphrase for SSH key {path}") from None
        _PASSPHRASES[path] = passphrase
    return key, passphrase


GONE = (OSError, EOFError, paramiko.SSHException)  # what paramiko raises once its transport has closed


def _pump(chan: paramiko.Channel, sock: socket.socket) -> None:
    """Copy bytes both ways between an SSH channel and a socket until either side closes."""
    try:
        while True:
            both: list[paramiko.Channel | socket.socket] = [chan, sock]
            readable, _, _ = select.select(both, [], [], 1.0)
            if chan in readable:
                data = chan.recv(65536)
                if not data:
                    break
                sock.sendall(data)
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    break
                chan.sendall(data)
    except GONE:  # either side gone
        pass
    finally:
        sock.close()
        try:
            chan.close()  # paramiko writes a close message: the transport may be gone already
        except GONE:
            pass


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        _makedirs(sftp, str(PurePosixPath(path).parent))
        sftp.mkdir(path, 0o755)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
