"""The remote half of ibgw: read facts, apply steps. Standard library only.

Sent over SSH on stdin and run by the host's python3 (never written to disk,
never in argv), it answers one JSON request with JSON lines on stdout: events
while applying, then a final {"result": ...}. Every step is idempotent, and a
file is replaced only by an atomic rename after its validator accepts it.
"""

import base64
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
import shutil
import socket
import stat as statmod
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

# The same as layout.PRIVILEGED_GROUPS (a test checks): this file runs alone on the host.
PRIVILEGED_GROUPS = ("sudo", "adm", "wheel", "root")
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
    paths = {p: stat(p) for p in req["paths"]}  # every file hashed once, here
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
        "units": {u: unit(u) for u in req["units"]},
        "markers": {p: read(p) for p in req["markers"]},
        "firewall": firewall_loaded() if req.get("firewall") else None,
    }


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
    owner = pwd.getpwnam(step["owner"])
    for root, dirs, names in os.walk(dest):
        for name in [root] + [os.path.join(root, n) for n in dirs + names]:
            os.lchown(name, owner.pw_uid, owner.pw_gid)
    with open(os.path.join(dest, step["stamp"]), "w") as fh:
        fh.write(step["sha256"])


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


STEPS = {
    "apt": step_apt,
    "user": step_user,
    "dir": step_dir,
    "file": step_file,
    "ini": step_ini,
    "attrs": step_attrs,
    "venv": step_venv,
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
    req = json.loads(sys.stdin.buffer.read())
    emit(result={"facts": facts, "apply": apply, "health": health, "monitor": monitor}[req["op"]](req))


if __name__ == "__main__":
    main()
