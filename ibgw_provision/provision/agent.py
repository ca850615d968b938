"""The remote half of ibgw: read facts, apply steps. Standard library only.

Sent over SSH on stdin and run by the host's python3 (never written to disk,
never in argv), it answers one JSON request with JSON lines on stdout: events
while applying, then a final {"result": ...}. Every step is idempotent, and a
file is replaced only by an atomic rename after its validator accepts it.
"""

import base64
import collections
import ctypes
import errno
import fcntl
import glob
import grp
import hashlib
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat as statmod
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

# The same as layout.PRIVILEGED_GROUPS and layout.REMOVABLE (a test checks): this file runs alone on the host.
PRIVILEGED_GROUPS = ("sudo", "adm", "wheel", "root")
REMOVABLE = (
    "/etc/ibgw",
    "/opt/ibgw",
    "/var/lib/ibgw",
    "/var/log/ibgw",
    "/etc/systemd/system/ibgw-",
    "/etc/logrotate.d/ibgw",
)
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
# What apt and dpkg lock, front to back; cloud-init and unattended-upgrades hold them after boot.
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")
LOCK_TIMEOUT = 300  # seconds to wait for them, unless the request says otherwise
LOCK_REPORT_EVERY = 10.0  # seconds between "waiting for the dpkg lock" events
LOCK_POLL = 0.5


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise StepError(
            f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return proc


class StepError(Exception):
    pass


# ---- facts ---------------------------------------------------------------


def facts(req):
    found = os_release()
    refused = unsupported(found, req.get("supported"))
    if refused:  # before dpkg or anything else this host may not have
        return {"os": found, "unsupported": refused}
    owned = manifest(req["manifest"]) if req.get("manifest") else None
    listed = manifest_paths(owned) if owned else []
    paths = {p: stat(p) for p in dict.fromkeys(req["paths"] + listed)}  # every file hashed once, here
    drifted = [
        p
        for p, want in req.get("content_unless", {}).items()
        if (paths.get(p) or {}).get("sha256") not in (want, None)
    ]
    return {
        "python": platform.python_version(),
        "arch": platform.machine(),
        "glibc": platform.libc_ver()[1],
        "os": found,
        "memory_mb": mem_total_mb(),
        "packages": packages(req["packages"]),
        "user": user(req["user"]),
        "paths": paths,
        "content": {p: read(p) for p in drifted},
        "units": {u: unit(u) for u in dict.fromkeys(req["units"] + (owned or {}).get("units", []))},
        "markers": {p: read(p) for p in req["markers"]},
        "firewall": firewall_loaded() if req.get("firewall") or (owned or {}).get("firewall") else None,
        "manifest": owned,
        "clients": established(req.get("clients", [])),
        "gate_apps": {mode: gate_metrics(port) for mode, port in req.get("gates", {}).items()},
        "pending": pending_records(req["pending"]) if req.get("pending") else {},
    }


def established(ports):
    """{port: how many established TCP connections have it as their local port} (from /proc)."""
    counts = {str(p): 0 for p in ports}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(path).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            port = str(int(local.rsplit(":", 1)[1], 16))
            if state == "01" and port in counts:  # ESTABLISHED
                counts[port] += 1
    return counts


def pending_records(directory):
    """Restarts that wait, per gateway unit: root's own private files only."""
    found = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        record = manifest_like(os.path.join(directory, name))
        if isinstance(record, dict) and isinstance(record.get("units"), list):
            found[name] = record
    return found


def manifest(path):
    """What ibgw created here, if root's own regular file, private (else nothing is trusted as ibgw's)."""
    found = manifest_like(path)
    keys = {"paths": list, "units": list, "firewall": bool, "installs": dict}
    ok = isinstance(found, dict) and all(isinstance(found.get(k), t) for k, t in keys.items())
    return found if ok else None


def manifest_like(path):
    """The JSON in path if it is root's own private regular file (never through a symlink), else None."""
    try:
        fd = open_regular(path)
    except (FileNotFoundError, StepError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_uid != 0 or st.st_mode & 0o077:
            return None
        try:
            return json.loads(fh.read())
        except ValueError:
            return None


def manifest_paths(owned):
    return owned["paths"] + [p for entries in owned["installs"].values() for entry in entries for p in entry]


def os_release():
    """ID, VERSION_ID and PRETTY_NAME from os-release(5); None if the host has none."""
    for path in OS_RELEASE:
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        pairs = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        values = {k: v.strip().strip("\"'") for k, v in pairs.items()}
        return {
            "id": values.get("ID", ""),
            "version_id": values.get("VERSION_ID", ""),
            "pretty_name": values.get("PRETTY_NAME") or values.get("NAME", ""),
        }
    return None


def unsupported(found, table):
    """The host's OS name if the operator's table of releases does not list it, or it lacks dpkg."""
    if table is None:
        return None
    name = (found or {}).get("pretty_name") or "unknown (no /etc/os-release)"
    if not found or found["version_id"] not in table.get(found["id"], ()):
        return name
    if shutil.which("dpkg-query") is None:
        return name + " without dpkg"
    return None


def mem_total_mb():
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def firewall_loaded():
    """Is our nftables table in the kernel? (A unit can be active(exited) with the table flushed.)"""
    try:
        return sh(["nft", "list", "table", "inet", "ibgw"], check=False).returncode == 0
    except OSError:  # nftables not installed yet
        return False


def packages(names):
    if not names:
        return {}
    out = sh(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"] + names, check=False).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return {n: n in installed for n in names}


def user(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem or g.gr_gid == entry.pw_gid)
    return {"home": entry.pw_dir, "shell": entry.pw_shell, "uid": entry.pw_uid, "groups": groups}


def stat(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = (
        "dir"
        if os.path.isdir(path) and not os.path.islink(path)
        else "link"
        if os.path.islink(path)
        else "file"
    )
    return {
        "kind": kind,
        "mode": st.st_mode & 0o7777,
        "owner": name_of(pwd.getpwuid, st.st_uid),
        "group": name_of(grp.getgrgid, st.st_gid),
        "sha256": sha256_of(path) if kind == "file" else None,
    }


def name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def open_regular(path, flags=os.O_RDONLY):
    """An fd on `path` if it is a regular file (or, with O_DIRECTORY, a directory), never through a
    symlink and never blocking on a FIFO: several managed paths sit in directories the ibkr user owns."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not (statmod.S_ISREG(mode) or (flags & os.O_DIRECTORY and statmod.S_ISDIR(mode))):
        os.close(fd)
        raise StepError(f"{path}: not a regular file (refusing to follow or touch it)")
    return fd


def sha256_of(path):
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, StepError):
        return None
    except OSError as exc:  # ELOOP: a symlink
        if exc.errno == errno.ELOOP:
            return None
        raise


def read(path):
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, StepError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def unit(name):
    enabled = sh(["systemctl", "is-enabled", name], check=False).stdout.strip()
    active = sh(["systemctl", "is-active", name], check=False).stdout.strip()
    return {"enabled": enabled, "active": active}


# ---- health and monitoring ---------------------------------------------

UNIT_PROPS = ("ActiveState", "SubState", "NRestarts", "ActiveEnterTimestampMonotonic", "Result")
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)")


def health(req):
    return {
        "units": {u: unit_detail(u) for u in req["units"]},
        "uptime": float(open("/proc/uptime").read().split()[0]),
        "listeners": listeners(),
        "firewall": sh(["nft", "list", "table", "inet", "ibgw"], check=False).returncode == 0
        if req["firewall"]
        else None,
        "resources": resources(req["disk_paths"]),
        "log_lines": recent_lines(req["log_files"], req["log_minutes"]),
        "journal_errors": journal_errors(req["units"], req["log_minutes"]),
        "tls_cert": read_public(req.get("tls_cert")),
        "gates": {mode: gate_flags(port) for mode, port in req.get("gates", {}).items()},
        "pending": pending_records(req["pending"]) if req.get("pending") else {},
    }


def read_public(path):
    """A public file's text (the front's certificate, for its expiry), or None if it is not there."""
    try:
        with open(path) as fh:
            return fh.read(65536)
    except (TypeError, OSError):
        return None


def unit_detail(name):
    out = sh(["systemctl", "show", name, "-p", ",".join(UNIT_PROPS)], check=False).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "active": props.get("ActiveState", "unknown"),
        "sub": props.get("SubState", ""),
        "restarts": int(props.get("NRestarts") or 0),
        "result": props.get("Result", ""),
        "since": int(props.get("ActiveEnterTimestampMonotonic") or 0) / 1e6,
    }


def listeners():
    """Listening TCP sockets from /proc: {port: [addresses]}."""
    found = {}
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = open(path).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A":  # LISTEN
                address, port = local.split(":")
                found.setdefault(int(port, 16), []).append(proc_address(address, width))
    return found


def proc_address(hexaddr, width):
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # per-word little endian
    family = socket.AF_INET if width == 8 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def resources(paths):
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
    kib = {k: int(meminfo[k].split()[0]) for k in ("MemTotal", "MemAvailable")}
    disks = {}
    for path in paths:
        usage = shutil.disk_usage(path)
        disks[path] = round(100 * usage.used / usage.total, 1)
    return {
        "mem_total_mb": kib["MemTotal"] // 1024,
        "mem_available_mb": kib["MemAvailable"] // 1024,
        "disk_used_pct": disks,
        "load1": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def recent_lines(patterns, minutes):
    """Lines of the last `minutes` from log files whose lines start with a timestamp."""
    cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 60 * minutes))
    out = []
    for path in sorted({p for pattern in patterns for p in glob.glob(pattern)}):
        if os.path.getmtime(path) < time.time() - 60 * minutes:
            continue
        with open(path, errors="replace") as fh:
            for line in fh.readlines()[-5000:]:
                stamp = TIMESTAMP.match(line)
                if stamp and stamp.group(1).replace("T", " ") >= cutoff:
                    out.append({"file": path, "line": line.rstrip()[:400]})
    return out


def journal_errors(units, minutes):
    argv = ["journalctl", "--no-pager", "-o", "cat", "-p", "err", f"--since=-{minutes}min"]
    out = sh(argv + [f"--unit={u}" for u in units], check=False).stdout
    return [line[:400] for line in out.splitlines()[-50:]]


def monitor(req):
    """Every interval, for `count` samples: the front's per-source stick tables."""
    for _ in range(req["count"]):
        gates = {mode: gate_metrics(port) for mode, port in req.get("gates", {}).items()}
        emit(sample={t: haproxy_table(req["socket"], t) for t in req["tables"]}, gates=gates, at=time.time())
        time.sleep(req["interval"])
    return {"samples": req["count"]}


GATE_METRIC = re.compile(r'^ibgw_gate_app_(\w+?)(?:_total|_seconds)?\{.*app="([^"]+)".*\} (\S+)$')


def gate_metrics(port):
    """Per app, what `ibgw gate` exports: {app: {connected, last_seen, messages_in, ...}}; None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    apps = {}
    for line in text.splitlines():
        match = GATE_METRIC.match(line)
        if match:
            apps.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return apps


GATE_FLAG = re.compile(r"^ibgw_gate_(halted|interlock_tripped)\{[^}]*\} (\S+)$")


def gate_flags(port):
    """The gate's switches from its metrics: {halted, interlock_tripped} as booleans; None if it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {m.group(1): float(m.group(2)) > 0 for m in map(GATE_FLAG.match, text.splitlines()) if m}


def haproxy_table(path, table):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(f"show table {table}\n".encode())
        data = b""
        chunk = sock.recv(65536)
        while chunk:  # no walrus: this file must compile on an old python3, to refuse that host clearly
            data += chunk
            chunk = sock.recv(65536)
    rows = []
    for line in data.decode().splitlines():
        if line.startswith("0x"):
            pairs = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
            rows.append({k: (v if k == "key" else int(v)) for k, v in pairs.items()})
    return rows


# ---- the gateway's screen (ibgw screen, ibgw vnc) -----------------------

CLONE_NEWNS = 0x00020000
PR_SET_PDEATHSIG = 1
X_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}


def main_pid(unit_name):
    out = sh(["systemctl", "show", "-p", "MainPID", "--value", unit_name], check=False).stdout.strip()
    if not out or out == "0":
        raise StepError(f"{unit_name} is not running")
    return int(out)


def in_display_namespace(pid, user_name, mkdir=None):
    """A preexec_fn: join the mount namespace of Xvfb's process `pid` (its private /tmp holds the
    display's socket), drop to `user_name`, optionally make a 0700 directory there, and die with us."""
    entry = pwd.getpwnam(user_name)
    ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)

    def enter():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(ns, CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "setns into the display's mount namespace")
        os.chdir("/")
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # after setuid, which clears it
        if mkdir:
            os.mkdir(mkdir, 0o700)

    return ns, enter


def screen(req):
    """The display as XWD (zlib-compressed, base64), captured by `xwd` as the gateway's user."""
    try:
        ns, enter = in_display_namespace(main_pid(req["unit"]), req["user"])
        try:
            proc = subprocess.run(
                ["xwd", "-root", "-silent", "-display", f":{req['display']}"],
                capture_output=True,
                env=X_ENV,
                preexec_fn=enter,
                timeout=req.get("timeout", 30),
            )
        finally:
            os.close(ns)
    except (StepError, OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    if proc.returncode != 0:
        return {
            "error": f"xwd exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}"
        }
    return {"xwd": base64.b64encode(zlib.compress(proc.stdout, 6)).decode()}


def vnc(req):
    """x11vnc on the display for as long as this session lasts: on a unix socket in a 0700 directory
    of the display's private /tmp (no TCP port). Emits the socket's path as root sees it, then a
    heartbeat each second; when the SSH channel closes a heartbeat fails and x11vnc is stopped."""
    try:
        pid = main_pid(req["unit"])
        inside = f"/tmp/ibgw-vnc-{secrets.token_hex(8)}"
        ns, enter = in_display_namespace(pid, req["user"], mkdir=inside)
    except (StepError, OSError) as exc:
        return {"error": str(exc)}
    argv = ["x11vnc", "-display", f":{req['display']}", "-unixsock", f"{inside}/vnc.sock"]
    argv += ["-rfbport", "0", "-rfbportv6", "0", "-forever", "-shared", "-nopw", "-noshm", "-quiet"]
    outside = f"/proc/{pid}/root{inside}"
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=X_ENV,
            preexec_fn=enter,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"cannot start x11vnc: {exc}"}
    finally:
        os.close(ns)
    tail = collections.deque(maxlen=20)  # its last words, for an error; it talks on every connection
    threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True).start()
    try:
        return serve_vnc(proc, f"{outside}/vnc.sock", tail)
    finally:
        stop(proc)
        shutil.rmtree(outside, ignore_errors=True)


def serve_vnc(proc, sock, tail):
    deadline = time.monotonic() + 15
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            time.sleep(0.2)  # let its last words arrive
            lines = b"".join(list(tail)[-5:]).decode(errors="replace").strip()
            return {"error": f"x11vnc did not start (exit {proc.poll()}): {lines}"}
        time.sleep(0.1)
    try:
        emit(vnc={"socket": sock, "pid": proc.pid})
        while proc.poll() is None:
            time.sleep(1)
            emit(alive=time.time())
    except OSError:  # the channel is gone: nobody reads the result
        return {"exit": None}
    return {"exit": proc.returncode}


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def relay(req):
    """Join this command's stdin and stdout to a unix socket (one VNC viewer), until either side ends."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(req["socket"])
        join_stdio(sock)


def relay_tcp(req):
    """Join stdin and stdout to 127.0.0.1:port, as root (health's probe of a gateway on the host:
    the firewall lets only root and ibkr open the API ports on lo). Only loopback, only the port the
    request names. One line first: {"relay": "connected"}, or the result with the error."""
    port = req.get("port")
    if type(port) is not int or not 0 < port < 65536:
        return {"error": f"relay_tcp: port must be a TCP port number, not {port!r}"}
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=req.get("timeout", 10))
    except OSError as exc:
        return {"error": f"connection to 127.0.0.1:{port} on the host failed: {exc.strerror or exc}"}
    with sock:
        sock.settimeout(None)
        emit(relay="connected")
        join_stdio(sock)


def join_stdio(sock):
    """Copy stdin to sock and sock to stdout until either side ends; then exit with no result line
    (the stream was the answer)."""

    def upstream():
        try:
            for data in iter(lambda: sys.stdin.buffer.read1(65536), b""):  # no walrus: Python 3.6 hosts
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True).start()
    try:
        for data in iter(lambda: sock.recv(65536), b""):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    except OSError:  # either side went away
        pass
    os._exit(0)


# ---- steps ---------------------------------------------------------------


def step_apt(step):
    """apt-get update and install, after waiting (bounded) for whoever holds the dpkg locks."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + step.get("lock_timeout", LOCK_TIMEOUT)
    for _ in range(20):  # update takes the lists lock, which apt's own timeout does not cover: retry
        wait_for_locks(step["task"], deadline)
        proc = sh(["apt-get", "-o", lock_option(deadline), "update", "-qq"], check=False, env=env)
        if proc.returncode == 0:
            break
        if "Could not get lock" not in proc.stderr or time.monotonic() >= deadline:
            raise StepError(f"apt-get update exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    else:
        raise StepError("apt-get update: the apt lists lock was taken again each time it was free")
    wait_for_locks(step["task"], deadline)
    sh(
        ["apt-get", "-o", lock_option(deadline), "install", "-y", "-qq", "--no-install-recommends"]
        + step["packages"],
        env=env,
    )


def lock_option(deadline):
    """apt's own wait for the dpkg frontend lock (apt 1.9.11 and later), for what is left of ours."""
    return f"DPkg::Lock::Timeout={max(1, int(deadline - time.monotonic()))}"


def wait_for_locks(task, deadline):
    """Until no process holds a dpkg or apt lock, or the deadline; an event every LOCK_REPORT_EVERY s."""
    reported = None
    while True:
        held = [(path, pid) for path, pid in ((p, lock_holder(p)) for p in DPKG_LOCKS) if pid]
        if not held:
            return
        path, pid = held[0]
        who = f"PID {pid} ({process_name(pid)})"
        now = time.monotonic()
        if now >= deadline:
            raise StepError(
                f"the dpkg lock {path} is still held by {who}: gave up waiting "
                "(raise --lock-timeout, or see what that process is doing)"
            )
        if reported is None or now - reported >= LOCK_REPORT_EVERY:
            emit(event="wait", task=task, message=f"waiting for the dpkg lock held by {who}")
            reported = now
        time.sleep(min(LOCK_POLL, deadline - now))


def lock_holder(path):
    """The PID that holds a POSIX lock on `path` (as apt and dpkg take them), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: nobody holds it
    try:  # struct flock: l_type, l_whence, l_start, l_len, l_pid (64-bit Linux layout)
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    finally:
        os.close(fd)
    if kind == fcntl.F_UNLCK:
        return None
    return pid if pid > 0 else "unknown"  # an open-file-description lock has no owner PID


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def step_user(step):
    name = step["name"]
    if user(name) is None:
        sh(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                step["home"],
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]
        )
    for group in user(name)["groups"]:
        if group in PRIVILEGED_GROUPS:
            sh(["gpasswd", "-d", name, group])


def step_dir(step):
    refuse_planted_links(step["path"])
    os.makedirs(step["path"], exist_ok=True)
    set_attrs(step["path"], step)


def step_file(step):
    write_atomic(step["path"], base64.b64decode(step["content"]), step)


def write_atomic(path, content, step):
    """Write to a private temp file, set its attributes, validate it, then rename it over path."""
    refuse_planted_links(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ibgw-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        set_attrs(tmp, step)
        if step.get("validate"):
            sh([arg.replace("{}", tmp) for arg in step["validate"]])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


INI_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def ini_values(text):
    """{section: {key: value}} of an INI file as IB Gateway writes jts.ini (a repeated key: the last)."""
    values, section = {}, None
    for line in text.splitlines():
        header = INI_SECTION.match(line)
        if header:
            section = header.group(1)
            values.setdefault(section, {})
        elif section is not None and "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            values[section][key.strip()] = value.strip()
    return values


def ini_merge(text, want):
    """text with each want[section][key] set: edited in place, or added at the end of its section
    (which is added if missing). Every other line, comment and order is kept; a repeated key goes."""
    out, section, done = [], None, set()

    def close(sec):
        blanks = []
        while out and not out[-1].strip():
            blanks.append(out.pop())
        out.extend(f"{k}={v}" for k, v in want.get(sec, {}).items() if (sec, k) not in done)
        done.update((sec, k) for k in want.get(sec, {}))
        out.extend(blanks)

    for line in text.splitlines():
        header = INI_SECTION.match(line)
        if header:
            close(section)
            section = header.group(1)
            out.append(line)
            continue
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if key in want.get(section, {}):
            if (section, key) not in done:
                out.append(f"{key}={want[section][key]}")
                done.add((section, key))
            continue
        out.append(line)
    close(section)
    for sec, keys in want.items():
        missing = [f"{k}={v}" for k, v in keys.items() if (sec, k) not in done]
        if missing:
            out += ([""] if out and out[-1].strip() else []) + [f"[{sec}]"] + missing
    return "\n".join(out) + "\n"


def step_ini(step):
    """Converge only ibgw's keys of an INI file the program rewrites (jts.ini); a missing file gets the seed.
    The owning unit is stopped first, so it cannot write its old values back on exit; the systemd step
    starts it again."""
    for unit_name in step.get("stop", ()):
        sh(["systemctl", "stop", unit_name], check=False)
    current = read(step["path"])
    if current is None:
        content = base64.b64decode(step["seed"])
    else:
        content = ini_merge(current, step["values"]).encode()
    write_atomic(step["path"], content, step)


def step_attrs(step):
    refuse_planted_links(step["path"])
    set_attrs(step["path"], step)


def refuse_planted_links(path):
    """A symlink in a parent of `path` that root does not own was planted (the ibkr user owns its home):
    never create, write or chown through it."""
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        if os.path.islink(parent) and os.lstat(parent).st_uid != 0:
            raise StepError(f"{path}: {parent} is a symlink root does not own (refusing to follow it)")
        parent = os.path.dirname(parent)


def set_attrs(path, step):
    """chown, then chmod (chown clears set-id bits), on the path itself: never through a symlink."""
    fd = open_regular(path, os.O_RDONLY | (os.O_DIRECTORY if step["kind"] == "dir" else 0))
    try:
        os.fchown(fd, pwd.getpwnam(step["owner"]).pw_uid, grp.getgrnam(step["group"]).gr_gid)
        os.fchmod(fd, step["mode"])
    finally:
        os.close(fd)


def step_venv(step):
    """Install ibgw from uploaded wheels into a fresh venv; the stamp is written last."""
    venv = step["path"]
    shutil.rmtree(venv, ignore_errors=True)
    sh([sys.executable, "-m", "venv", venv])
    # --isolated: only what was shipped, whatever pip configuration the host has
    sh(
        [
            f"{venv}/bin/pip",
            "install",
            "--isolated",
            "-q",
            "--no-index",
            "--find-links",
            step["wheels"],
            step["requirement"],
        ]
    )
    with open(f"{venv}/{step['marker']}", "w") as fh:
        fh.write(step["stamp"])


def step_uploads(step):
    """Files the login user staged in its private directory, moved into place as root: each one's
    sha256 is checked on the bytes copied (not on a file that could change after), then owner, mode
    and an atomic rename. The staging directory is removed, whatever happens."""
    stage = step["stage"]
    if not os.path.basename(stage).startswith(".ibgw-upload-"):
        raise StepError(f"{stage}: not an ibgw staging directory")
    try:
        for upload in step["files"]:
            place(upload)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def place(upload):
    dest = upload["to"]
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    src = os.fdopen(open_regular(upload["from"]), "rb")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".ibgw-")
    try:
        digest = hashlib.sha256()
        with src, os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != upload["sha256"]:
            raise StepError(f"{dest}: the uploaded copy's sha256 differs from the operator's file")
        set_attrs(tmp, dict(upload, kind="file"))
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def step_install(step):
    """Unpack IBC's zip, or run IB Gateway's installer, into dest; the stamp is written last."""
    upload, dest = step["upload"], step["dest"]
    inside(dest, step["base"])
    if sha256_of(upload) != step["sha256"]:
        raise StepError(f"{upload}: sha256 differs from the pinned one after upload")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    if step["type"] == "zip":
        shutil.unpack_archive(upload, dest, "zip")
        for root, _, names in os.walk(dest):
            for name in names:
                if name.endswith(".sh"):
                    os.chmod(os.path.join(root, name), 0o755)
    else:
        sh(["sh", upload, "-q", "-dir", dest])
    chown_tree(dest, pwd.getpwnam(step["owner"]))
    with open(os.path.join(dest, step["stamp"]), "w") as fh:
        fh.write(step["sha256"])


def chown_tree(top, owner):
    """Give a tree root made to its owner, deepest entries first and each relative to its directory's
    open fd: the owner cannot redirect a chown elsewhere, since every directory is still root's own
    until all it holds is done."""
    for _, dirs, names, fd in os.fwalk(top, topdown=False, follow_symlinks=False):
        for name in dirs + names:
            os.chown(name, owner.pw_uid, owner.pw_gid, dir_fd=fd, follow_symlinks=False)
    os.chown(top, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def step_pending(step):
    """Record a gateway's restart that waits (kept: the first `since`)."""
    record = dict(step["record"])
    old = manifest_like(step["path"]) or {}
    record["since"] = old.get("since") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_private_json(step["path"], record)


def write_private_json(path, data):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    content = json.dumps(data, indent=1, sort_keys=True).encode()
    write_atomic(path, content, {"owner": "root", "group": "root", "mode": 0o600, "kind": "file"})


def inside(path, base):
    """Refuse a path that is not plainly and really (symlinks resolved) strictly below base: it is deleted."""
    plain = os.path.isabs(path) and os.path.isabs(base) and os.path.normpath(path) == path
    real, real_base = os.path.realpath(path), os.path.realpath(base)
    if not plain or os.path.commonpath([real, real_base]) != real_base or real == real_base:
        raise StepError(f"refusing to install into {path!r}: not strictly inside {base!r}")


def step_systemd(step):
    if step["daemon_reload"]:
        sh(["systemctl", "daemon-reload"])
    if step["enable"]:
        sh(["systemctl", "enable"] + step["enable"])
    for verb in ("start", "restart", "reload"):
        for name in step[verb]:  # one at a time, in order: the gateways before the front
            sh(["systemctl", verb, name])
    stays_up(step["start"] + step["restart"])
    for path in step.get("clear", ()):  # the restarts that waited are done
        if os.path.lexists(path):
            os.unlink(path)


def stays_up(units, seconds=3.0):
    """A started simple service may die at once: see that each is still active a moment later."""
    time.sleep(seconds if units else 0)
    down = [u for u in units if unit(u)["active"] != "active"]
    if down:
        logs = sh(
            ["journalctl", "--no-pager", "-n", "5", "-o", "cat"] + [f"--unit={u}" for u in down], check=False
        )
        raise StepError(f"not running after start: {', '.join(down)}; last log lines: {logs.stdout.strip()}")


def note_pending(path, then):
    """Record, root-only, the unit actions a step's change calls for, until the systemd step has run
    them: a run that fails in between leaves files already converged, and the next must still act."""
    pending = {"daemon_reload": False, "restart": [], "reload": []}
    try:
        pending.update(json.loads(read(path) or "{}"))
    except ValueError:
        pass
    pending["daemon_reload"] = bool(pending["daemon_reload"] or then.get("daemon_reload"))
    for key in ("restart", "reload"):
        pending[key] = sorted(set(pending[key]) | set(then.get(key, ())))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ibgw-")
    with os.fdopen(fd, "w") as fh:
        json.dump(pending, fh)
    os.replace(tmp, path)


# ---- absence: what ibgw created and no longer wants -------------------------


def step_stop(step):
    """Stop and disable a unit the inventory dropped (its file, if ibgw's, is removed later)."""
    name = step["unit"]
    sh(["systemctl", "disable", "--quiet", name], check=False)  # a unit whose file is gone cannot be
    sh(["systemctl", "stop", name], check=False)
    state = unit(name)
    if state["active"] in ("active", "activating", "deactivating", "reloading"):
        raise StepError(f"{name} is still {state['active']} after systemctl stop")


def step_nft_delete(step):
    if sh(["nft", "list", "table"] + step["table"].split(), check=False).returncode == 0:
        sh(["nft", "delete", "table"] + step["table"].split())


def removable(path):
    """The same rule as layout.removable: a normalized path at ibgw's own places."""
    if not path.startswith("/") or "/../" in path + "/" or "/./" in path + "/" or "//" in path:
        return False
    roots = REMOVABLE[:4]
    return path in roots or path.startswith(tuple(r + "/" for r in roots) + REMOVABLE[4:])


def open_parent(path):
    """An fd on path's directory, reached one component at a time, never through a symlink."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path.strip("/").split("/")[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def step_remove(step):
    """Remove a file, a tree or an empty directory ibgw created. A symlink is removed, never followed;
    a directory that is not a tree is removed only once empty."""
    path = step["path"]
    if not removable(path) or path in ("/",):
        raise StepError(f"{path}: not one of ibgw's places, refusing to remove it")
    try:
        parent = open_parent(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StepError(f"{path}: a symlink or a file on the way to it, refusing to follow it") from None
        raise
    name = os.path.basename(path)
    try:
        st = os.lstat(name, dir_fd=parent)
        if not statmod.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
        elif step["tree"] and sys.version_info >= (3, 11):
            shutil.rmtree(name, dir_fd=parent)
        elif step["tree"]:  # rmtree itself never follows a symlink below its root
            shutil.rmtree(path)
        else:
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def step_userdel(step):
    if user(step["name"]) is not None:
        sh(["userdel", step["name"]])


def step_manifest(step):
    """Write the manifest, root's 0600 in a root-only directory; None deletes it."""
    path = step["path"]
    if step["manifest"] is None:  # purge: the admin directory goes with its records
        admin = os.path.dirname(path)
        if os.path.lexists(path):
            os.unlink(path)
        if os.path.isdir(os.path.join(admin, "pending")) and not os.path.islink(
            os.path.join(admin, "pending")
        ):
            shutil.rmtree(os.path.join(admin, "pending"))
        if os.path.isdir(admin) and not os.path.islink(admin) and not os.listdir(admin):
            os.rmdir(admin)
        return
    write_private_json(path, step["manifest"])


STEPS = {
    "pending": step_pending,
    "stop": step_stop,
    "nft_delete": step_nft_delete,
    "remove": step_remove,
    "userdel": step_userdel,
    "manifest": step_manifest,
    "apt": step_apt,
    "user": step_user,
    "dir": step_dir,
    "file": step_file,
    "ini": step_ini,
    "attrs": step_attrs,
    "venv": step_venv,
    "uploads": step_uploads,
    "install": step_install,
    "systemd": step_systemd,
}


def apply(req):
    done = 0
    for step in req["steps"]:
        emit(event="start", task=step["task"])
        if step["kind"] == "apt" and req.get("lock_timeout") is not None:
            step = dict(step, lock_timeout=req["lock_timeout"])
        try:
            STEPS[step["kind"]](step)
            if step.get("then") and req.get("pending"):
                note_pending(req["pending"], step["then"])
            if step["kind"] == "systemd" and req.get("pending") and os.path.lexists(req["pending"]):
                os.unlink(req["pending"])
        except Exception as exc:  # reported as this step's failure, never a traceback
            error = str(exc) if isinstance(exc, (StepError, OSError)) else f"{type(exc).__name__}: {exc}"
            emit(event="failed", task=step["task"], error=error)
            return {"applied": done, "failed": step["task"], "error": error}
        emit(event="done", task=step["task"])
        done += 1
    return {"applied": done, "failed": None}


def main():
    req = json.loads(sys.stdin.buffer.readline())  # one line: a relay's stream follows it
    ops = {"facts": facts, "apply": apply, "health": health, "monitor": monitor}
    ops.update(screen=screen, vnc=vnc, relay=relay, relay_tcp=relay_tcp)  # not |=: Python 3.6 hosts
    emit(result=ops[req["op"]](req))


if __name__ == "__main__":
    main()
